"""The container's PID 1: ``train`` plans and launches the job; any other command runs as given (debugging).

It stays the parent of the launcher (no exec) so that it can forward SIGTERM within SageMaker's 120 s window,
share fate with the other nodes, and write /opt/ml/output/failure from the failing rank's traceback.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import queue
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

from smimg_entrypoint import __version__
from smimg_entrypoint.cluster import Cluster, Paths, read_cluster
from smimg_entrypoint.hyperparameters import decode, split
from smimg_entrypoint.plan import Code, Devices, LaunchPlan, PlanError, choose_code, plan_launch
from smimg_entrypoint.watch import Master, PeerFailure, Worker

FAILURE_LIMIT = 1024
_host = socket.gethostname()


def log(message: str, rank: int | None = None) -> None:
    where = _host if rank is None else f"{_host} node{rank}"
    print(f"smimg-train {where}: {message}", flush=True)


def _env_float(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


def detect_devices() -> Devices:
    gpus = 0
    if shutil.which("nvidia-smi"):
        proc = subprocess.run(["nvidia-smi", "--list-gpus"], capture_output=True, text=True)
        gpus = sum(1 for line in proc.stdout.splitlines() if line.startswith("GPU "))
    visible = os.environ.get("NVIDIA_VISIBLE_DEVICES", "")
    if gpus == 0 and visible and visible not in ("all", "none", "void") and os.path.exists("/dev/nvidiactl"):
        gpus = len(visible.split(","))
    neuron = len(glob.glob("/dev/neuron*")) * 2
    interfaces = tuple(sorted(os.listdir("/sys/class/net"))) if os.path.isdir("/sys/class/net") else ()
    return Devices(
        gpus=gpus,
        neuron_cores=neuron,
        cpus=os.cpu_count() or 1,
        efa=bool(glob.glob("/dev/infiniband/uverbs*")),
        interfaces=interfaces,
    )


def write_failure(paths: Paths, text: str) -> None:
    """Write the failure reason unless one is there already (the user's own reason wins)."""
    try:
        paths.failure.parent.mkdir(parents=True, exist_ok=True)
        with paths.failure.open("x") as handle:
            handle.write(text[-FAILURE_LIMIT:])
    except FileExistsError:
        pass
    except OSError as exc:
        log(f"could not write {paths.failure}: {exc}")


def root_cause(log_dir: str) -> str | None:
    """The traceback tail of the rank that failed first, from torchrun's per-rank stderr logs."""
    candidates = []
    for path in glob.glob(os.path.join(log_dir, "*", "attempt_*", "*", "stderr.log")):
        text = Path(path).read_text(errors="replace")
        if "Traceback (most recent call last)" in text or "Error" in text:
            candidates.append((os.path.getmtime(path), path, text))
    if not candidates:
        return None
    _, path, text = min(candidates)
    local_rank = Path(path).parent.name
    start = text.rfind("Traceback (most recent call last)")
    body = text[start:] if start >= 0 else text
    body = "\n".join(line.split("]:", 1)[1] if line.startswith("[rank") else line for line in body.splitlines())
    return f"local rank {local_rank}: {body.strip()}"


def fetch_code(code: Code, paths: Paths) -> None:
    """Put script-mode code in /opt/ml/code: from S3 (through boto3) or a local tarball."""
    assert code.fetch_from is not None
    source = code.fetch_from
    target = Path(code.directory)
    target.mkdir(parents=True, exist_ok=True)
    log(f"fetching code from {source} into {target}")
    with tempfile.TemporaryDirectory() as tmp:
        archive = source
        if source.startswith("s3://"):
            import boto3  # the DLCs carry it (sagemaker-training needs it); only script mode from S3 uses it

            bucket, _, key = source[len("s3://") :].partition("/")
            archive = os.path.join(tmp, "sourcedir.tar.gz")
            boto3.client("s3", endpoint_url=os.environ.get("S3_ENDPOINT_URL")).download_file(bucket, key, archive)
        with tarfile.open(archive, "r:*") as tar:
            tar.extractall(target, filter="data") if hasattr(tarfile, "data_filter") else tar.extractall(target)


def install_requirements(code_dir: str) -> None:
    """Install the code's requirements.txt, only when pip says something is missing."""
    requirements = os.path.join(code_dir, "requirements.txt")
    if not os.path.isfile(requirements):
        return
    base = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "-r", requirements]
    if os.path.isfile("/opt/smimg/base-constraints.txt"):
        base += ["-c", "/opt/smimg/base-constraints.txt"]
    probe = subprocess.run([*base, "--dry-run", "--quiet", "--report", "-"], capture_output=True, text=True)
    try:
        pending = [item["metadata"]["name"] for item in json.loads(probe.stdout)["install"]]
    except (ValueError, KeyError):
        pending = ["(unknown)"]
    if not pending:
        log(f"{requirements}: already satisfied")
        return
    log(f"{requirements}: installing {', '.join(pending)}")
    subprocess.run(base, check=True)


