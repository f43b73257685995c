"""The engine port: everything smimg asks of a container engine, as a Protocol with plain value types.

Executors (build, push, local runs, checks) take an ``Engine``; ``smimg.adapters.docker_engine`` implements it over
the Docker engine, ``tests/fakes.py`` in memory. Nothing here imports an adapter, so planners may use these types.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol


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
    def buildkit(self) -> bool:
        return self.kind is not BuilderKind.LEGACY

    @property
    def supports_secrets(self) -> bool:
        return self.buildkit


@dataclass(frozen=True)
class Image:
    """What the engine knows of a local image."""

    id: str
    tags: tuple[str, ...] = ()
    repo_digests: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    size: int = 0
    os: str = "linux"
    architecture: str = "amd64"

    @property
    def platform(self) -> str:
        return f"{self.os}/{self.architecture}"

    @classmethod
    def from_inspect(cls, attrs: Mapping[str, Any]) -> Image:
        """From the engine's ``docker image inspect`` data."""
        return cls(
            id=str(attrs["Id"]),
            tags=tuple(attrs.get("RepoTags") or ()),
            repo_digests=tuple(attrs.get("RepoDigests") or ()),
            labels=dict((attrs.get("Config") or {}).get("Labels") or {}),
            size=int(attrs.get("Size", 0)),
            os=str(attrs.get("Os") or "linux"),
            architecture=str(attrs.get("Architecture") or "amd64"),
        )


@dataclass(frozen=True)
class ContainerState:
    """A container's state: ``status`` as the engine says it (running, exited, dead, ...)."""

    status: str
    exit_code: int = 0
    finished_at: str = ""  # RFC 3339; orders the hosts of a job by when they ended

    @property
    def ended(self) -> bool:
        return self.status in {"exited", "dead"}


@dataclass(frozen=True)
class Mount:
    """A bind mount: a host path as a path inside the container (a ':' or ',' in it is part of the path)."""

    source: str
    target: str
    read_only: bool = True


@dataclass(frozen=True)
class ContainerSpec:
    """A container to create on a network, where its ``aliases`` resolve to it."""

    name: str
    image: str
    hostname: str
    network: str
    aliases: tuple[str, ...] = ()
    command: tuple[str, ...] = ()
    entrypoint: tuple[str, ...] | None = None  # None: the image's
    environment: tuple[tuple[str, str], ...] = ()
    labels: tuple[tuple[str, str], ...] = ()
    mounts: tuple[Mount, ...] = ()
    shm_size: str | None = None
    gpu_ids: tuple[str, ...] = ()  # NVIDIA devices given to it
    interactive: bool = False  # stdin kept open, for a shell
    tty: bool = False  # a terminal, when the shell's stdin is one


class Engine(Protocol):
    """What smimg asks of a container engine. Failures raise ``SmimgError`` subclasses, never engine types."""

    def builder(self) -> Builder:
        """The best build client on this machine (``DockerUnavailable`` when there is none)."""

    def build(self, argv: list[str], env: Mapping[str, str], on_line: Callable[[str], None] | None) -> None:
        """Run a build command, streaming its lines (``CommandError`` with the whole output on failure)."""

    def image(self, ref: str) -> Image | None:
        """A local image, or None."""

    def pull(self, ref: str, auth: Mapping[str, str] | None, platform: str) -> None:
        """Pull through the engine with in-memory credentials (``CommandError`` with the engine's reason)."""

    def tag(self, ref: str, target: str) -> None:
        """Give a local image another name."""

    def push(self, repository: str, tag: str, auth: Mapping[str, str] | None) -> Iterator[Mapping[str, Any]]:
        """Push one tag; yields the engine's progress messages (errors arrive as messages too)."""

    def read_file(self, ref: str, path: str) -> str | None:
        """A file's text from an image without running it; None when the image has no such file."""

    def run(self, ref: str, entrypoint: list[str]) -> str:
        """Run a throw-away container of ``ref`` to its end; its output (``CommandError`` when it fails)."""

    def network_labels(self, name: str) -> Mapping[str, str] | None:
        """The labels of the network of exactly this name; None when there is none."""

    def create_network(self, name: str, *, internal: bool, labels: Mapping[str, str]) -> None:
        """A bridge network; ``internal``: its containers reach each other and nothing else."""

    def labelled(self, label: str, value: str) -> list[str]:
        """The names of every container, running or not, labelled ``label=value``."""

    def create_container(self, spec: ContainerSpec) -> None:
        """Create, not start (``LocalError`` naming the container and the engine's reason)."""

    def start(self, name: str) -> None:
        """Start a created container (``LocalError`` naming it and the engine's reason)."""

    def attach(self, name: str) -> int:
        """Start a created interactive container on this terminal; its exit code once it ends."""

    def remove_container(self, name: str) -> None:
        """Remove a container, killing it if it runs; one that is gone is no error."""

    def remove_network(self, name: str) -> None:
        """Remove the network of exactly this name; one that is gone is no error."""

    def container_exists(self, name: str) -> bool: ...

    def container_state(self, name: str) -> ContainerState:
        """The state of a named container (``LocalError`` when it is gone)."""

    def logs(self, name: str) -> Iterator[bytes]:
        """A container's output from its start, followed until it ends."""

    def watch_ends(self, label: str, value: str, on_end: Callable[[str], None]) -> Callable[[], None]:
        """Call ``on_end`` with the name of each container labelled ``label=value`` as it stops, from now until the
        returned function is called. Best effort: a container's state stays the authority."""

    def stop(self, name: str, timeout: float) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds."""

    def kill(self, name: str, signal: str) -> None:
        """Send a signal (``SIGTERM``, ``SIGKILL``) to a container's PID 1 and return; a container that has ended
        already is no error."""

    def login(self, registry: str, username: str, password: str) -> None:
        """Store credentials where the user's docker config keeps them."""
