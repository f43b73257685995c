"""The one way smimg runs another program: logged, never through a shell, failures as ``CommandError``.

Every subprocess (docker CLI builds, debootstrap, pip, nvidia-smi) goes through a ``Runner``, so tests
can hand executors a fake one and a user's values are never interpreted by a shell.
"""

from __future__ import annotations

import logging
import shlex
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from smimg import interrupts
from smimg.errors import CommandError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Completed:
    """A finished command: its exit code and output (stdout and stderr together unless captured apart)."""

    argv: tuple[str, ...]
    returncode: int
    output: str
    errors: str = ""

    @property
    def ok(self) -> bool:
        return self.returncode == 0


STOP_TIMEOUT = 10.0


def _pump(
    proc: subprocess.Popen[bytes], stdin: bytes | None, lines: list[str], on_line: Callable[[str], None] | None
) -> int:
    if stdin is not None and proc.stdin is not None:
        proc.stdin.write(stdin)
        proc.stdin.close()
    assert proc.stdout is not None
    for raw in proc.stdout:
        line = raw.decode("utf-8", errors="replace").rstrip("\n")
        lines.append(line)
        if on_line is not None:
            on_line(line)
    return proc.wait()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """End a child smimg is abandoning (interrupted, or its output could not be handled): TERM, then KILL."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class Runner:
    """Runs programs for smimg's adapters."""

    def stream(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        stdin: bytes | None = None,
        on_line: Callable[[str], None] | None = None,
        cwd: Path | None = None,
        hint: str = "",
    ) -> str:
        """Run to the end, feeding each output line to ``on_line``; return all output.

        Raises:
            CommandError: the command exited non-zero or could not start (the message holds its last lines).
        """
        logger.debug("running: %s", shlex.join(argv))
        lines: list[str] = []
        try:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None,
                cwd=cwd,
                # Its own session: a Ctrl-C at the terminal reaches smimg alone, which then decides how the child
                # ends (a build is cancelled, a clean-up runs to its end) instead of both dying mid-way.
                start_new_session=True,
            )
        except OSError as exc:
            raise CommandError(list(argv), 127, str(exc), hint) from None
        with proc:
            try:
                returncode = _pump(proc, stdin, lines, on_line)
            except BaseException:
                with interrupts.shielded(lambda _signum: None):
                    _stop(proc)
                raise
        output = "\n".join(lines)
        if returncode != 0:
            raise CommandError(list(argv), returncode, output, hint)
        return output

    def capture(self, argv: Sequence[str], *, timeout: float = 30) -> Completed:
        """Run a short query; a program that is missing, fails or hangs is a non-zero ``Completed``, not an error."""
        logger.debug("running: %s", shlex.join(argv))
        try:
            proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return Completed(tuple(argv), 127, "", str(exc))
        return Completed(tuple(argv), proc.returncode, proc.stdout, proc.stderr)

    def interactive(self, argv: Sequence[str]) -> int:
        """Run attached to this terminal (``local shell``); the exit code."""
        logger.debug("running: %s", shlex.join(argv))
        return subprocess.call(list(argv))
