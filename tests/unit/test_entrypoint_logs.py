"""torchrun's per-rank logs are trimmed behind a real writer and torchrun's own tail reader, with no line lost."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

from torch.distributed.elastic.multiprocessing.tail_log import tail_logfile

from smimg_entrypoint.logs import LogTrimmer, read_end

LINES = 600_000  # 8.4 MB of "line 00000000\n"
WRITER = f"""
import sys, time
with open(sys.argv[1], "w") as log:  # as torchrun opens a rank's log
    for start in range(0, {LINES}, 300):
        log.write("".join(f"line {{n:08d}}\\n" for n in range(start, start + 300)))
        log.flush()
        time.sleep(0.001)
"""


class Lines:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def write(self, text: str) -> None:
        self.lines.append(text)


def test_a_log_trimmed_while_written_and_tailed_loses_no_line_and_frees_its_start(tmp_path: Path) -> None:
    log = tmp_path / "default" / "attempt_0" / "0" / "stdout.log"
    log.parent.mkdir(parents=True)
    console, finished = Lines(), threading.Event()
    tail = threading.Thread(target=tail_logfile, args=("[rank0]:", str(log), console, finished, 0.1, lambda _: True))
    tail.start()
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(log)])
    trimmer, freed = LogTrimmer(str(tmp_path), keep=1 << 20, trim_at=2 << 20), 0
    while writer.poll() is None:
        freed += trimmer.trim()
        time.sleep(0.05)
    freed += trimmer.trim()
    finished.set()
    tail.join(30)

    assert writer.returncode == 0 and trimmer.supported
    assert console.lines == [f"[rank0]:line {n:08d}\n" for n in range(LINES)]
    size, on_disk = log.stat().st_size, log.stat().st_blocks * 512
    assert size == LINES * 14 and freed > size - (2 << 20) and on_disk < 2 << 20
    assert read_end(log, 28) == f"line {LINES - 2:08d}\nline {LINES - 1:08d}\n"
    whole = read_end(log, size)  # the punched start reads as zeros, which are dropped
    assert "\0" not in whole and len(whole) < 2 << 20 and whole.endswith(f"line {LINES - 1:08d}\n")
