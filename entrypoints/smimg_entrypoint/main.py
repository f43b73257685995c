"""The container's PID 1: ``train`` plans and launches the job; any other command runs as given (debugging).

It stays the parent of the launcher (no exec) so that it can forward SIGTERM within SageMaker's 120 s window,
share fate with the other nodes, and write /opt/ml/output/failure from the failing rank's traceback.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import glob
import json
import os
import queue
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from smimg_entrypoint import __version__, contract
from smimg_entrypoint.cluster import Cluster, Paths, read_cluster
from smimg_entrypoint.hyperparameters import Hyperparameters, parse
from smimg_entrypoint.logs import RankLogs, read_end
from smimg_entrypoint.plan import SMDDP_TOOLS, Code, Devices, LaunchPlan, choose_code, plan_launch, too_long
from smimg_entrypoint.settings import PlanError, Settings
from smimg_entrypoint.watch import Master, PeerFailure, Worker

_host = socket.gethostname()


def log(message: str, rank: int | None = None) -> None:
    where = _host if rank is None else f"{_host} node{rank}"
    print(f"{contract.TRAIN_SCRIPT} {where}: {message}", flush=True)


def detect_devices(instance_type: str) -> Devices:
    gpus = 0
    if shutil.which("nvidia-smi"):
        proc = subprocess.run(["nvidia-smi", "--list-gpus"], capture_output=True, text=True)
        gpus = sum(1 for line in proc.stdout.splitlines() if line.startswith("GPU "))
    visible = os.environ.get("NVIDIA_VISIBLE_DEVICES", "")
    if gpus == 0 and visible and visible not in ("all", "none", "void") and os.path.exists("/dev/nvidiactl"):
        gpus = len(visible.split(","))
    interfaces = tuple(sorted(os.listdir("/sys/class/net"))) if os.path.isdir("/sys/class/net") else ()
    return Devices(
        gpus=gpus,
        neuron_cores=neuron_cores(instance_type),
        cpus=os.cpu_count() or 1,
        efa=bool(glob.glob("/dev/infiniband/uverbs*")),
        interfaces=interfaces,
        torch_version=installed_version("torch"),  # not `import torch`: seconds, and memory
        tools=frozenset(tool for tool in SMDDP_TOOLS if shutil.which(tool)),
    )


def installed_version(package: str) -> str | None:
    """A package's version from its metadata folder's name, the first on sys.path as importlib.metadata finds it,
    without that module's import (a third of the entrypoint's start-up)."""
    pattern = re.compile(rf"{re.escape(package)}-([^-]+?)(-py[0-9.]+)?\.(dist|egg)-info")
    for folder in sys.path:
        with contextlib.suppress(OSError):
            for name in sorted(os.listdir(folder or ".")):
                if match := pattern.fullmatch(name):
                    return match.group(1)
    # Other installs (an .egg, a develop install's unversioned egg-info): the slow, thorough way.
    import importlib.metadata

    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def neuron_cores(instance_type: str) -> int:
    """As sagemaker-training counts them: 64 on trn2.48xlarge (which neuron-ls under-reports), else neuron-ls's
    cores; without neuron-ls, two per /dev/neuron* device (trn1, inf2)."""
    if instance_type == "ml.trn2.48xlarge":
        return 64
    devices = glob.glob("/dev/neuron*")
    if not devices:
        return 0
    if shutil.which("neuron-ls"):
        proc = subprocess.run(["neuron-ls", "-j"], capture_output=True, text=True)
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            return sum(int(item.get("nc_count", 0)) for item in json.loads(proc.stdout))
    return len(devices) * 2


def write_failure(paths: Paths, text: str) -> None:
    """Write the failure reason unless one is there already (the user's own reason wins)."""
    try:
        paths.failure.parent.mkdir(parents=True, exist_ok=True)
        with paths.failure.open("x") as handle:
            handle.write(text[-contract.FAILURE_LIMIT :])
    except FileExistsError:
        pass
    except OSError as exc:
        log(f"could not write {paths.failure}: {exc}")


def write_success(paths: Paths) -> None:
    """An empty /opt/ml/output/success, as sagemaker-training leaves after a job that succeeded (pipelines and
    output.tar.gz readers look for it)."""
    try:
        paths.success.parent.mkdir(parents=True, exist_ok=True)
        paths.success.touch()
    except OSError as exc:
        log(f"could not write {paths.success}: {exc}")


# What a collective says when the other side of its connection died: gloo, NCCL and c10d's words for it.
_ECHOES = (
    "Connection closed by peer",
    "Connection reset by peer",
    "remote process exited",
    "Broken pipe",
    "DistNetworkError",
)
ECHO_WAIT = 5.0  # seconds a node whose rank died of a peer's death waits for that peer's own report


def _is_echo(cause: str | None) -> bool:
    return cause is not None and any(echo in cause for echo in _ECHOES)


TRACEBACK_BYTES = 1 << 20  # of a rank's stderr log searched for its last traceback (its end is in the failure file)


def root_cause(log_dir: str, local_rank: int | None = None) -> str | None:
    """The traceback tail of a local rank (by default the first to fail), from torchrun's per-rank stderr logs."""
    candidates = []
    rank_dir = "*" if local_rank is None else str(local_rank)
    for path in glob.glob(os.path.join(log_dir, "*", "attempt_*", rank_dir, "stderr.log")):
        text = read_end(path, TRACEBACK_BYTES)
        if "Traceback (most recent call last)" in text or "Error" in text:
            candidates.append((os.path.getmtime(path), path, text))
    if not candidates:
        return None
    _, path, text = min(candidates)
    start = text.rfind("Traceback (most recent call last)")
    body = text[start:] if start >= 0 else text
    body = "\n".join(line.split("]:", 1)[1] if line.startswith("[rank") else line for line in body.splitlines())
    return f"local rank {Path(path).parent.name}: {body.strip()}"


def _ended(what: str, code: int) -> str:
    if code >= 0:
        return f"{what} exited with code {code}"
    try:
        return f"{what} was killed by {signal.Signals(-code).name}"
    except ValueError:
        return f"{what} was killed by signal {-code}"


@dataclass(frozen=True)
class RankFailure:
    """A failed rank as torchrun's failure summary names it."""

    rank: int
    local_rank: int
    exitcode: int  # negative: killed by that signal

    @property
    def status(self) -> int:
        """The exit status a shell reports for it: the code, or 128 + the signal."""
        if self.exitcode < 0:
            return 128 - self.exitcode
        return self.exitcode or 1  # a failure never exits 0

    def describe(self) -> str:
        return _ended(f"rank {self.rank} (local rank {self.local_rank})", self.exitcode)


# torchrun exits 1 whatever its ranks' codes were; its ChildFailedError summary is the one place that names each
# failed rank's code (its error file has them only for scripts decorated with @record), first observed failure last.
_FAILED_RANK = re.compile(r"rank\s*: (\d+) \(local_rank: (\d+)\)\s+exitcode\s*: (-?\d+)")
TAIL_BYTES = 65536  # of the launcher's stderr kept: the summary ends it, a node's 64 failed ranks take 20 KiB
TAIL_WAIT = 5.0  # seconds to wait for the launcher's stderr to close once it exited


def rank_failures(stderr: str) -> list[RankFailure]:
    """The ranks that the launcher's last failure summary names, its first observed failure first."""
    start = stderr.rfind("Failures:")
    if start < 0:
        return []
    found = [RankFailure(int(r), int(lr), int(c)) for r, lr, c in _FAILED_RANK.findall(stderr, start)]
    return found[-1:] + found[:-1]


class StderrTail:
    """Copies the launcher's stderr to ours as it comes, keeping its end for ``rank_failures``."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.end = b""
        self._waited = False
        self._thread = threading.Thread(target=self._copy, args=(stream,), daemon=True)
        self._thread.start()

    def _copy(self, stream: IO[bytes]) -> None:
        with stream:
            while chunk := os.read(stream.fileno(), 65536):
                # Keep draining if our stderr is gone: a launcher blocked on a full pipe would hang the job.
                with contextlib.suppress(OSError, ValueError):
                    sys.stderr.buffer.write(chunk)
                    sys.stderr.buffer.flush()
                self.end = (self.end + chunk)[-TAIL_BYTES:]

    def text(self) -> str:
        """The stream's end once it closed; a process that outlived the launcher and holds it is waited for once,
        for ``TAIL_WAIT`` seconds, however often this is asked."""
        if not self._waited:
            self._thread.join(TAIL_WAIT)
            self._waited = True
        return self.end.decode(errors="replace")


def _last_lines(stderr: StderrTail | None, count: int = 5, limit: int = 800) -> str:
    """The end of what the launched process wrote on stderr, for a failure that left no traceback."""
    lines = [line.rstrip() for line in (stderr.text() if stderr else "").splitlines() if line.strip()]
    return "\n".join(lines[-count:])[-limit:]


def launch_error(exc: OSError, plan: LaunchPlan) -> str:
    """Why the launcher could not start, and what to change."""
    launcher = plan.argv[0]
    if exc.errno == errno.E2BIG:
        strings = [*plan.argv, *(f"{key}={value}" for key, value in {**os.environ, **plan.env}.items())]
        size = sum(len(os.fsencode(string)) + 1 for string in strings)
        limit = os.sysconf("SC_ARG_MAX")
        problem = f"{launcher}'s arguments and environment are {size:,} bytes, over this machine's {limit:,} (E2BIG)"
        return too_long(json.loads(plan.env["SM_HPS"]), problem)  # the script's hyperparameters, as planned
    if isinstance(exc, FileNotFoundError) and exc.filename == launcher:
        return (
            f"{launcher} is not installed in this image (not found on PATH): add it to the image, or choose another "
            f"launcher with the hyperparameter {contract.LAUNCHER[0]} or launcher: in smimg.yaml"
        )
    return f"{launcher} could not start: {exc}"


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
            archive = os.path.join(tmp, "sourcedir.tar.gz")
            _download(source, archive)
        with tarfile.open(archive, "r:*") as tar:
            tar.extractall(target, filter="data") if hasattr(tarfile, "data_filter") else tar.extractall(target)


def _download(source: str, archive: str) -> None:
    """One S3 object to a file; any failure (no boto3, credentials, access, a missing key) as an OSError naming it."""
    try:
        import boto3  # the DLCs carry it (sagemaker-training needs it); only script mode from S3 uses it

        bucket, _, key = source[len("s3://") :].partition("/")
        boto3.client("s3", endpoint_url=os.environ.get("S3_ENDPOINT_URL")).download_file(bucket, key, archive)
    except ImportError:
        raise OSError(f"cannot download {source}: boto3 is not installed in this image") from None
    except Exception as exc:  # botocore's errors share no base class with OSError
        raise OSError(f"cannot download {source}: {exc}") from None


def install_requirements(code_dir: str) -> None:
    """Install the code's requirements.txt, only when pip says something is missing."""
    requirements = os.path.join(code_dir, "requirements.txt")
    if not os.path.isfile(requirements):
        return
    base = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "-r", requirements]
    if os.path.isfile(contract.CONSTRAINTS_FILE):
        base += ["-c", contract.CONSTRAINTS_FILE]
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
        self.received: int | None = None  # a signal not yet acted on
        self.stopping = False
        self.stop_signal: int | None = None  # the signal that began the stop
        self.stop_deadline: float | None = None
        self.peer_failure: PeerFailure | None = None
        self.stderr: StderrTail | None = None
        self.master: Master | None = None
        self.worker: Worker | None = None
        self.join_deadline = 0.0  # every worker's entrypoint must have joined the master's by then

    def on_signal(self, signum: int, _frame: object) -> None:
        # Only noted: _supervise acts on it, so a stop begins once and in one place whatever the signal interrupts
        # (and no print here lands inside one it interrupted).
        self.received = signum

    def run(self) -> int:
        plan = self.plan
        try:
            events = self._start_peers()
        except OSError as exc:  # the master's port taken, or a worker that cannot reach it
            self._report(f"smimg: cannot launch: {exc}")
            return 1
        log("launching: " + shlex.join(plan.argv), plan.node_rank)
        env = {**os.environ, **plan.env}
        try:
            child = subprocess.Popen(plan.argv, env=env, cwd=plan.cwd, start_new_session=True, stderr=subprocess.PIPE)
        except OSError as exc:
            self._report(f"smimg: cannot launch: {launch_error(exc, plan)}")
            self._close_peers()
            return 1
        assert child.stderr is not None
        self.stderr = StderrTail(child.stderr)
        rank_logs = RankLogs(plan.log_dir).start() if plan.launcher == contract.TORCHRUN else None
        try:
            rc = self._supervise(child, events)
        finally:
            if rank_logs is not None:
                rank_logs.stop()  # the ranks' last lines before anything this node says of the outcome
        if self.stop_signal is not None:
            log(f"stopped by {signal.Signals(self.stop_signal).name} (launcher exit {rc})", plan.node_rank)
            self._close_peers()
            return 128 + self.stop_signal
        if rc != 0 and self.peer_failure is None and plan.nnodes > 1 and _is_echo(self.failing_rank[1]):
            # This node's rank died of a peer's death (the collective lost its connection) and often exits before
            # the peer's entrypoint has reported: give the report a moment so the root cause is blamed, not the echo.
            with contextlib.suppress(queue.Empty):
                self.peer_failure = events.get(timeout=ECHO_WAIT)
        return self._conclude(rc)

    def _start_peers(self) -> queue.Queue[PeerFailure]:
        """Connect to the other nodes' entrypoints (a worker waits for the master's); failures arrive on the queue."""
        plan = self.plan
        self.join_deadline = time.monotonic() + plan.timeouts.rendezvous
        if plan.nnodes > 1 and plan.is_master:
            workers = [h for h in plan.hosts if h != plan.master_host]
            try:
                self.master = Master(plan.watch_port, workers, plan.timeouts.peer)
            except OSError as exc:
                raise OSError(
                    f"the master's entrypoint cannot listen on port {plan.watch_port} ({exc.strerror or exc}): set "
                    f"{contract.WATCH_PORT_ENV} to a free port"
                ) from None
            return self.master.events
        if plan.nnodes > 1:
            here = plan.hosts[plan.node_rank]
            self.worker = Worker(here, plan.master_addr, plan.watch_port, self.join_deadline, plan.timeouts.peer)
            return self.worker.events
        return queue.Queue()

    def _supervise(self, child: subprocess.Popen[bytes], events: queue.Queue[PeerFailure]) -> int:
        """Wait for the launcher; stop it once, for a signal or a peer that fails or never joins; SIGKILL it when
        that stop's grace period ends."""
        plan = self.plan
        while True:
            try:
                return child.wait(timeout=0.05)
            except subprocess.TimeoutExpired:
                pass
            if self.master is not None and time.monotonic() > self.join_deadline and self.master.missing():
                missing = ", ".join(sorted(self.master.missing()))
                self.master.abort(
                    PeerFailure("master", f"hosts never joined within {plan.timeouts.rendezvous:.0f}s: {missing}")
                )
            signum, self.received = self.received, None
            if signum is not None and self._stop(child, f"received {signal.Signals(signum).name}", signalled=True):
                self.stop_signal = signum
            if self.peer_failure is None:
                with contextlib.suppress(queue.Empty):
                    self.peer_failure = events.get_nowait()
                    self._stop(child, f"peer {self.peer_failure.host} failed", signalled=False)
            if self.stop_deadline is not None and time.monotonic() > self.stop_deadline:
                log("grace period over: SIGKILL", plan.node_rank)
                _signal_tree(child.pid, signal.SIGKILL, include_root=True)
                self.stop_deadline = None

    def _stop(self, child: subprocess.Popen[bytes], why: str, signalled: bool) -> bool:
        """Begin stopping the training processes, once: a later trigger neither restarts nor shortens the grace.

        ``signalled``: SageMaker's stop, with its grace; the workers get SIGTERM and torchrun or accelerate only the
        SIGKILL, so that torchrun's own 30 s kill timer does not cut a checkpoint short (under the python and
        command launchers the launched process is the script, and gets the SIGTERM). Else a failed peer's: all of
        them get SIGTERM, with the abort grace.
        """
        if self.stopping:
            log(f"{why}: already stopping, the grace period stands", self.plan.node_rank)
            return False
        self.stopping = True
        grace = self.plan.timeouts.stop_grace if signalled else self.plan.timeouts.abort_grace
        log(f"{why}: forwarding SIGTERM to the training processes (SIGKILL in {grace:.0f}s)", self.plan.node_rank)
        spare_launcher = signalled and self.plan.launcher in (contract.TORCHRUN, contract.ACCELERATE)
        _signal_tree(child.pid, signal.SIGTERM, include_root=not spare_launcher)
        self.stop_deadline = time.monotonic() + grace
        return True

    def _conclude(self, rc: int) -> int:
        """Agree on the outcome with the other nodes, write the failure or success file, and pick the exit code."""
        plan = self.plan
        ok = rc == 0 and self.peer_failure is None
        if ok and self.master is not None:
            ok = self._await_workers()
        elif ok and self.worker is not None:
            ok = self._await_master()
        if self.stop_signal is not None:
            log(f"stopped by {signal.Signals(self.stop_signal).name} while waiting for the other nodes", plan.node_rank)
            self._close_peers()
            return 128 + self.stop_signal
        status = 0 if ok else self._fail(rc)
        self._close_peers()
        if ok:
            write_success(self.paths)
            log("job completed", plan.node_rank)
        return status

    def _signalled(self) -> bool:
        """Whether SageMaker's stop arrived (it is noted as the stop signal)."""
        if self.received is None:
            return False
        self.stop_signal, self.received = self.received, None
        return True

    def _await_workers(self) -> bool:
        """On the master, once its own training succeeded: every worker's DONE."""
        assert self.master is not None
        log("training finished here; waiting for the other nodes to finish", self.plan.node_rank)
        unfinished = self.master.wait_all_done(self.join_deadline, self._signalled)
        if not unfinished or self.stop_signal is not None:
            return not unfinished
        missing = self.master.missing()
        self.peer_failure = self.master.failure or PeerFailure(
            ",".join(sorted(missing or unfinished)), f"never joined the job within {self.plan.timeouts.rendezvous:.0f}s"
        )
        return False

    def _await_master(self) -> bool:
        """On a worker, once its own training succeeded: report DONE, then the master's verdict (BYE), unless a peer
        failed meanwhile or the master went away."""
        assert self.worker is not None
        self.worker.report(True)
        while not self.worker.finished.wait(0.1):
            if self._signalled():
                return False
        with contextlib.suppress(queue.Empty):
            self.peer_failure = self.worker.events.get_nowait()
        return self.peer_failure is None

    def _fail(self, rc: int) -> int:
        """Blame the peer that failed first, else this node's failing rank; tell the other nodes; the exit status."""
        plan = self.plan
        here = plan.hosts[plan.node_rank]
        failure = self.peer_failure
        # Exit 0, 1 (torchrun once its workers were stopped) or SIGTERM: this node was stopped for the peer's failure.
        if failure is not None and rc in (0, -15, 143, 1) and failure.host != here:
            status = rc if rc > 0 else 1
            reason = f"{contract.PEER_FAILURE_PREFIX}{failure.host} failed: {failure.reason}"
        else:
            status, reason = self._own_failure(rc, here)
        self._report(reason)
        return status

    def _own_failure(self, rc: int, here: str) -> tuple[int, str]:
        """This node's exit status and failure reason: its failing rank's exit code and traceback, where known."""
        rank, cause = self.failing_rank
        status = rank.status if rank is not None else (rc if rc > 0 else 1)
        if cause is not None:
            return status, f"ExitCode {status} on {here} {cause}"
        # Only torchrun's per-rank logs show that a rank printed none; elsewhere a traceback may have gone by unread.
        if rank is not None and self.plan.launcher == contract.TORCHRUN:
            what = f"{rank.describe()} and printed no traceback"
        else:
            what = f"{rank.describe() if rank is not None else _ended(self.plan.launcher, rc)}, no traceback captured"
            # A script that exits on its own (argparse, sys.exit("...")) says why on stderr without a traceback.
            if self.plan.launcher != contract.TORCHRUN and (said := _last_lines(self.stderr)):
                return status, f"ExitCode {status} on {here}: {what}; its last lines on stderr:\n{said}"
        return status, f"ExitCode {status} on {here}: {what}; see its log lines above"

    def _report(self, reason: str) -> None:
        """Write the failure file, log the reason, and tell the other nodes."""
        plan = self.plan
        write_failure(self.paths, reason)
        log(f"job failed: {reason.splitlines()[0][:300]}", plan.node_rank)
        if self.worker is not None:
            self.worker.report(False, reason[-contract.FAILURE_LIMIT :])
        if self.master is not None:
            self.master.abort(PeerFailure(plan.master_host, reason[-contract.FAILURE_LIMIT :]))

    @functools.cached_property
    def failing_rank(self) -> tuple[RankFailure | None, str | None]:
        """The rank to blame and its traceback tail, read once the launcher has exited: torchrun's first observed
        failure, unless torchrun stopped it, or it died of another rank's death while that rank failed on its own."""
        log_dir = self.plan.log_dir
        failures = rank_failures(self.stderr.text()) if self.stderr is not None else []
        for failure in failures:
            cause = root_cause(log_dir, failure.local_rank)
            if failure.exitcode != -signal.SIGTERM and not _is_echo(cause):
                return failure, cause
        if failures:
            return failures[0], root_cause(log_dir, failures[0].local_rank)
        return None, root_cause(log_dir)

    def _close_peers(self) -> None:
        if self.master is not None:
            self.master.close()
        if self.worker is not None:
            self.worker.close()


