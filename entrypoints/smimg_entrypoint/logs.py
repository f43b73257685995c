"""torchrun's per-rank log files: shown on the console as they grow, and kept from filling the disk.

torchrun runs with ``--redirects 3``: every line a rank prints goes to a file under the log folder, which keeps the
failing rank's traceback for the failure file. ``RankLogs`` prints those lines on the console as torchrun's ``--tee``
would (whole lines, ``[default0]:`` first), from one thread of the entrypoint. torchrun's own tailers stop one stream
after the other, each asleep for up to 0.1 s, and held the end of every job by 0.2-0.3 s; ours reads the rest at
once when the launcher exits.

A job that prints for days (NCCL's INFO lines, progress bars) would fill the container's disk with copies of what the
console already showed. The files cannot be truncated: the rank writes at its own offset. Instead the part that was
shown is punched out (``fallocate(PUNCH_HOLE | KEEP_SIZE)``): offsets and size stay, the disk blocks are freed, and
reads there see zeros.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import re
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import BinaryIO

READ_MAX = 1 << 20  # bytes of one log read at a time
TRIM_EVERY = 10.0  # seconds between trims
KEEP = 32 << 20  # bytes at each file's end left alone: the failure file quotes a traceback from there
TRIM_AT = 64 << 20  # bytes on disk that start a trim, so each trim frees at least TRIM_AT - KEEP
_BLOCK = 4096
_PUNCH_HOLE = 0x02 | 0x01  # FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE (linux/falloc.h)


def read_end(path: str | os.PathLike[str], size: int) -> str:
    """The last ``size`` bytes of a log, decoded; a trimmed log's punched start is never read."""
    with open(path, "rb") as handle:
        handle.seek(max(0, os.fstat(handle.fileno()).st_size - size))
        return handle.read().decode(errors="replace").lstrip("\0")


class LogTrimmer:
    """Frees the disk blocks of the logs' shown starts, call after call; stops quietly where the file system cannot
    punch holes (the logs then grow as torchrun writes them)."""

    def __init__(self, keep: int = KEEP, trim_at: int = TRIM_AT) -> None:
        self.keep = keep
        self.trim_at = trim_at
        self.punched: dict[Path, int] = {}  # how far each file is punched already
        self.supported = True
        self._fallocate = ctypes.CDLL(None, use_errno=True).fallocate

    def trim(self, shown: Mapping[Path, int]) -> int:
        """Punch every log whose blocks on disk passed ``trim_at``, up to what was shown of it and short of its
        last ``keep`` bytes; return the bytes freed."""
        freed = 0
        for path, offset in shown.items():
            if not self.supported:
                break
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            if stat.st_blocks * 512 < self.trim_at:
                continue
            start = self.punched.get(path, 0)
            end = min(stat.st_size - self.keep, offset) // _BLOCK * _BLOCK
            if end > start and self._punch(path, start, end):
                self.punched[path] = end
                freed += end - start
        return freed

    def _punch(self, path: Path, start: int, end: int) -> bool:
        fd = os.open(path, os.O_WRONLY)
        try:
            if self._fallocate(fd, _PUNCH_HOLE, ctypes.c_long(start), ctypes.c_long(end - start)) == 0:
                return True
            if ctypes.get_errno() in (errno.EOPNOTSUPP, errno.ENOSYS):
                self.supported = False
            return False
        finally:
            os.close(fd)


class RankLogs:
    """Shows every rank's ``stdout.log`` and ``stderr.log`` on our stdout and stderr as they grow, whole lines with
    torchrun's ``[default<local rank>]:`` before each, every ``interval`` seconds (torchrun's own pace); trims what
    it showed every ``trim_every`` seconds. ``stop`` shows the rest at once, a last unfinished line included."""

    def __init__(
        self,
        folder: str,
        *,
        interval: float = 0.1,
        trim_every: float = TRIM_EVERY,
        trimmer: LogTrimmer | None = None,
        sinks: Mapping[str, BinaryIO] | None = None,
    ) -> None:
        self.folder = Path(folder)
        self.interval = interval
        self.trim_every = trim_every
        self.trimmer = trimmer or LogTrimmer()
        self.sinks = sinks or {"stdout.log": sys.stdout.buffer, "stderr.log": sys.stderr.buffer}
        self.shown: dict[Path, int] = {}  # bytes of each log shown so far
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> RankLogs:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join()

    def _run(self) -> None:
        trimmed, failed = time.monotonic(), False
        while not self._stopping.wait(self.interval):
            try:
                self.show()
                if time.monotonic() - trimmed > self.trim_every:
                    self.trimmer.trim(self.shown)
                    trimmed = time.monotonic()
            except Exception as exc:  # a log folder gone odd must not silence every rank from now on
                if not failed:
                    _warn(f"showing or trimming the ranks' logs failed ({exc!r}); trying on")
                failed = True
        self.show(final=True)

    def show(self, final: bool = False) -> None:
        for path in sorted(self.folder.glob("*/attempt_*/*/std*.log"), key=_log_order):
            sink = self.sinks.get(path.name)
            if sink is not None:
                with contextlib.suppress(FileNotFoundError):
                    self._show(path, sink, final)

    def _show(self, path: Path, sink: BinaryIO, final: bool) -> None:
        header = f"[default{path.parent.name}]:".encode()
        with open(path, "rb") as handle:
            while True:
                offset = self.shown.get(path, 0)
                handle.seek(offset)
                read = handle.read(READ_MAX)
                chunk = read if final else _whole_lines(read)
                if not chunk:
                    return
                lines = _LINE_END.split(chunk)
                if not lines[-1]:
                    lines.pop()
                self.shown[path] = offset + len(chunk)
                with contextlib.suppress(OSError, ValueError):  # our console gone: reading (and trimming) go on
                    sink.write(b"".join(header + line + b"\n" for line in lines))
                    sink.flush()
                if len(read) < READ_MAX:
                    return


# As torchrun's tail reads a log (text mode: universal newlines), a progress bar's every "\r" ends a line too.
_LINE_END = re.compile(rb"\r\n|\r|\n")


def _whole_lines(read: bytes) -> bytes:
    """The part of a read that ends a line; a line still being written waits for its end, unless it fills the read.
    A last "\r" waits too: it may be the start of "\r\n"."""
    body = read[:-1] if read.endswith(b"\r") else read
    cut = max(body.rfind(b"\n"), body.rfind(b"\r")) + 1
    return body[:cut] if cut or len(read) < READ_MAX else read


def _log_order(path: Path) -> tuple[int, int, str]:
    """attempt_2 before attempt_10, rank 2 before rank 10."""
    attempt, rank = path.parent.parent.name.partition("_")[2], path.parent.name
    return (int(attempt) if attempt.isdigit() else 0, int(rank) if rank.isdigit() else 0, str(path))


def _warn(message: str) -> None:
    with contextlib.suppress(OSError, ValueError):
        print(f"smimg-train: {message}", file=sys.stderr, flush=True)
