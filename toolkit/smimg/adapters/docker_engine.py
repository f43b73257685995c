"""The Docker implementation of the engine port: the docker CLI for BuildKit builds, the docker SDK for the rest.

Builds go through the CLI because the SDK's ``images.build`` only drives the legacy builder (no secrets, no cache
mounts). Which CLI can do BuildKit differs between machines: ``docker buildx`` where the plugin is installed, else
a pre-23 client that has BuildKit built in (``DOCKER_BUILDKIT=1``), else only the legacy builder. Every SDK
failure becomes an ``SmimgError``: a lost engine is ``DockerUnavailable``, never a requests traceback.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import os
import tarfile
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from smimg.adapters.runner import Runner
from smimg.engine import Builder, BuilderKind, ContainerSpec, ContainerState, Image
from smimg.errors import CommandError, DockerUnavailable, LocalError
from smimg.refs import ImageRef

if TYPE_CHECKING:
    import docker as docker_sdk

logger = logging.getLogger(__name__)

INSTALL_HINT = (
    "start a Docker engine (Docker Desktop, or `sudo dockerd`) and check that `docker info` answers; "
    "in this repository `make setup` does it on Debian as root"
)


def docker_clients() -> list[str]:
    """Every executable named docker on PATH, in PATH order, without duplicates."""
    found: list[str] = []
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        candidate = Path(directory or ".") / "docker"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            real = str(candidate.resolve())
            if real not in {str(Path(f).resolve()) for f in found}:
                found.append(str(candidate))
    return found


def find_builder(runner: Runner) -> Builder:
    """Pick the best build client on this machine.

    Raises:
        DockerUnavailable: no docker client is on PATH.
    """
    clients = docker_clients()
    if not clients:
        raise DockerUnavailable("no `docker` command found on PATH", INSTALL_HINT)
    for client in clients:
        if runner.capture([client, "buildx", "version"]).ok:
            return Builder(BuilderKind.BUILDX, client)
    for client in clients:
        head = runner.capture([client, "version", "--format", "{{.Client.Version}}"]).output.strip().split(".")[0]
        # Clients before 23.0 carry BuildKit inside; later ones delegate to the buildx plugin.
        if head.isdigit() and int(head) < 23:
            return Builder(BuilderKind.BUILTIN_BUILDKIT, client)
    logger.warning(
        "no BuildKit-capable docker client found (install the buildx plugin); "
        "falling back to the legacy builder: no secrets, no pip cache mounts"
    )
    return Builder(BuilderKind.LEGACY, clients[0])


class DockerEngine:
    """The engine named by the environment (DOCKER_HOST, default socket)."""

    def __init__(self, runner: Runner | None = None) -> None:
        self.runner = runner or Runner()

    @functools.cached_property
    def sdk(self) -> docker_sdk.DockerClient:
        import docker as docker_sdk

        try:
            client = docker_sdk.from_env(timeout=600)
            client.ping()
        except Exception as exc:
            raise DockerUnavailable(f"the Docker engine does not answer ({exc})", INSTALL_HINT) from exc
        return client

    @functools.cache  # noqa: B019 - one engine per process; detection runs a few docker commands
    def builder(self) -> Builder:
        return find_builder(self.runner)

    def build(self, argv: list[str], env: Mapping[str, str], on_line: Callable[[str], None] | None) -> None:
        self.runner.stream(argv, env=env, on_line=on_line)

    def image(self, ref: str) -> Image | None:
        import docker.errors

        try:
            return Image.from_inspect(self._sdk_call(lambda: self.sdk.images.get(ref).attrs))
        except (docker.errors.NotFound, docker.errors.NullResource):
            return None

    def pull(self, ref: str, auth: Mapping[str, str] | None, platform: str) -> None:
        import docker.errors

        parsed = ImageRef.parse(ref)
        tag = parsed.digest or parsed.tag_or_latest
        try:
            self._sdk_call(
                lambda: self.sdk.images.pull(
                    parsed.repository, tag=tag, auth_config=dict(auth) if auth else None, platform=platform
                )
            )
        except docker.errors.APIError as exc:
            raise CommandError(["docker", "pull", ref], 1, str(exc.explanation or exc)) from None

    def tag(self, ref: str, target: str) -> None:
        parsed = ImageRef.parse(target)
        self._sdk_call(lambda: self.sdk.images.get(ref).tag(parsed.repository, parsed.tag_or_latest))

    def push(self, repository: str, tag: str, auth: Mapping[str, str] | None) -> Iterator[Mapping[str, Any]]:
        # Without auth the SDK falls back to what `docker login` stored for the registry.
        stream = self._sdk_call(
            lambda: self.sdk.api.push(
                repository, tag=tag, stream=True, decode=True, auth_config=dict(auth) if auth else None
            )
        )
        yield from stream

    def read_file(self, ref: str, path: str) -> str | None:
        import docker.errors

        container = self._sdk_call(lambda: self.sdk.containers.create(ref, entrypoint=["/bin/true"]))
        try:
            chunks, _ = container.get_archive(path)
            with tarfile.open(fileobj=io.BytesIO(b"".join(chunks))) as archive:
                member = archive.next()
                extracted = archive.extractfile(member) if member else None
                return extracted.read().decode() if extracted else None
        except docker.errors.NotFound:
            return None
        finally:
            container.remove(force=True)

    def run(self, ref: str, entrypoint: list[str]) -> str:
        import docker.errors

        try:
            raw = self._sdk_call(lambda: self.sdk.containers.run(ref, entrypoint=entrypoint, remove=True))
        except docker.errors.ContainerError as exc:
            stderr = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else str(exc.stderr)
            raise CommandError(["docker", "run", ref], int(exc.exit_status), stderr) from None
        return bytes(raw).decode(errors="replace")

    def network_labels(self, name: str) -> Mapping[str, str] | None:
        # The engine's name filter matches substrings: only the network of exactly this name counts.
        found = self._engine_call(f"list networks named {name}", lambda: self.sdk.api.networks(names=[name]))
        return next((dict(n.get("Labels") or {}) for n in found if n["Name"] == name), None)

    def create_network(self, name: str, *, internal: bool, labels: Mapping[str, str]) -> None:
        self._engine_call(
            f"create network {name}", lambda: self.sdk.api.create_network(name, internal=internal, labels=dict(labels))
        )

    def remove_network(self, name: str) -> None:
        found = self._engine_call(f"list networks named {name}", lambda: self.sdk.api.networks(names=[name]))
        # By ID: a name the engine does not know it would take for an ID prefix, someone else's network.
        for network_id in (str(n["Id"]) for n in found if n["Name"] == name):
            with contextlib.suppress(_Gone):
                self._engine_call(f"remove network {name}", functools.partial(self.sdk.api.remove_network, network_id))

    def create_container(self, spec: ContainerSpec) -> None:
        import docker.types

        # The Mount API, not "Binds" strings: there a ':' in a path is a separator, and a missing folder would be
        # created empty rather than refused.
        mounts = [docker.types.Mount(m.target, m.source, type="bind", read_only=m.read_only) for m in spec.mounts]
        gpus = [docker.types.DeviceRequest(device_ids=list(spec.gpu_ids), capabilities=[["gpu"]])]
        endpoint = docker.types.EndpointConfig(self.sdk.api.api_version, aliases=list(spec.aliases))
        self._engine_call(
            f"create container {spec.name}",
            lambda: self.sdk.containers.create(
                spec.image,
                command=list(spec.command),
                entrypoint=list(spec.entrypoint) if spec.entrypoint is not None else None,
                name=spec.name,
                hostname=spec.hostname,
                environment=dict(spec.environment),
                labels=dict(spec.labels),
                mounts=mounts,
                shm_size=spec.shm_size,
                device_requests=gpus if spec.gpu_ids else None,
                network=spec.network,
                networking_config={spec.network: endpoint},
                tty=spec.tty,
                stdin_open=spec.interactive,
            ),
        )

    def start(self, name: str) -> None:
        self._engine_call(f"start container {name}", lambda: self.sdk.api.start(name))

    def attach(self, name: str) -> int:
        clients = docker_clients()
        if not clients:
            raise DockerUnavailable("no `docker` command found on PATH: a shell needs it", INSTALL_HINT)
        return self.runner.interactive([clients[0], "start", "--attach", "--interactive", name])

    def labelled(self, label: str, value: str) -> list[str]:
        found = self._engine_call(
            f"list containers labelled {label}={value}",
            lambda: self.sdk.api.containers(all=True, filters={"label": f"{label}={value}"}),
        )
        return sorted(str(c["Names"][0]).lstrip("/") for c in found)

    def remove_container(self, name: str) -> None:
        try:  # with its anonymous volumes (an image's VOLUME), as compose down --volumes did
            self._engine_call(
                f"remove container {name}", lambda: self.sdk.api.remove_container(name, force=True, v=True)
            )
        except _Gone:
            return

    def _engine_call(self, doing: str, call: Callable[[], Any]) -> Any:
        """An SDK call whose refusal is the user's to act on: ``LocalError`` with the engine's words (``_Gone`` for
        its 404), never a docker exception."""
        import docker.errors

        try:
            return self._sdk_call(call)
        except docker.errors.NotFound as exc:
            raise _Gone(doing, str(exc.explanation or exc)) from None
        except docker.errors.APIError as exc:
            raise LocalError(
                f"the Docker engine could not {doing}: {exc.explanation or exc}",
                "the engine's reason names what to change; `docker info` shows the engine's state",
            ) from None

    def container_exists(self, name: str) -> bool:
        try:
            self._engine_call(f"inspect container {name}", lambda: self.sdk.api.inspect_container(name))
        except _Gone:
            return False
        return True

    def container_state(self, name: str) -> ContainerState:
        try:
            attrs = self._engine_call(f"inspect container {name}", lambda: self.sdk.api.inspect_container(name))
        except _Gone:
            raise LocalError(f"container {name} is gone", "something outside smimg removed it") from None
        state = attrs["State"]
        return ContainerState(str(state["Status"]), int(state.get("ExitCode", 0)), str(state.get("FinishedAt", "")))

    def logs(self, name: str) -> Iterator[bytes]:
        container = self._sdk_call(lambda: self.sdk.containers.get(name))
        yield from container.logs(stream=True, follow=True)

    def watch_ends(self, label: str, value: str, on_end: Callable[[str], None]) -> Callable[[], None]:
        # The engine's die events come as a container stops, as `docker wait` returns; a log stream can close up
        # to a second later.
        filters = {"type": "container", "event": "die", "label": f"{label}={value}"}
        stream = self._sdk_call(lambda: self.sdk.events(decode=True, filters=filters))

        def read() -> None:
            # Ends when the stream is closed, or the engine is lost (the supervisor's look at the states says so).
            with contextlib.suppress(Exception):
                for event in stream:
                    on_end(str(event.get("Actor", {}).get("Attributes", {}).get("name", "")))

        threading.Thread(target=read, daemon=True).start()

        def close() -> None:
            # Over ssh:// the SDK cannot close a stream, and a lost engine's socket refuses shutdown: neither may
            # replace how the job ended (the reader thread is a daemon).
            with contextlib.suppress(Exception):
                stream.close()

        return close

    def stop(self, name: str, timeout: float) -> None:
        try:
            self._engine_call(f"stop container {name}", lambda: self.sdk.api.stop(name, timeout=int(timeout)))
        except _Gone:
            return

    def kill(self, name: str, signal: str) -> None:
        import docker.errors

        try:
            self._sdk_call(lambda: self.sdk.api.kill(name, signal=signal))
        except docker.errors.NotFound:
            return
        except docker.errors.APIError as exc:
            if exc.status_code != 409:  # 409: not running, which is what the signal was for
                raise LocalError(
                    f"could not send {signal} to container {name}: {exc.explanation}", f"`docker kill {name}`"
                ) from None

    def login(self, registry: str, username: str, password: str) -> None:
        self.runner.stream(
            [self.builder().client, "login", "--username", username, "--password-stdin", registry],
            stdin=password.encode(),
            hint="check that the docker CLI can write its config (~/.docker/config.json)",
        )

    @staticmethod
    def _sdk_call(call: Callable[[], Any]) -> Any:
        """Run one SDK call; a lost connection to the engine becomes ``DockerUnavailable``."""
        import requests.exceptions

        try:
            return call()
        except requests.exceptions.ConnectionError as exc:
            raise DockerUnavailable(f"lost the connection to the Docker engine ({exc})", INSTALL_HINT) from None


class _Gone(LocalError):
    """The container or network is not there (the engine's 404)."""

    def __init__(self, doing: str, reason: str) -> None:
        super().__init__(f"the Docker engine could not {doing}: {reason}", "")


@functools.cache
def default_engine() -> DockerEngine:
    """The process's engine, created on first use."""
    return DockerEngine()
