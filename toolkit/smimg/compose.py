"""Adapter over Docker Compose: v2 (`docker compose`) or v1 (`docker-compose`), whichever this machine has.

smimg asks compose only to create and remove the project (`up -d`, `down`, `run`); it watches containers, reads
their logs and judges their exit codes through the docker SDK, identically for both versions.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from smimg import docker
from smimg.errors import CommandError, LocalError

CHOICE_ENV = "SMIMG_COMPOSE"
INSTALL_HINT = (
    "install Compose v2 (the docker-compose-plugin package, or Docker Desktop) or v1 (`apt-get install "
    f"docker-compose`); {CHOICE_ENV}=v1|v2 picks one when both exist"
)


@dataclass(frozen=True)
class Compose:
    """How to call compose on this machine."""

    argv: tuple[str, ...]
    version: str

    def command(self, project: str, file: Path, *args: str) -> list[str]:
        return [*self.argv, "--project-name", project, "--file", str(file), *args]


def _version(argv: Sequence[str]) -> str | None:
    try:
        proc = subprocess.run([*argv, "version", "--short"], capture_output=True, text=True, timeout=30, check=False)
    except OSError:
        return None
    text = proc.stdout.strip().lstrip("v")
    return text if proc.returncode == 0 and text[:1].isdigit() else None


def find_compose(choice: str | None = None) -> Compose:
    """Compose v2 when the docker CLI has the plugin, else v1; ``choice`` (or SMIMG_COMPOSE) forces one.

    Raises:
        LocalError: no compose, or not the one asked for.
    """
    choice = choice or os.environ.get(CHOICE_ENV) or "auto"
    if choice not in {"auto", "v1", "v2"}:
        raise LocalError(f"{CHOICE_ENV}={choice!r} is not a compose choice", "use v1, v2 or auto")
    if choice in {"auto", "v2"}:
        for client in docker.docker_clients():
            if (version := _version([client, "compose"])) and version.startswith("2"):
                return Compose((client, "compose"), version)
    if choice in {"auto", "v1"} and (v1 := shutil.which("docker-compose")) and (version := _version([v1])):
        return Compose((v1,), version)
    wanted = {"auto": "Docker Compose", "v1": "docker-compose (v1)", "v2": "`docker compose` (v2)"}[choice]
    raise LocalError(f"{wanted} is not installed", INSTALL_HINT)


def up(compose: Compose, project: str, file: Path) -> None:
    """Create the project's network and containers and start them, detached.

    Raises:
        LocalError: compose refused (the message holds its output).
    """
    _run(compose.command(project, file, "up", "--detach", "--no-build"), "start the job")


def down(compose: Compose, project: str, file: Path) -> None:
    """Remove the project's containers and network (stopping what still runs)."""
    _run(compose.command(project, file, "down", "--volumes", "--remove-orphans", "--timeout", "10"), "clean up")


def shell(compose: Compose, project: str, file: Path, service: str, command: Sequence[str]) -> int:
    """An interactive command in a fresh container of ``service``, with its mounts and env; its exit code."""
    argv = compose.command(project, file, "run", "--rm", "--entrypoint", command[0], service, *command[1:])
    return subprocess.call(argv)


def _run(argv: list[str], doing: str) -> None:
    try:
        docker.stream(argv)
    except CommandError as exc:
        raise LocalError(f"compose could not {doing}:\n{exc.output.strip()}", "read compose's message above") from None
