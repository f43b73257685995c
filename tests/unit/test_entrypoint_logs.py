"""torchrun's per-rank logs are shown on the console and trimmed behind a real writer, with no line lost."""

from __future__ import annotations

import io
import subprocess
import sys
import time
from pathlib import Path

from smimg_entrypoint.logs import LogTrimmer, RankLogs, read_end

LINES = 600_000  # 8.4 MB of "line 00000000\n"
WRITER = f"""
import sys, time
with open(sys.argv[1], "w") as log:  # as torchrun opens a rank's log
    for start in range(0, {LINES}, 300):
        log.write("".join(f"line {{n:08d}}\\n" for n in range(start, start + 300)))
        log.flush()
        time.sleep(0.001)
"""


def rank_log(root: Path, rank: int, stream: str = "stdout", attempt: int = 0) -> Path:
    path = root / "default_abc" / f"attempt_{attempt}" / str(rank) / f"{stream}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def test_a_log_trimmed_while_written_and_shown_loses_no_line_and_frees_its_start(tmp_path: Path) -> None:
    log = rank_log(tmp_path, 0)
    console = io.BytesIO()
    trimmer = LogTrimmer(keep=1 << 20, trim_at=2 << 20)
    shown = RankLogs(str(tmp_path), interval=0.02, trim_every=0.05, trimmer=trimmer, sinks={"stdout.log": console})
    shown.start()
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(log)])
    assert writer.wait(60) == 0
    shown.stop()

    assert trimmer.supported
    assert console.getvalue().decode().splitlines() == [f"[default0]:line {n:08d}" for n in range(LINES)]
    size, on_disk = log.stat().st_size, log.stat().st_blocks * 512
    assert size == LINES * 14 and on_disk < size - (2 << 20)
    assert read_end(log, 28) == f"line {LINES - 2:08d}\nline {LINES - 1:08d}\n"
    whole = read_end(log, size)  # the punched start reads as zeros, which are dropped
    assert "\0" not in whole and len(whole) < size and whole.endswith(f"line {LINES - 1:08d}\n")


def test_stop_shows_every_stream_and_attempt_at_once_an_unfinished_last_line_included(tmp_path: Path) -> None:
    rank_log(tmp_path, 0).write_text("first\nsecond\n")
    rank_log(tmp_path, 1, "stderr").write_text("Traceback (most recent call last):\nValueError: no newline")
    rank_log(tmp_path, 0, attempt=1).write_text("resumed\n")
    out, err = io.BytesIO(), io.BytesIO()
    shown = RankLogs(str(tmp_path), interval=30, sinks={"stdout.log": out, "stderr.log": err}).start()
    started = time.monotonic()
    shown.stop()

    assert time.monotonic() - started < 5  # not a poll interval later
    assert out.getvalue() == b"[default0]:first\n[default0]:second\n[default0]:resumed\n"
    assert err.getvalue() == b"[default1]:Traceback (most recent call last):\n[default1]:ValueError: no newline\n"


def test_a_line_being_written_waits_for_its_end_while_the_job_runs(tmp_path: Path) -> None:
    log = rank_log(tmp_path, 0)
    log.write_bytes(b"done\nhalf a li")
    out = io.BytesIO()
    shown = RankLogs(str(tmp_path), sinks={"stdout.log": out})
    shown.show()
    assert out.getvalue() == b"[default0]:done\n"
    with log.open("ab") as handle:
        handle.write(b"ne\n")
    shown.show()
    assert out.getvalue() == b"[default0]:done\n[default0]:half a line\n"


def test_the_trimmer_never_punches_what_was_not_shown(tmp_path: Path) -> None:
    log = rank_log(tmp_path, 0)
    log.write_bytes(b"x" * (4 << 20))
    trimmer = LogTrimmer(keep=1 << 20, trim_at=2 << 20)

    assert trimmer.trim({log: 0}) == 0
    assert trimmer.trim({log: 1 << 20}) == 1 << 20
    assert trimmer.trim({log: 4 << 20}) == 2 << 20  # the last `keep` bytes stay
