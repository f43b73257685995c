"""In-memory stand-ins for the engine port and a registry, to test executors' logic without Docker.

They do what the real adapters do at the level the executors see: images by reference, containers that end with a
scripted exit code after a scripted number of polls (as ``scripted`` says, once started), pushes that answer with
scripted progress messages, and a registry's tags and manifests.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from smimg.engine import Builder, BuilderKind, ContainerSpec, ContainerState, Image
from smimg.errors import CommandError, DockerUnavailable, LocalError


@dataclass
class FakeContainer:
    """Ends with ``exit_code`` after ``polls`` state queries, unless stopped first (then 143)."""

    exit_code: int = 0
    polls: int = 1
    logs: tuple[bytes, ...] = ()
    seen: int = 0
    stopped: bool = False
    finished_at: str = ""

    def state(self, clock: int) -> ContainerState:
        self.seen += 1
        if self.stopped:
            return ContainerState("exited", 143, self.finished_at)
        if self.seen >= self.polls:
            self.finished_at = self.finished_at or f"2026-11-21T00:00:{clock:02d}Z"
            return ContainerState("exited", self.exit_code, self.finished_at)
        return ContainerState("running")


@dataclass
class FakeEngine:
    """The engine port in memory. ``pushes`` holds one list of progress messages per push call, in order."""

    images: dict[str, Image] = field(default_factory=dict)
    containers: dict[str, FakeContainer] = field(default_factory=dict)
    networks: dict[str, dict[str, str]] = field(default_factory=dict)  # name -> labels
    pushes: list[list[dict[str, Any]]] = field(default_factory=list)
    watches: list[str] = field(default_factory=list)
    build_output: str | None = None  # a failing build's output; None builds successfully
    lost: bool = False  # the engine went away: every call raises DockerUnavailable
    calls: list[tuple[Any, ...]] = field(default_factory=list)
    clock: int = 0
    scripted: dict[str, FakeContainer] = field(default_factory=dict)  # what a started container of the name does
    on_start: Callable[[str], None] | None = None  # e.g. write the files the container would write
    created: dict[str, ContainerSpec] = field(default_factory=dict)
    labels: dict[str, dict[str, str]] = field(default_factory=dict)  # container -> labels
    refuse_create: str | None = None  # the engine refuses to create the container of this name

    def _call(self, *record: Any) -> None:
        if self.lost:
            raise DockerUnavailable("lost the connection to the Docker engine (fake)")
        self.calls.append(record)

    def builder(self) -> Builder:
        return Builder(BuilderKind.BUILDX, "docker")

    def build(self, argv: list[str], env: Mapping[str, str], on_line: Callable[[str], None] | None) -> None:
        self._call("build", tuple(argv))
        if self.build_output is not None:
            raise CommandError(argv, 1, self.build_output)
        tag = argv[argv.index("--tag") + 1]
        self.images[tag] = Image(id="sha256:" + "b" * 64, tags=(tag,))

    def image(self, ref: str) -> Image | None:
        self._call("image", ref)
        return self.images.get(ref)

    def pull(self, ref: str, auth: Mapping[str, str] | None, platform: str) -> None:
        self._call("pull", ref)

    def tag(self, ref: str, target: str) -> None:
        self._call("tag", ref, target)
        self.images[target] = self.images[ref]

    def push(self, repository: str, tag: str, auth: Mapping[str, str] | None) -> Iterator[Mapping[str, Any]]:
        self._call("push", repository, tag)
        yield from self.pushes.pop(0)

    def read_file(self, ref: str, path: str) -> str | None:
        return None

    def run(self, ref: str, entrypoint: list[str]) -> str:
        return ""

    def network_labels(self, name: str) -> dict[str, str] | None:
        self._call("network_labels", name)
        return self.networks.get(name)

    def labelled(self, label: str, value: str) -> list[str]:
        self._call("labelled", label, value)
        return sorted(name for name, labels in self.labels.items() if labels.get(label) == value)

    def container_exists(self, name: str) -> bool:
        return name in self.containers or name in self.created

    def create_network(self, name: str, *, internal: bool, labels: Mapping[str, str]) -> None:
        self._call("create_network", name, internal)
        self.networks[name] = dict(labels)

    def create_container(self, spec: ContainerSpec) -> None:
        self._call("create_container", spec.name)
        if spec.name == self.refuse_create:
            raise LocalError(f"the Docker engine could not create container {spec.name}: no space left (fake)")
        self.created[spec.name] = spec
        self.labels[spec.name] = dict(spec.labels)

    def start(self, name: str) -> None:
        self._call("start", name)
        self.containers[name] = self.scripted.get(name, FakeContainer())
        if self.on_start is not None:
            self.on_start(name)

    def attach(self, name: str) -> int:
        self._call("attach", name)
        return 0

    def remove_container(self, name: str) -> None:
        self._call("remove_container", name)
        self.containers.pop(name, None)
        self.created.pop(name, None)
        self.labels.pop(name, None)

    def remove_network(self, name: str) -> None:
        self._call("remove_network", name)
        self.networks.pop(name, None)

    def container_state(self, name: str) -> ContainerState:
        self._call("state", name)
        self.clock += 1
        if name not in self.containers and name in self.created:
            return ContainerState("created")  # created, never started
        return self.containers[name].state(self.clock)

    def logs(self, name: str) -> Iterator[bytes]:
        yield from self.containers[name].logs

    def watch_ends(self, label: str, value: str, on_end: Callable[[str], None]) -> Callable[[], None]:
        # No events: the supervisor sees ends by the log streams and the states. Each watch is recorded, and
        # whether it was stopped.
        self.watches.append(f"{label}={value}")
        return lambda: self.watches.append(f"stopped {label}={value}")

    def stop(self, name: str, timeout: float) -> None:
        self._call("stop", name)
        self.containers[name].stopped = True

    def kill(self, name: str, signal: str) -> None:
        self._call("kill", name, signal)
        self.containers[name].stopped = True

    def login(self, registry: str, username: str, password: str) -> None:
        self._call("login", registry)


@dataclass
class FakeRegistry:
    """A registry view: tags to digests, digests to (media type, manifest)."""

    tags: dict[str, str] = field(default_factory=dict)
    manifests: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)

    def digest(self, repository: str, tag: str) -> str | None:
        return self.tags.get(f"{repository}:{tag}")

    def manifest(self, repository: str, digest: str) -> tuple[str, Mapping[str, Any]] | None:
        return self.manifests.get(digest)


def write_failure(run_dir: Path, host: str, text: str) -> None:
    """What a host's entrypoint leaves behind when it fails."""
    path = run_dir / host / "output" / "failure"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
