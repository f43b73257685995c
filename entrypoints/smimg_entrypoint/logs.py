"""torchrun's per-rank log files, kept from filling the disk.

With ``--tee 3`` every line a rank prints is written to a file under the log folder, and torchrun's tail thread reads
it from there to the console with a "[rankN]:" prefix. A job that prints for days (NCCL's INFO lines, progress bars)
would fill the container's disk with copies of what the console already showed. The files cannot be truncated: the
rank writes at its own offset and the tail thread reads at its own. Instead the part both have passed is punched out
(``fallocate(PUNCH_HOLE | KEEP_SIZE)``): offsets and size stay, the disk blocks are freed, and reads there see zeros.
"""

from __future__ import annotations

import ctypes
import errno
import os
from pathlib import Path

KEEP = 32 << 20  # bytes at each file's end left alone: torchrun's tail reads within ~0.1 s, the failure file here
TRIM_AT = 64 << 20  # bytes on disk that start a trim, so each trim frees at least TRIM_AT - KEEP
_BLOCK = 4096
_PUNCH_HOLE = 0x02 | 0x01  # FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE (linux/falloc.h)


def read_end(path: str | os.PathLike[str], size: int) -> str:
    """The last ``size`` bytes of a log, decoded; a trimmed log's punched start is never read."""
    with open(path, "rb") as handle:
        handle.seek(max(0, os.fstat(handle.fileno()).st_size - size))
        return handle.read().decode(errors="replace").lstrip("\0")


class LogTrimmer:
    """Frees the disk blocks of the log files' already-read starts, call after call; stops quietly where the file
    system cannot punch holes (the logs then grow as torchrun writes them)."""

    def __init__(self, folder: str, keep: int = KEEP, trim_at: int = TRIM_AT) -> None:
        self.folder = Path(folder)
        self.keep = keep
        self.trim_at = trim_at
        self.punched: dict[Path, int] = {}  # how far each file is punched already
        self.supported = True
        self._fallocate = ctypes.CDLL(None, use_errno=True).fallocate

    def trim(self) -> int:
        """Punch every log whose blocks on disk passed ``trim_at``; return the bytes freed."""
        freed = 0
        for path in self.folder.glob("**/*.log"):
            if not self.supported:
                break
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            if stat.st_blocks * 512 < self.trim_at:
                continue
            start = self.punched.get(path, 0)
            end = (stat.st_size - self.keep) // _BLOCK * _BLOCK
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
