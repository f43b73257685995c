"""Adapter over Docker Compose: v2 (`docker compose`) or v1 (`docker-compose`), whichever this machine has.

smimg asks compose only to create and remove the project (`up -d`, `down`, `run`); it watches containers, reads
their logs and judges their exit codes through the engine port, identically for both versions.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from smimg.adapters.docker_engine import docker_clients
from smimg.adapters.runner import Runner
from smimg.errors import CommandError, LocalError

CHOICE_ENV = "SMIMG_COMPOSE"
INSTALL_HINT = (
    "install Compose v2 (the docker-compose-plugin package, or Docker Desktop) or v1 (`apt-get install "
    f"docker-compose`); {CHOICE_ENV}=v1|v2 picks one when both exist"
)


@dataclass(frozen=True)
class Compose:
    """How to call compose on this machine, and one project of it."""

    argv: tuple[str, ...]
    version: str
    runner: Runner = field(default_factory=Runner, compare=False)

    def command(self, project: str, file: Path, *args: str) -> list[str]:
        return [*self.argv, "--project-name", project, "--file", str(file), *args]

    def up(self, project: str, file: Path) -> None:
        """Create the project's network and containers and start them, detached.

        Raises:
            LocalError: compose refused (the message holds its output).
        """
        self._run(self.command(project, file, "up", "--detach", "--no-build"), "start the job")

    def down(self, project: str, file: Path) -> None:
        """Remove the project's containers and network (stopping what still runs)."""
        self._run(self.command(project, file, "down", "--volumes", "--remove-orphans", "--timeout", "10"), "clean up")

    def shell(self, project: str, file: Path, service: str, command: Sequence[str]) -> int:
        """An interactive command in a fresh container of ``service``, with its mounts and env; its exit code."""
        argv = self.command(project, file, "run", "--rm", "--entrypoint", command[0], service, *command[1:])
        return self.runner.interactive(argv)

    def _run(self, argv: list[str], doing: str) -> None:
        try:
            self.runner.stream(argv)
        except CommandError as exc:
            raise LocalError(
                f"compose could not {doing}:\n{exc.output.strip()}", "read compose's message above"
            ) from None


def find_compose(choice: str | None = None, runner: Runner | None = None) -> Compose:
    """Compose v2 when the docker CLI has the plugin, else v1; ``choice`` (or SMIMG_COMPOSE) forces one.

    Raises:
        LocalError: no compose, or not the one asked for.
    """
    runner = runner or Runner()
    choice = choice or os.environ.get(CHOICE_ENV) or "auto"
    if choice not in {"auto", "v1", "v2"}:
        raise LocalError(f"{CHOICE_ENV}={choice!r} is not a compose choice", "use v1, v2 or auto")
    if choice in {"auto", "v2"}:
        for client in docker_clients():
            if (version := _version(runner, [client, "compose"])) and version.startswith("2"):
                return Compose((client, "compose"), version, runner)
    if choice in {"auto", "v1"} and (v1 := shutil.which("docker-compose")) and (version := _version(runner, [v1])):
        return Compose((v1,), version, runner)
    wanted = {"auto": "Docker Compose", "v1": "docker-compose (v1)", "v2": "`docker compose` (v2)"}[choice]
    raise LocalError(f"{wanted} is not installed", INSTALL_HINT)


def _version(runner: Runner, argv: Sequence[str]) -> str | None:
    proc = runner.capture([*argv, "version", "--short"])
    text = proc.output.strip().lstrip("v")
    return text if proc.ok and text[:1].isdigit() else None