def wait_for_hosts(hosts: list[str], timeout: float) -> None:
    """SageMaker warns host names may not resolve at once: retry each until the deadline."""
    deadline = time.monotonic() + timeout
    pending = list(hosts)
    delay = 0.1
    while pending:
        still = []
        for host in pending:
            try:
                socket.getaddrinfo(host, None)
            except OSError:
                still.append(host)
        pending = still
        if not pending:
            return
        if time.monotonic() > deadline:
            raise PlanError(f"host names did not resolve within {timeout:.0f}s: {', '.join(pending)}")
        time.sleep(delay)
        delay = min(delay * 2, 5.0)


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            fields = Path(stat).read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(Path(stat).parent.name))
        except (OSError, IndexError, ValueError):
            continue
    found, stack = [], [root]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def _signal_tree(pid: int, sig: int, include_root: bool) -> None:
    targets = _descendants(pid) + ([pid] if include_root else [])
    for target in targets:
        with contextlib.suppress(ProcessLookupError):
            os.kill(target, sig)


class Job:
    """One launch: the child process, the peers, and how it ended."""

    def __init__(self, plan: LaunchPlan, paths: Paths) -> None:
        self.plan = plan
        self.paths = paths
        self.stop_signal: int | None = None
        self.stop_deadline: float | None = None
        self.peer_failure: PeerFailure | None = None
        self.child: subprocess.Popen[bytes] | None = None

    def on_signal(self, signum: int, _frame: object) -> None:
        if self.stop_signal is None:
            grace = _env_float("SMIMG_STOP_GRACE", 110.0)
            log(
                f"received {signal.Signals(signum).name}: forwarding SIGTERM to the training processes "
                f"(SIGKILL in {grace:.0f}s)"
            )
            self.stop_signal = signum
            self.stop_deadline = time.monotonic() + grace
            if self.child is not None:
                # The workers get SIGTERM first and the launcher later, so torchrun's own 30 s kill timer
                # does not cut a checkpoint short.
                _signal_tree(self.child.pid, signal.SIGTERM, include_root=False)

    def run(self) -> int:
        plan = self.plan
        log_dir = tempfile.mkdtemp(prefix="smimg-logs-")
        argv = list(plan.argv)
        if plan.launcher == "torchrun":
            # Per-rank logs (and "[rankN]:" prefixes on the console) let the failure file name the failing rank.
            argv[1:1] = ["--log-dir", log_dir, "--tee", "3"]
        env = dict(os.environ)
        env.update(plan.env)
        watch_port = int(os.environ.get("SMIMG_WATCH_PORT", plan.master_port + 1))
        join_timeout = _env_float("SMIMG_RENDEZVOUS_TIMEOUT", 600.0)
        master: Master | None = None
        worker: Worker | None = None
        if plan.nnodes > 1 and plan.is_master:
            master = Master(watch_port, [h for h in plan.hosts if h != plan.master_host])
        elif plan.nnodes > 1:
            worker = Worker(plan.hosts[plan.node_rank], plan.master_addr, watch_port, time.monotonic() + join_timeout)
        peers = master or worker
        events: queue.Queue[PeerFailure] = peers.events if peers is not None else queue.Queue()

        log("launching: " + shlex.join(argv), plan.node_rank)
        self.child = subprocess.Popen(argv, env=env, cwd=plan.cwd, start_new_session=True)
        join_deadline = time.monotonic() + join_timeout
        while True:
            try:
                rc = self.child.wait(timeout=0.05)
                break
            except subprocess.TimeoutExpired:
                pass
            if master is not None and time.monotonic() > join_deadline and master.missing():
                master.abort(
                    PeerFailure(
                        "master",
                        f"hosts never joined within {join_timeout:.0f}s: " + ", ".join(sorted(master.missing())),
                    )
                )
            if self.peer_failure is None:
                try:
                    self.peer_failure = events.get_nowait()
                except queue.Empty:
                    pass
                else:
                    log(f"stopping: peer {self.peer_failure.host} failed", plan.node_rank)
                    _signal_tree(self.child.pid, signal.SIGTERM, include_root=True)
                    self.stop_deadline = time.monotonic() + _env_float("SMIMG_ABORT_GRACE", 15.0)
            if self.stop_deadline is not None and time.monotonic() > self.stop_deadline:
                log("grace period over: SIGKILL", plan.node_rank)
                _signal_tree(self.child.pid, signal.SIGKILL, include_root=True)
                self.stop_deadline = None

        if self.stop_signal is not None:
            log(f"stopped by {signal.Signals(self.stop_signal).name} (launcher exit {rc})", plan.node_rank)
            if worker is not None:
                worker.close()
            if master is not None:
                master.close()
            return 128 + self.stop_signal

        ok = rc == 0 and self.peer_failure is None
        if ok and master is not None:
            silent = master.wait_all_done(_env_float("SMIMG_FINISH_TIMEOUT", 300.0))
            if silent:
                self.peer_failure = (
                    master.events.get()
                    if not master.events.empty()
                    else PeerFailure(",".join(sorted(silent)), "did not report success")
                )
                ok = False
        if not ok:
            if (
                self.peer_failure is not None
                and rc in (0, -15, 143, 1)
                and self.peer_failure.host != plan.hosts[plan.node_rank]
            ):
                reason = f"peer {self.peer_failure.host} failed: {self.peer_failure.reason}"
            else:
                cause = root_cause(log_dir) or "no traceback captured"
                reason = f"ExitCode {rc} on {plan.hosts[plan.node_rank]} {cause}"
            write_failure(self.paths, reason)
            log(f"job failed: {reason.splitlines()[0][:300]}", plan.node_rank)
            if worker is not None:
                worker.report(False, reason[-FAILURE_LIMIT:])
            if master is not None:
                master.abort(PeerFailure(plan.master_host, reason[-FAILURE_LIMIT:]))
        elif worker is not None:
            worker.report(True)
            worker.finished.wait(_env_float("SMIMG_FINISH_TIMEOUT", 300.0))
        if master is not None:
            master.close()
        if worker is not None:
            worker.close()
        if ok:
            log("job completed", plan.node_rank)
            return 0
        return rc if rc > 0 else 1


