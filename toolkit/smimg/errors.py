"""One error base for everything smimg reports to a user: what went wrong, and what to do about it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class SmimgError(Exception):
    """Base of every error smimg raises on purpose.

    Args:
        message: What went wrong, naming the bad input.
        hint: What the user should do about it.
    """

    exit_code = 1

    def __init__(self, message: str, hint: str = "") -> None:
        self.message = message
        self.hint = hint
        super().__init__(f"{message}\n  hint: {hint}" if hint else message)


class DockerUnavailable(SmimgError):
    """No Docker engine answers, or no suitable client is installed."""


class CommandError(SmimgError):
    """An external command (docker, debootstrap, pip) exited non-zero."""

    def __init__(self, argv: list[str], returncode: int, output: str, hint: str = "") -> None:
        self.argv = argv
        self.returncode = returncode
        self.output = output
        tail = "\n".join(output.rstrip().splitlines()[-30:])
        super().__init__(f"`{' '.join(argv[:3])} ...` exited with {returncode}:\n{tail}", hint)


class StandinError(SmimgError):
    """The local stand-in for the Hugging Face DLC could not be built."""


@dataclass(frozen=True)
class Problem:
    """One invalid field of the image spec: where, what, and how to fix it."""

    field: str
    problem: str
    fix: str = ""

    def __str__(self) -> str:
        return f"{self.field}: {self.problem}" + (f" (fix: {self.fix})" if self.fix else "")


class SpecError(SmimgError):
    """The image spec is invalid. Lists every problem at once, each with its field path and fix."""

    exit_code = 2

    def __init__(self, source: str, problems: Sequence[Problem]) -> None:
        self.source = source
        self.problems = tuple(problems)
        listing = "\n".join(f"  - {p}" for p in self.problems)
        count = f"{len(self.problems)} problem" + ("s" if len(self.problems) != 1 else "")
        super().__init__(f"invalid image spec {source} ({count}):\n{listing}", "fix the fields above and run again")


class BaseImageError(SmimgError):
    """The base image cannot be resolved or fetched."""


class AwsError(SmimgError):
    """An AWS call failed: credentials, permissions or the service.

    Args:
        code: AWS's error code, when the service answered with one.
        transient: throttled, or the service or network briefly unavailable: the same call may succeed later.
    """

    def __init__(self, message: str, hint: str = "", *, code: str = "", transient: bool = False) -> None:
        super().__init__(message, hint)
        self.code = code
        self.transient = transient


class BuildError(SmimgError):
    """The image build failed; the message holds the failing step and its last output lines."""


class ImageNotFound(SmimgError):
    """A local image the command needs does not exist."""


class PushError(SmimgError):
    """The image could not be pushed, or the registry holds something SageMaker would reject."""


class RegistryAuthError(PushError):
    """The registry refused our credentials or our permissions."""


class LocalError(SmimgError):
    """A local job cannot start (bad input, a clash, an engine's refusal) or failed on one of its hosts."""


class LaunchError(SmimgError):
    """A cloud job cannot be launched as asked (bad input, a limit SageMaker would refuse), or it failed."""


class WatchLost(SmimgError):
    """Watching a cloud job failed (throttled, network, credentials expired): the job itself runs on."""

    exit_code = 3  # not the job's outcome: a script can tell "failed" (1) from "unknown" (3)
