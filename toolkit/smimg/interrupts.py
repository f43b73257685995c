"""Signals as exceptions, so every ``finally`` runs, and cleanup that a second signal cannot cut short.

SIGTERM (CI cancelling a job, `timeout`, `docker stop`) and SIGHUP (a closed terminal) end smimg the way Ctrl-C
does: as a ``KeyboardInterrupt`` that unwinds through the executors' clean-up. While clean-up itself runs, more
signals are noted and reported instead of interrupting it, then re-raised once it is done.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from types import FrameType

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
ABANDON_AFTER = 3


class Interrupted(KeyboardInterrupt):
    """smimg was told to stop by a signal."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


_received: list[int] = []


def _raise(signum: int, _frame: FrameType | None) -> None:
    _received.append(signum)
    raise Interrupted(signum)


def first_signal() -> int | None:
    """The first signal this process was interrupted by (typer reports every interrupt as exit 130)."""
    return _received[0] if _received else None


def install() -> None:
    """Make SIGTERM and SIGHUP interrupt the process as Ctrl-C does (call once, from the main thread).

    A signal the parent set to be ignored (``nohup`` ignores SIGHUP) stays ignored.
    """
    for signum in SIGNALS:
        if signal.getsignal(signum) in (signal.SIG_DFL, signal.default_int_handler):
            signal.signal(signum, _raise)


@contextlib.contextmanager
def shielded(on_signal: Callable[[int], None]) -> Iterator[None]:
    """Defer SIGINT, SIGTERM and SIGHUP while the body runs; ``on_signal`` hears each one as it comes.

    The first deferred signal is raised as ``Interrupted`` when the body is done, unless an exception already
    unwinds (its message must not be lost). A third signal abandons the body: a wedged engine must not make smimg
    unkillable. Outside the main thread (where Python delivers no signals) the body simply runs.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def note(signum: int, _frame: FrameType | None) -> None:
        received.append(signum)
        _received.append(signum)
        if len(received) >= ABANDON_AFTER:
            raise Interrupted(signum)
        on_signal(signum)

    previous = {signum: signal.signal(signum, note) for signum in SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if received and sys.exc_info()[1] is None:
        raise Interrupted(received[0])
