"""The entrypoint as real processes, no Docker: two nodes on loopback, real torchrun, gloo collectives."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import free_port

SCRIPT = r"""
import argparse, os, signal, sys, time
import torch
import torch.distributed as dist

parser = argparse.ArgumentParser()
parser.add_argument("--note")
parser.add_argument("--fail_rank", type=int, default=-1)
parser.add_argument("--wait_for_signal", default="False")
parser.add_argument("--exit_rank", type=int, default=-1)
parser.add_argument("--exit_code", type=int, default=0)
parser.add_argument("--checkpoint_seconds", type=float, default=0)
args = parser.parse_args()
rank = int(os.environ["RANK"])
if args.wait_for_signal == "True":
    def checkpoint(signum, frame):
        print(f"CHECKPOINT rank={rank}", flush=True)
        if rank == args.exit_rank:
            sys.exit(args.exit_code)
        time.sleep(args.checkpoint_seconds)
        with open(os.path.join(os.environ["SM_MODEL_DIR"], f"checkpoint-{rank}"), "w") as f:
            f.write("saved")
        sys.exit(0)
    signal.signal(signal.SIGTERM, checkpoint)
    open(os.path.join(os.environ["SM_MODEL_DIR"], f"ready-{rank}"), "w").close()
    time.sleep(600)
dist.init_process_group("gloo")
if rank == args.fail_rank:
    raise ValueError(f"boom on rank {rank}")
if rank == args.exit_rank:
    sys.exit(args.exit_code)
value = torch.tensor([float(rank + 1)])
dist.all_reduce(value)
print(f"RESULT rank={rank} world={dist.get_world_size()} sum={value.item()} note={args.note!r}", flush=True)
if rank == 0:
    with open(os.path.join(os.environ["SM_MODEL_DIR"], "result.txt"), "w") as f:
        f.write(f"{dist.get_world_size()} {value.item()}")
