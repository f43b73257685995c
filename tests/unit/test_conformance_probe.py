"""The contract probe's files, written by every process of a host at once, are always whole."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from smimg.local.conformance import PROBE

WRITE = PROBE[PROBE.index("def write") : PROBE.index("\n\n\nif mode")]
WRITER = f"""
import json, os, sys
model = sys.argv[1]
{WRITE}
for n in range(400):
    write("sigterm.json", {{"at": 1.0 / (n + 3), "pad": "x" * (n % 7) * int(sys.argv[2])}})
"""


def test_two_processes_writing_one_file_leave_it_whole_at_every_moment(tmp_path: Path) -> None:
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), str(k)]) for k in (1, 3)]
    seen = 0
    while any(w.poll() is None for w in writers):
        path = tmp_path / "sigterm.json"
        if path.is_file():
            json.loads(path.read_text())  # neither empty nor two writes run together
            seen += 1
    assert [w.returncode for w in writers] == [0, 0] and seen > 0
    assert [p.name for p in tmp_path.iterdir()] == ["sigterm.json"]