def sdk_processes(paths: Paths) -> int | None:
    """SDK v3's Torchrun(process_count_per_node), from the distributed.json its drivers channel carries."""
    path = paths.base / contract.SDK_DISTRIBUTED_FILE
    try:
        value = json.loads(path.read_text()).get("process_count_per_node")
    except (OSError, ValueError, AttributeError):
        return None
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise PlanError(f"process_count_per_node in {path} must be a whole number, not {value!r}")


def make_executable(code: Code) -> None:
    """A command entry point runs as ./script, as sagemaker-training runs it (which makes it executable too)."""
    path = os.path.join(code.directory, code.entry_point)
    try:
        os.chmod(path, os.stat(path).st_mode | 0o111)
    except OSError as exc:
        log(f"could not make {path} executable ({exc.strerror}): it runs only if it is already")


def image_defaults(environ: dict[str, str], script: str = contract.HF_OPTIMIZATIONS_SCRIPT) -> dict[str, str]:
    """The variables the base image's own entrypoint would have set: the HF DLC sources hf_optimizations.sh
    (PYTORCH_CUDA_ALLOC_CONF, TOKENIZERS_PARALLELISM, OMP_NUM_THREADS, ...; off with HF_ENABLE_OPTIMIZATIONS=0).

    Sourced as the DLC sources it, so its current rules apply, not a copy of them; only variables that were unset
    or empty are taken, so a value the user set always wins.
    """
    if not os.path.isfile(script) or not shutil.which("bash"):
        return {}
    try:
        # Its "[hf-opt] ..." lines go to the job's log, as under the DLC's entrypoint.
        proc = subprocess.run(
            ["bash", "-c", '. "$0" >&2 && env -0', script], env=environ, capture_output=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        log(f"{script} did not run ({exc}): the base image's defaults are not applied")
        return {}
    sys.stderr.write(proc.stderr.decode(errors="replace"))
    found = dict(item.split("=", 1) for item in proc.stdout.decode(errors="replace").split("\0") if "=" in item)
    return {key: value for key, value in found.items() if not environ.get(key) and key not in _SHELL_VARIABLES}


_SHELL_VARIABLES = {"_", "PWD", "OLDPWD", "SHLVL"}


@dataclass(frozen=True)
class JobInputs:
    """What the launch is planned from, read before the code is fetched."""

    cluster: Cluster
    hyperparameters: Hyperparameters
    settings: Settings
    code: Code


def _inputs(paths: Paths) -> JobInputs:
    cluster = read_cluster(paths)
    hyperparameters = parse(cluster.hyperparameters)
    settings = Settings.load(hyperparameters.reserved, os.environ, sdk_processes(paths))
    code_dir_has_files = paths.code.is_dir() and any(paths.code.iterdir())
    code = choose_code(hyperparameters.reserved, settings, os.environ, paths, code_dir_has_files)
    return JobInputs(cluster, hyperparameters, settings, code)


def _plan(paths: Paths, inputs: JobInputs) -> LaunchPlan:
    """Everything this node does, decided from /opt/ml, the environment, the code and the devices."""
    code = inputs.code
    devices = detect_devices(inputs.cluster.current_instance_type)
    defaults = image_defaults(dict(os.environ))
    log_dir = tempfile.mkdtemp(prefix="smimg-logs-")
    try:
        return plan_launch(
            inputs.cluster, inputs.hyperparameters, inputs.settings, os.environ, devices, code, log_dir, paths, defaults
        )
    except BaseException:
        os.rmdir(log_dir)  # nothing will write there: leave no empty folder behind a job that cannot start
        raise


def _cannot_launch(paths: Paths, exc: BaseException) -> int:
    log(f"cannot launch: {exc}")
    write_failure(paths, f"smimg: cannot launch: {exc}")
    return 1


def train(paths: Paths | None = None) -> int:
    """Read the job, prepare the code, plan, wait for the hosts, launch, report."""
    paths = paths or Paths()
    try:
        inputs = _inputs(paths)
        if inputs.code.fetch_from:
            fetch_code(inputs.code, paths)
        install_requirements(inputs.code.directory)
        if inputs.code.is_command:
            make_executable(inputs.code)
        plan = _plan(paths, inputs)
    except (PlanError, KeyError, ValueError, OSError, subprocess.CalledProcessError, tarfile.TarError) as exc:
        return _cannot_launch(paths, exc)
    log(
        f"smimg-entrypoint {__version__}: {plan.launcher} on {plan.nnodes} node(s) x {plan.nproc_per_node} "
        f"process(es) (from {plan.nproc_source}); this is {plan.hosts[plan.node_rank]}, node rank {plan.node_rank}, "
        f"master {plan.master_host} ({plan.master_addr}:{plan.master_port})",
        plan.node_rank,
    )
    try:
        if inputs.settings.host_addresses is None:
            wait_for_hosts(list(plan.hosts), inputs.settings.dns_timeout)
    except PlanError as exc:
        return _cannot_launch(paths, exc)
    job = Job(plan, paths)
    signal.signal(signal.SIGTERM, job.on_signal)
    signal.signal(signal.SIGINT, job.on_signal)
    return job.run()


def dry_run(paths: Paths | None = None) -> int:
    """Print this node's launch plan as JSON (argv, the variables smimg sets, the world) and launch nothing.

    Script-mode code is not fetched, so the plan shows where it would come from.
    """
    paths = paths or Paths()
    try:
        plan = _plan(paths, _inputs(paths))
    except (PlanError, KeyError, ValueError, OSError) as exc:
        print(f"{contract.TRAIN_SCRIPT}: cannot launch: {exc}", file=sys.stderr)
        return 1
    os.rmdir(plan.log_dir)
    shown = dataclasses.asdict(plan)
    del shown["log_dir"]
    json.dump(shown, sys.stdout, indent=1, sort_keys=True)
    print()
    return 0


def main() -> None:
    """`smimg-train train` runs the job (`train --dry-run` prints its plan); `smimg-train --version`; anything else
    is executed as given."""
    argv = sys.argv[1:]
    if argv == ["--version"]:
        print(f"smimg-entrypoint {__version__}")
        return
    if argv == [contract.TRAIN_COMMAND, "--dry-run"]:
        sys.exit(dry_run())
    if not argv or argv[0] != contract.TRAIN_COMMAND:
        command = argv or ["/bin/bash"]
        os.execvp(command[0], command)
    sys.exit(train())


def launch_main() -> None:
    """`smimg-launch`: the same launch for SDK v3 ModelTrainer's SourceCode(command="smimg-launch")."""
    if sys.argv[1:] == ["--version"]:
        print(f"smimg-entrypoint {__version__}")
        return
    sys.exit(train())