dist.barrier()
dist.destroy_process_group()
"""


def node_tree(root: Path, host: str, hosts: list[str], hps: dict[str, str]) -> Path:
    base = root / host / "opt" / "ml"
    config = base / "input" / "config"
    config.mkdir(parents=True)
    (config / "resourceconfig.json").write_text(json.dumps({"current_host": host, "hosts": hosts}))
    (config / "hyperparameters.json").write_text(json.dumps(hps))
    (config / "inputdataconfig.json").write_text("{}")
    for sub in ("model", "output/data"):
        (base / sub).mkdir(parents=True)
    return base


def start(
    base: Path,
    code: Path,
    ports: tuple[int, int],
    nproc: int = 2,
    extra: dict[str, str] | None = None,
    entry_point: str = "train.py",
) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "SAGEMAKER_BASE_DIR": str(base),
        "SMIMG_CODE_DIR": str(code),
        "SMIMG_ENTRY_POINT": entry_point,
        "SMIMG_NPROC_PER_NODE": str(nproc),
        "SMIMG_MASTER_PORT": str(ports[0]),
        "SMIMG_WATCH_PORT": str(ports[1]),
        "SMIMG_HOST_ADDRESSES": json.dumps({"algo-1": "127.0.0.1", "algo-2": "127.0.0.1"}),
        "SMIMG_ABORT_GRACE": "5",
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        **(extra or {}),
    }
    return subprocess.Popen(
        [str(Path(sys.executable).parent / "smimg-train"), "train"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def code_folder(root: Path, script: str, text: str) -> Path:
    folder = root / Path(script).stem
    folder.mkdir()
    (folder / script).write_text(text)
    return folder


@pytest.fixture
def code(tmp_path: Path) -> Path:
    return code_folder(tmp_path, "train.py", SCRIPT)


def run_two_nodes(tmp_path: Path, code: Path, hps: dict[str, str]) -> tuple[list[int], list[str], list[Path]]:
    hosts = ["algo-2", "algo-1"]
    ports = (free_port(), free_port())
    bases = [node_tree(tmp_path, h, hosts, hps) for h in ("algo-1", "algo-2")]
    procs = [start(base, code, ports) for base in bases]
    outputs = [p.communicate(timeout=240)[0] for p in procs]
    return [p.returncode for p in procs], outputs, bases


def test_two_nodes_all_reduce_over_world_of_four(tmp_path: Path, code: Path) -> None:
    note = "two words; rm -rf / 'q' \"dq\""
    codes, outputs, bases = run_two_nodes(tmp_path, code, {"note": json.dumps(note)})
    assert codes == [0, 0], outputs
    results = [line for out in outputs for line in out.splitlines() if "RESULT" in line]
    assert len(results) == 4
    assert all("world=4 sum=10.0" in line and repr(note) in line for line in results), results
    # Each rank's lines on the console, whole, after its local rank as torchrun's --tee shows it, and all of them
    # before the node says how the job ended.
    assert all(line.startswith(f"[default{int(line.split('rank=')[1][0]) % 2}]:RESULT") for line in results), results
    for out in outputs:
        lines = out.splitlines()
        ends = [i for i, line in enumerate(lines) if line.endswith("job completed")]
        assert ends and max(i for i, line in enumerate(lines) if "RESULT" in line) < ends[0], out
    assert (bases[0] / "model" / "result.txt").read_text() == "4 10.0"
    assert not (bases[1] / "model" / "result.txt").exists()
    assert all((base / "output" / "success").is_file() for base in bases)
    assert "node rank 1" in outputs[1] and "master algo-1 (127.0.0.1" in outputs[1]


def test_one_failing_rank_fails_both_nodes_promptly(tmp_path: Path, code: Path) -> None:
    started = time.monotonic()
    codes, outputs, bases = run_two_nodes(tmp_path, code, {"fail_rank": "3"})
    elapsed = time.monotonic() - started
    assert all(rc != 0 for rc in codes), (codes, outputs)
    assert elapsed < 90, f"took {elapsed:.0f}s"
    failing = (bases[1] / "output" / "failure").read_text()
    assert "ValueError: boom on rank 3" in failing
    assert len(failing) <= 1024
    assert "ExitCode" in failing and "algo-2" in failing
    peer = (bases[0] / "output" / "failure").read_text()
    assert "peer algo-2 failed" in peer and "boom on rank 3" in peer
    assert not any((base / "output" / "success").exists() for base in bases)


def test_user_failure_file_is_kept(tmp_path: Path, code: Path) -> None:
    base = node_tree(tmp_path, "algo-1", ["algo-1"], {"fail_rank": "0"})
    (base / "output" / "failure").write_text("my own reason")
    proc = start(base, code, (free_port(), free_port()), nproc=1)
    proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert (base / "output" / "failure").read_text() == "my own reason"


def test_sigterm_reaches_the_script_which_saves_a_checkpoint(tmp_path: Path, code: Path) -> None:
    base = node_tree(tmp_path, "algo-1", ["algo-1"], {"wait_for_signal": "true"})
    proc = start(base, code, (free_port(), free_port()), nproc=2)
    deadline = time.monotonic() + 120
    while not all((base / "model" / f"ready-{r}").exists() for r in (0, 1)):
        assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()[0]
        time.sleep(0.2)
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    output = proc.communicate(timeout=60)[0]
    assert proc.returncode == 128 + signal.SIGTERM, output
    assert time.monotonic() - sent < 30
    assert {p.name for p in (base / "model").glob("checkpoint-*")} == {"checkpoint-0", "checkpoint-1"}
    assert "forwarding SIGTERM" in output


def test_a_rank_that_exits_with_a_code_fails_the_job_with_that_code(tmp_path: Path, code: Path) -> None:
    # Rank 1 leaves with sys.exit(3) and no traceback; rank 0, in an all_reduce, dies of it with a gloo traceback.
    base = node_tree(tmp_path, "algo-1", ["algo-1"], {"exit_rank": "1", "exit_code": "3"})
    proc = start(base, code, (free_port(), free_port()), nproc=2)
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode == 3, output
    assert (base / "output" / "failure").read_text() == (
        "ExitCode 3 on algo-1: rank 1 (local rank 1) exited with code 3 and printed no traceback; "
        "see its log lines above"
    )


def test_a_peer_failing_during_a_stop_leaves_the_survivor_its_grace(tmp_path: Path, code: Path) -> None:
    # SageMaker stops both nodes; algo-2's rank fails in its SIGTERM handler while algo-1's is saving a checkpoint
    # that takes longer than the abort grace.
    hosts = ["algo-1", "algo-2"]
    hps = {"wait_for_signal": "true", "exit_rank": "1", "exit_code": "1", "checkpoint_seconds": "5"}
    ports = (free_port(), free_port())
    bases = [node_tree(tmp_path, host, hosts, hps) for host in hosts]
    grace = {"SMIMG_ABORT_GRACE": "1", "SMIMG_STOP_GRACE": "12"}
    procs = [start(base, code, ports, nproc=1, extra=grace) for base in bases]
    ready = [bases[0] / "model" / "ready-0", bases[1] / "model" / "ready-1"]
    deadline = time.monotonic() + 120
    while not all(path.exists() for path in ready):
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs), [p.kill() for p in procs]
        time.sleep(0.2)
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    time.sleep(1)
    procs[0].send_signal(signal.SIGTERM)  # a second stop request, as impatient tooling sends
    outputs = [proc.communicate(timeout=60)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [143, 143], outputs
    survivor = outputs[0]
    assert {path.name for path in (bases[0] / "model").glob("checkpoint-*")} == {"checkpoint-0"}, survivor
    assert survivor.count("CHECKPOINT rank=0") == 1, survivor  # the script's handler ran once
    assert survivor.count("forwarding SIGTERM") == 1 and "(SIGKILL in 12s)" in survivor, survivor
    assert "received SIGTERM: already stopping" in survivor, survivor
    assert "peer algo-2 failed: already stopping" in survivor, survivor


def test_a_hyperparameter_too_long_for_linux_fails_with_a_reason(tmp_path: Path, code: Path) -> None:
    base = node_tree(tmp_path, "algo-1", ["algo-1"], {"note": json.dumps("x" * 200_000)})
    proc = start(base, code, (free_port(), free_port()), nproc=1)
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode == 1, output[-3000:]
    failure = (base / "output" / "failure").read_text()
    assert failure.startswith("smimg: cannot launch: hyperparameter 'note' (200,000 characters)"), failure
    assert "2,500 characters" in failure and "input channel" in failure, failure
    assert "Traceback" not in output


def test_a_script_that_exits_without_a_traceback_has_its_last_stderr_lines_as_the_reason(
    tmp_path: Path, code: Path
) -> None:
    # argparse says why on stderr and exits 2: that line is the reason a user needs in FailureReason.
    base = node_tree(tmp_path, "algo-1", ["algo-1"], {"fail_rank": '"ten"'})
    proc = start(base, code, (free_port(), free_port()), nproc=1, extra={"SMIMG_LAUNCHER": "python"})
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode == 2, output
    failure = (base / "output" / "failure").read_text()
    assert failure.startswith(
        "ExitCode 2 on algo-1: python exited with code 2, no traceback captured; its last lines on stderr:\nusage: "
    ), failure
    assert failure.endswith("train.py: error: argument --fail_rank: invalid int value: 'ten'"), failure


def test_a_launcher_missing_from_the_image_fails_with_a_reason(tmp_path: Path, code: Path) -> None:
    base = node_tree(tmp_path, "algo-1", ["algo-1"], {})
    proc = start(base, code, (free_port(), free_port()), nproc=1, extra={"PATH": "/usr/bin:/bin"})
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode == 1, output
    failure = (base / "output" / "failure").read_text()
    assert failure.startswith("smimg: cannot launch: torchrun is not installed in this image"), failure
    assert "Traceback" not in output


# Each host sleeps as told, after telling the test it started; launched with `python`, once per host.
LATE = r"""
import json, os, sys, time
host = os.environ["SM_CURRENT_HOST"]
open(os.path.join(os.environ["SM_MODEL_DIR"], "started"), "w").close()
time.sleep(json.loads(os.environ["SM_HP_SLEEP"])[host])
if host in json.loads(os.environ.get("SM_HP_FAIL", "[]")):
    sys.exit(f"{host} was told to fail")
