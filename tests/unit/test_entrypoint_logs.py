"""torchrun's per-rank logs are shown on the console and trimmed behind a real writer, with no line lost."""

from __future__ import annotations

import io
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import pytest

from smimg_entrypoint.logs import READ_MAX, LogTrimmer, RankLogs, read_end

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


def test_a_progress_bars_every_carriage_return_ends_a_line_as_under_tee(tmp_path: Path) -> None:
    log = rank_log(tmp_path, 0, "stderr")
    log.write_bytes(b"\r  0%|   |\r 50%|#  |\r100%|###|\r\nnext\r")
    err = io.BytesIO()
    shown = RankLogs(str(tmp_path), sinks={"stderr.log": err})
    shown.show()
    bars = [b"[default0]:", b"[default0]:  0%|   |", b"[default0]: 50%|#  |", b"[default0]:100%|###|"]
    assert err.getvalue().split(b"\n") == [*bars, b""]  # "next\r" waits: the "\r" may be half of "\r\n"
    with log.open("ab") as handle:
        handle.write(b"\n")
    shown.show()
    assert err.getvalue().split(b"\n") == [*bars, b"[default0]:next", b""]  # one line, not two


def test_a_line_longer_than_a_read_is_shown_in_pieces_rather_than_held(tmp_path: Path) -> None:
    rank_log(tmp_path, 0).write_bytes(b"x" * (READ_MAX + 10))
    out = io.BytesIO()
    RankLogs(str(tmp_path), sinks={"stdout.log": out}).show()
    assert out.getvalue() == b"[default0]:" + b"x" * READ_MAX + b"\n"


def test_attempts_and_ranks_are_shown_in_number_order(tmp_path: Path) -> None:
    for attempt, rank in ((10, 0), (2, 10), (2, 2)):
        rank_log(tmp_path, rank, attempt=attempt).write_text(f"a{attempt} r{rank}\n")
    out = io.BytesIO()
    RankLogs(str(tmp_path), sinks={"stdout.log": out}).show()
    assert out.getvalue() == b"[default2]:a2 r2\n[default10]:a2 r10\n[default0]:a10 r0\n"


def test_a_failing_trim_is_said_once_and_the_lines_keep_coming(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    class Refused(LogTrimmer):
        def trim(self, shown: Mapping[Path, int]) -> int:
            raise PermissionError("denied")

    log, out = rank_log(tmp_path, 0), io.BytesIO()
    shown = RankLogs(str(tmp_path), interval=0.01, trim_every=0, trimmer=Refused(), sinks={"stdout.log": out})
    shown.start()
    for n in range(3):
        with log.open("a") as handle:
            handle.write(f"line {n}\n")
        time.sleep(0.1)
    shown.stop()
    assert out.getvalue() == b"".join(f"[default0]:line {n}\n".encode() for n in range(3))
    assert capsys.readouterr().err.count("trying on") == 1
