"""Adapter over the Docker engine: the docker CLI for BuildKit builds, the docker SDK for everything else.

Builds go through the CLI because the SDK's ``images.build`` only drives the legacy builder (no secrets, no cache
mounts). Which CLI can do BuildKit differs between machines: ``docker buildx`` where the plugin is installed, else
a pre-23 client that has BuildKit built in (``DOCKER_BUILDKIT=1``), else only the legacy builder.
"""

from __future__ import annotations

import enum
import functools
import logging
import os
import shlex
import subprocess
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from smimg.errors import CommandError, DockerUnavailable

if TYPE_CHECKING:
    import docker as docker_sdk

logger = logging.getLogger(__name__)

DOCKER_INSTALL_HINT = (
    "start a Docker engine (Docker Desktop, or `sudo dockerd`) and check that `docker info` answers; "
    "in this repository `make setup` does it on Debian as root"
)


class BuilderKind(str, enum.Enum):
    BUILDX = "buildx"
    BUILTIN_BUILDKIT = "buildkit"
    LEGACY = "legacy"


@dataclass(frozen=True)
class Builder:
    """A docker client able to run builds, and how to call it."""

    kind: BuilderKind
    client: str

    def build_argv(self) -> list[str]:
        if self.kind is BuilderKind.BUILDX:
            # --load puts the result in the engine's image store; --provenance/--sbom false keep it a plain
            # Docker v2 image that SageMaker accepts.
            return [self.client, "buildx", "build", "--load", "--provenance=false", "--sbom=false"]
        return [self.client, "build"]

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["DOCKER_BUILDKIT"] = "0" if self.kind is BuilderKind.LEGACY else "1"
        return env

    @property
    def supports_secrets(self) -> bool:
        return self.kind is not BuilderKind.LEGACY


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


def _quiet(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=30, check=False)


def _client_major(client: str) -> int | None:
    proc = _quiet([client, "version", "--format", "{{.Client.Version}}"])
    head = proc.stdout.strip().split(".")[0]
    return int(head) if head.isdigit() else None


@functools.cache
def find_builder() -> Builder:
    """Pick the best build client on this machine.

    Raises:
        DockerUnavailable: no docker client is on PATH.
    """
    clients = docker_clients()
    if not clients:
        raise DockerUnavailable("no `docker` command found on PATH", DOCKER_INSTALL_HINT)
    for client in clients:
        if _quiet([client, "buildx", "version"]).returncode == 0:
            return Builder(BuilderKind.BUILDX, client)
    for client in clients:
        major = _client_major(client)
        # Clients before 23.0 carry BuildKit inside; later ones delegate to the buildx plugin.
        if major is not None and major < 23:
            return Builder(BuilderKind.BUILTIN_BUILDKIT, client)
    logger.warning(
        "no BuildKit-capable docker client found (install the buildx plugin); "
        "falling back to the legacy builder: no secrets, no pip cache mounts"
    )
    return Builder(BuilderKind.LEGACY, clients[0])


def stream(
    argv: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    stdin: bytes | None = None,
    on_line: Callable[[str], None] | None = None,
    cwd: Path | None = None,
    hint: str = "",
) -> str:
    """Run a command, feeding each output line to ``on_line``; return all output.

    Raises:
        CommandError: the command exited non-zero (the message holds its last lines).
    """
    logger.debug("running: %s", shlex.join(argv))
    lines: list[str] = []
    with subprocess.Popen(
        list(argv),
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=cwd,
    ) as proc:
        if stdin is not None and proc.stdin is not None:
            proc.stdin.write(stdin)
            proc.stdin.close()
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.decode("utf-8", errors="replace").rstrip("\n")
            lines.append(line)
            if on_line is not None:
                on_line(line)
        returncode = proc.wait()
    output = "\n".join(lines)
    if returncode != 0:
        raise CommandError(list(argv), returncode, output, hint)
    return output


@functools.cache
def client() -> docker_sdk.DockerClient:
    """The docker SDK client for the engine named by the environment (DOCKER_HOST, default socket).

    Raises:
        DockerUnavailable: the engine does not answer.
    """
    import docker as docker_sdk

    try:
        sdk = docker_sdk.from_env(timeout=600)
        sdk.ping()
    except Exception as exc:
        raise DockerUnavailable(f"the Docker engine does not answer ({exc})", DOCKER_INSTALL_HINT) from exc
    return sdk


def image_labels(ref: str) -> dict[str, str] | None:
    """The labels of a local image, or None when the engine has no such image."""
    import docker.errors

    try:
        image = client().images.get(ref)
    except docker.errors.ImageNotFound:
        return None
    labels: dict[str, str] = image.labels or {}
    return labels


def image_attrs(ref: str) -> dict[str, Any] | None:
    """The engine's inspect data of a local image, or None when it has no such image."""
    import docker.errors

    try:
        attrs: dict[str, Any] = client().images.get(ref).attrs
        return attrs
    except docker.errors.ImageNotFound:
        return None


def pull(ref: str, auth_config: dict[str, str] | None = None, platform: str = "linux/amd64") -> None:
    """Pull an image through the engine, with in-memory registry credentials.

    Raises:
        CommandError: the engine could not pull it (the message holds the engine's reason).
    """
    import docker.errors

    repository, tag = (ref, None) if "@" in ref else split_tag(ref)
    try:
        client().images.pull(repository, tag=tag, auth_config=auth_config, platform=platform)
    except docker.errors.APIError as exc:
        raise CommandError(["docker", "pull", ref], 1, str(exc.explanation or exc)) from None


def split_tag(ref: str) -> tuple[str, str]:
    """(repository, tag) of a reference without digest; a registry port is not a tag, and no tag means latest."""
    name, _, tag = ref.rpartition(":")
    if not name or "/" in tag:
        return ref, "latest"
    return name, tag


def read_image_file(ref: str, path: str) -> str | None:
    """A file's text from an image without running it (through a created, never started container)."""
    import io
    import tarfile

    import docker.errors

    container = client().containers.create(ref, entrypoint=["/bin/true"])
    try:
        stream, _ = container.get_archive(path)
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as archive:
            member = archive.next()
            extracted = archive.extractfile(member) if member else None
            return extracted.read().decode() if extracted else None
    except docker.errors.NotFound:
        return None
    finally:
        container.remove(force=True)


def push(repository: str, tag: str, auth_config: dict[str, str] | None) -> Iterator[dict[str, Any]]:
    """Push one tag through the engine; yields the engine's progress messages (errors arrive as messages too).

    Without ``auth_config`` the SDK falls back to what `docker login` stored for the registry.
    """
    yield from client().api.push(repository, tag=tag, stream=True, decode=True, auth_config=auth_config)


def tag(ref: str, target: str) -> None:
    """Give a local image another name."""
    repository, name = split_tag(target)
    client().images.get(ref).tag(repository, name)


def login(registry: str, username: str, password: str) -> None:
    """`docker login` through the CLI, so that the credentials land where the user's docker config keeps them."""
    stream(
        [find_builder().client, "login", "--username", username, "--password-stdin", registry],
        stdin=password.encode(),
        hint="check that the docker CLI can write its config (~/.docker/config.json)",
    )