print(f"DONE {host}", flush=True)
"""


@pytest.fixture
def late(tmp_path: Path) -> Path:
    return code_folder(tmp_path, "late.py", LATE)


def wait_started(bases: list[Path], procs: list[subprocess.Popen[str]]) -> None:
    """Until every host's script has begun (it leaves model/started)."""
    deadline = time.monotonic() + 60
    while not all((base / "model" / "started").exists() for base in bases):
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs), [p.kill() for p in procs]
        time.sleep(0.1)


def test_a_host_finishing_long_after_the_others_still_succeeds(tmp_path: Path, late: Path) -> None:
    hosts, ports = ["algo-1", "algo-2"], (free_port(), free_port())
    hps = {"sleep": json.dumps({"algo-1": 0, "algo-2": 6})}
    bases = [node_tree(tmp_path, host, hosts, hps) for host in hosts]
    # The master waits for as long as algo-2 keeps answering: here 6 s, six times the peer timeout.
    extra = {"SMIMG_LAUNCHER": "python", "SMIMG_PEER_TIMEOUT": "1"}
    procs = [start(base, late, ports, extra=extra, entry_point="late.py") for base in bases]
    outputs = [proc.communicate(timeout=120)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], outputs
    assert "waiting for the other nodes to finish" in outputs[0], outputs[0]
    assert all((base / "output" / "success").is_file() for base in bases)


