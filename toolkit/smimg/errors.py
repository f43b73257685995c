"""One error base for everything smimg reports to a user: what went wrong, and what to do about it."""

from __future__ import annotations


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
