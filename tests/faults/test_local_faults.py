"""Issue 12's local-mode faults against a real engine: however `smimg local run` ends (SIGTERM, two Ctrl-Cs,
SIGHUP, a kill) nothing is left running behind it, results are saved, a rerun of the name recovers; `$` and `:`
in values and paths reach the container as typed."""

from __future__ import annotations

import os
import signal
import subprocess
import tarfile
import threading
import time
from pathlib import Path

import pytest

from smimg.adapters.docker_engine import default_engine
from smimg.local import job
from tests.conftest import SMIMG, smimg_cli

pytestmark = pytest.mark.docker


SLEEPER = """\
import os, pathlib, time
pathlib.Path(os.environ["SM_OUTPUT_DATA_DIR"], "progress.txt").write_text("step 1")
print("training started", flush=True)
time.sleep(600)
"""
ECHO = """\
import os, pathlib
pathlib.Path(os.environ["SM_MODEL_DIR"], "token.txt").write_text(os.environ["MYTOKEN"])
"""


def leftovers(project: str) -> list[str]:
    client = default_engine().sdk
    containers = [c.name for c in client.containers.list(all=True) if c.name.startswith(f"{project}-algo-")]
    return containers + [n.name for n in client.networks.list(names=[project])]


def code(folder: Path, script: str) -> Path:
    folder.mkdir(parents=True)
    (folder / "train.py").write_text(script)
    return folder


@pytest.fixture(scope="module")
def image(job_image: str) -> str:
    """The smimg-built test job image (the stand-in alone runs AWS's toolkit, not smimg's entrypoint)."""
    return job_image


class Started:
    """A real `smimg local run` process whose stderr a thread collects."""

    def __init__(self, image: str, source: Path, name: str, output: Path) -> None:
        argv = [*SMIMG, "local", "run", image, "--source-dir", str(source), "--entry-point", "train.py"]
        argv += ["--job-name", name, "--output", str(output)]
        self.proc = subprocess.Popen(argv, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        self.lines.extend(self.proc.stderr)

    def wait_for(self, text: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            assert time.monotonic() < deadline and self.proc.poll() is None, "".join(self.lines)
            time.sleep(0.2)

    def end(self, timeout: float = 60) -> tuple[int, str]:
        try:
            code = self.proc.wait(timeout)
        finally:
            self.proc.kill()
        self.reader.join(5)
        return code, "".join(self.lines)


@pytest.mark.parametrize("signals", [["SIGTERM"], ["SIGINT", "SIGINT"], ["SIGHUP"]])
def test_a_signal_removes_containers_and_network_and_saves_the_output(
    image: str, tmp_path: Path, signals: list[str]
) -> None:
    name = job.job_name(f"smimg-fault-{signals[0].lower()}")
    run = Started(image, code(tmp_path / "src", SLEEPER), name, tmp_path / "out")
    run.wait_for("training started")
    for signame in signals:
        run.proc.send_signal(getattr(signal, signame))
        time.sleep(0.5)
    returncode, err = run.end()
    assert returncode == 128 + getattr(signal, signals[0]), err
    own = [line for line in err.splitlines() if not line.startswith("algo-")]  # smimg's lines, not the job's logs
    assert "Traceback" not in "\n".join(own) and own[-1] == f"interrupted ({signals[0]})", err
    assert leftovers(name) == []
    with tarfile.open(tmp_path / "out" / "output.tar.gz") as archive:
        assert "data/progress.txt" in archive.getnames()
    assert not (job.default_run_dir(job.LocalJob(image="", name=name))).exists()


def test_a_rerun_of_a_killed_jobs_name_recovers(image: str, tmp_path: Path) -> None:
    name = job.job_name("smimg-fault-rerun")
    run = Started(image, code(tmp_path / "sleeper", SLEEPER), name, tmp_path / "out1")
    try:
        run.wait_for("training started")
        run.proc.kill()  # nothing can clean up after SIGKILL: the containers run on
        run.end()
        assert leftovers(name)
        running = smimg_cli("local", "run", image, "--job-name", name, "--output", str(tmp_path / "out2"))
        assert running.returncode == 1 and "running outside smimg's control" in running.stderr, running.stderr
        assert f"docker rm -f {name}-algo-1 && docker network rm {name}" in running.stderr
        default_engine().sdk.containers.get(f"{name}-algo-1").stop(timeout=1)  # as an engine restart would
        rerun = smimg_cli(
            "local", "run", image, "--source-dir", str(code(tmp_path / "echo", ECHO)),
            "--entry-point", "train.py", "--env", "MYTOKEN=x", "--job-name", name, "--output", str(tmp_path / "out2"),
            timeout=180,
        )  # fmt: skip
        assert rerun.returncode == 0, rerun.stderr
        assert f"removing what an earlier run of {name} left behind" in rerun.stderr
        assert "left results; its folder is kept as" in rerun.stderr
    finally:
        for container in default_engine().sdk.containers.list(all=True, filters={"name": name}):
            container.remove(force=True)
    assert leftovers(name) == []


def test_dollars_and_colons_reach_the_container_as_typed(image: str, tmp_path: Path) -> None:
    token = "hf_ab$cdEF${X}yz$$"
    source = code(tmp_path / "my co$HOME:de", ECHO)
    cli = smimg_cli(
        "local", "run", image, "--source-dir", str(source), "--entry-point", "train.py",
        "--env", f"MYTOKEN={token}", "--output", str(tmp_path / "out"), timeout=180,
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    with tarfile.open(tmp_path / "out" / "model.tar.gz") as archive:
        extracted = archive.extractfile("token.txt")
        assert extracted is not None and extracted.read().decode() == token
    assert not (Path(os.environ.get("HOME", "/root")) / ":de").exists()