def test_a_peer_that_falls_silent_is_lost_after_the_peer_timeout(tmp_path: Path, late: Path) -> None:
    # A vanished instance or a partition closes no connection: only the silence tells. SIGSTOP freezes algo-2's
    # entrypoint (its training process runs on), as a lost instance would fall silent.
    hosts, ports = ["algo-1", "algo-2"], (free_port(), free_port())
    bases = [node_tree(tmp_path, host, hosts, {"sleep": json.dumps({"algo-1": 60, "algo-2": 60})}) for host in hosts]
    extra = {"SMIMG_LAUNCHER": "python", "SMIMG_PEER_TIMEOUT": "2", "SMIMG_ABORT_GRACE": "2"}
    procs = [start(base, late, ports, extra=extra, entry_point="late.py") for base in bases]
    wait_started(bases, procs)
    procs[1].send_signal(signal.SIGSTOP)
    stopped = time.monotonic()
    try:
        master_output = procs[0].communicate(timeout=30)[0]
    finally:
        procs[1].send_signal(signal.SIGCONT)
    assert procs[0].returncode != 0 and time.monotonic() - stopped < 15, master_output
    failure = (bases[0] / "output" / "failure").read_text()
    assert failure.startswith("peer algo-2 failed: algo-2 sent nothing for 2s"), failure
    worker_output = procs[1].communicate(timeout=30)[0]
    assert procs[1].returncode != 0, worker_output
    assert "DONE" not in master_output + worker_output


def test_a_worker_that_cannot_reach_the_master_fails_with_a_reason(tmp_path: Path, code: Path) -> None:
    base = node_tree(tmp_path, "algo-2", ["algo-1", "algo-2"], {})
    watch = free_port()
    proc = start(base, code, (free_port(), watch), extra={"SMIMG_RENDEZVOUS_TIMEOUT": "1"})
    output = proc.communicate(timeout=60)[0]
    assert proc.returncode == 1, output
    failure = (base / "output" / "failure").read_text()
    assert failure.startswith(f"smimg: cannot launch: could not reach the master's entrypoint at 127.0.0.1:{watch}")
    assert "security group" in failure and "Traceback" not in output


def test_a_shell_script_entry_point_runs_once_per_host_like_the_toolkit(tmp_path: Path) -> None:
    code = tmp_path / "sh"
    code.mkdir()
    (code / "run.sh").write_text(
        '#!/bin/bash\n[[ -n "$BASH_VERSION" ]] && echo "SCRIPT bash host=$SM_CURRENT_HOST args=$* $MASTER_ADDR"\n'
        'echo ran >> "$SM_MODEL_DIR/ran.txt"\n'
    )
    base = node_tree(tmp_path, "algo-1", ["algo-1"], {"note": json.dumps("a b")})
    proc = start(base, code, (free_port(), free_port()), nproc=2, entry_point="run.sh")
    output = proc.communicate(timeout=60)[0]
    assert proc.returncode == 0, output
    assert "SCRIPT bash host=algo-1 args=--note a b 127.0.0.1" in output, output
    assert (base / "model" / "ran.txt").read_text() == "ran\n"  # once, though 2 processes per host were asked
    assert (base / "output" / "success").is_file()


def test_a_stop_while_the_master_waits_for_a_late_host_is_a_stop(tmp_path: Path, late: Path) -> None:
    hosts, ports = ["algo-1", "algo-2"], (free_port(), free_port())
    bases = [node_tree(tmp_path, host, hosts, {"sleep": json.dumps({"algo-1": 0, "algo-2": 60})}) for host in hosts]
    procs = [start(base, late, ports, extra={"SMIMG_LAUNCHER": "python"}, entry_point="late.py") for base in bases]
    wait_started(bases, procs)
    time.sleep(2)  # algo-1's script is done: its entrypoint waits for algo-2
    for proc in procs:  # StopTrainingJob signals every host
        proc.send_signal(signal.SIGTERM)
    outputs = [proc.communicate(timeout=30)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [143, 143], outputs
    assert "stopped by SIGTERM while waiting for the other nodes" in outputs[0], outputs[0]
    assert not any((base / "output" / name).exists() for base in bases for name in ("success", "failure"))


def test_a_host_that_finished_does_not_succeed_when_a_peer_fails_after_it(tmp_path: Path, late: Path) -> None:
    hosts, ports = ["algo-1", "algo-2", "algo-3"], (free_port(), free_port())
    hps = {"sleep": json.dumps({"algo-1": 0, "algo-2": 0, "algo-3": 3}), "fail": json.dumps(["algo-3"])}
    bases = [node_tree(tmp_path, host, hosts, hps) for host in hosts]
    procs = [start(base, late, ports, extra={"SMIMG_LAUNCHER": "python"}, entry_point="late.py") for base in bases]
    outputs = [proc.communicate(timeout=60)[0] for proc in procs]
    assert all(proc.returncode != 0 for proc in procs), outputs
    assert "DONE algo-2" in outputs[1], outputs[1]
    assert not any((base / "output" / "success").exists() for base in bases)
    for base in bases[:2]:
        failure = (base / "output" / "failure").read_text()
        assert failure.startswith("peer algo-3 failed: ExitCode 1 on algo-3"), failure