def _host_addresses() -> Mapping[str, str] | None:
    raw = os.environ.get("SMIMG_HOST_ADDRESSES")
    return json.loads(raw) if raw else None


def train(paths: Paths | None = None) -> int:
    """Plan from /opt/ml and the environment, prepare the code, wait for the hosts, launch, report."""
    paths = paths or Paths()
    try:
        cluster: Cluster = read_cluster(paths)
        _, reserved = split(decode(cluster.hyperparameters))
        code_dir_has_files = paths.code.is_dir() and any(paths.code.iterdir())
        code = choose_code(reserved, os.environ, paths, code_dir_has_files)
        plan = plan_launch(cluster, os.environ, detect_devices(), code, paths, _host_addresses())
    except (PlanError, FileNotFoundError, KeyError, ValueError) as exc:
        log(f"cannot launch: {exc}")
        write_failure(paths, f"smimg: cannot launch: {exc}")
        return 1
    log(
        f"smimg-entrypoint {__version__}: {plan.launcher} on {plan.nnodes} node(s) x {plan.nproc_per_node} "
        f"process(es); this is {cluster.current_host}, node rank {plan.node_rank}, master "
        f"{plan.master_host} ({plan.master_addr}:{plan.master_port})",
        plan.node_rank,
    )
    try:
        if code.fetch_from:
            fetch_code(code, paths)
        install_requirements(code.directory)
        if _host_addresses() is None:
            wait_for_hosts(list(plan.hosts), _env_float("SMIMG_DNS_TIMEOUT", 900.0))
    except (PlanError, OSError, subprocess.CalledProcessError, tarfile.TarError) as exc:
        log(f"cannot launch: {exc}", plan.node_rank)
        write_failure(paths, f"smimg: cannot launch: {exc}")
        return 1
    job = Job(plan, paths)
    signal.signal(signal.SIGTERM, job.on_signal)
    signal.signal(signal.SIGINT, job.on_signal)
    return job.run()


def main() -> None:
    """`smimg-train train` runs the job; `smimg-train --version`; anything else is executed as given."""
    argv = sys.argv[1:]
    if argv == ["--version"]:
        print(f"smimg-entrypoint {__version__}")
        return
    if not argv or argv[0] != "train":
        command = argv or ["/bin/bash"]
        os.execvp(command[0], command)
    sys.exit(train())


def launch_main() -> None:
    """`smimg-launch`: the same launch for SDK v3 ModelTrainer's SourceCode(command="smimg-launch")."""
    if sys.argv[1:] == ["--version"]:
        print(f"smimg-entrypoint {__version__}")
        return
    sys.exit(train())
