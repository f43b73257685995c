"""Local mode's executor: run a ``LocalPlan`` to its end and always clean up.

Start the containers through compose, interleave their logs with a host prefix, stop the rest when one fails,
judge every container's exit code, package ``model.tar.gz`` and ``output.tar.gz`` as SageMaker does, and remove
containers and network whatever happens. Docker is reached only through the engine port.
"""

from __future__ import annotations

import shutil
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smimg import images
from smimg.adapters.compose import Compose, find_compose
from smimg.adapters.docker_engine import default_engine
from smimg.adapters.runner import Runner
from smimg.engine import ContainerState, Engine
from smimg.errors import LocalError
from smimg.local.plan import LocalPlan
from smimg_entrypoint import contract

STOP_GRACE = 15.0  # the entrypoints' own fate sharing usually ends the other hosts well within this


def available_gpus(runner: Runner | None = None) -> list[str]:
    """GPU indices `nvidia-smi` reports on this machine; none without the NVIDIA driver."""
    if shutil.which("nvidia-smi") is None:
        return []
    proc = (runner or Runner()).capture(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"])
    return [line.strip() for line in proc.output.splitlines() if line.strip()] if proc.ok else []


def write_run_dir(plan: LocalPlan) -> None:
    """Write the compose file and every host's /opt/ml tree."""
    plan.run_dir.mkdir(parents=True, exist_ok=True)
    plan.compose_file.write_text(plan.compose_yaml())
    for host in plan.hosts:
        base = plan.host_dir(host.name)
        for folder in host.dirs:
            (base / folder).mkdir(parents=True, exist_ok=True)
        for relative, content in host.files:
            (base / relative).parent.mkdir(parents=True, exist_ok=True)
            (base / relative).write_text(content)


@dataclass(frozen=True)
class HostResult:
    name: str
    exit_code: int
    failure: str | None
    stopped: bool  # smimg stopped it after another host failed
    finished_at: str  # the engine's RFC 3339 time; the first host to fail is the likeliest root cause

    @property
    def blames_peer(self) -> bool:
        """Its entrypoint says another host failed first: an echo, not the root cause."""
        return (self.failure or "").startswith(contract.PEER_FAILURE_PREFIX)


@dataclass(frozen=True)
class LocalResult:
    job_name: str
    seconds: float
    hosts: tuple[HostResult, ...]
    model: Path | None
    output: Path | None
    run_dir: Path | None

    @property
    def ok(self) -> bool:
        return all(h.exit_code == 0 for h in self.hosts)

    @property
    def failed(self) -> HostResult | None:
        """The host whose failure ended the job (not one smimg stopped afterwards)."""
        failed = sorted(
            (h for h in self.hosts if h.exit_code != 0), key=lambda h: (h.stopped, h.blames_peer, h.finished_at)
        )
        return failed[0] if failed else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "job_name": self.job_name,
            "ok": self.ok,
            "seconds": round(self.seconds, 2),
            "hosts": [h.__dict__ for h in self.hosts],
            "model": str(self.model) if self.model else None,
            "output": str(self.output) if self.output else None,
            "run_dir": str(self.run_dir) if self.run_dir else None,
        }


def prepare(plan: LocalPlan, engine: Engine, compose: Compose | None = None) -> Compose:
    """Check what a run needs before anything starts, and write the run folder.

    Raises:
        ImageNotFound: the image is not local.
        LocalError: no compose, or a network or container of the same name exists.
    """
    images.require(plan.job.image, "to run", "build it with `smimg build` (local mode never pulls)", engine)
    tool = compose or find_compose()
    if engine.network_exists(plan.network):
        raise LocalError(
            f"a Docker network named {plan.network} already exists",
            f"remove it (`docker network rm {plan.network}`) or choose another --job-name",
        )
    for host in plan.hosts:
        if engine.container_exists(plan.container(host.name)):
            raise LocalError(
                f"a container named {plan.container(host.name)} already exists",
                f"remove it (`docker rm -f {plan.container(host.name)}`) or choose another --job-name",
            )
    write_run_dir(plan)
    return tool


def run(
    plan: LocalPlan,
    *,
    output: Path,
    keep: bool = False,
    engine: Engine | None = None,
    compose: Compose | None = None,
    on_line: Callable[[str], None] | None = None,
) -> LocalResult:
    """Run a planned job to the end; containers and network are removed whatever happens (Ctrl-C included).

    Raises:
        ImageNotFound, LocalError: the job could not start.
    """
    say = on_line or (lambda _line: None)
    engine = engine or default_engine()
    tool = prepare(plan, engine, compose)
    started = time.monotonic()
    try:
        tool.up(plan.project, plan.compose_file)
        hosts = supervise(plan, engine, say)
        model, out = _package(plan, output, success=all(h.exit_code == 0 for h in hosts))
    finally:
        tool.down(plan.project, plan.compose_file)
        if not keep:
            shutil.rmtree(plan.run_dir, ignore_errors=True)
    return LocalResult(
        job_name=plan.job.name,
        seconds=time.monotonic() - started,
        hosts=tuple(hosts),
        model=model,
        output=out,
        run_dir=plan.run_dir if keep else None,
    )


def _follow_logs(plan: LocalPlan, engine: Engine, say: Callable[[str], None], width: int) -> list[threading.Thread]:
    """One thread per host prints its container's lines as ``algo-2 | ...``, host names padded to ``width``."""
    lock = threading.Lock()

    def follow(name: str) -> None:
        pending = b""
        for chunk in engine.logs(plan.container(name)):
            pending += chunk
            *lines, pending = pending.split(b"\n")
            with lock:
                for line in lines:
                    say(f"{name:<{width}} | {line.decode('utf-8', 'replace')}")
        if pending:
            with lock:
                say(f"{name:<{width}} | {pending.decode('utf-8', 'replace')}")

    threads = [threading.Thread(target=follow, args=(h.name,), daemon=True) for h in plan.hosts]
    for thread in threads:
        thread.start()
    return threads


def supervise(plan: LocalPlan, engine: Engine, say: Callable[[str], None], poll: float = 0.2) -> list[HostResult]:
    """Wait for every host; after the first failure the others get ``STOP_GRACE`` seconds, then are stopped."""
    names = [h.name for h in plan.hosts]
    width = max(len(name) for name in names)
    threads = _follow_logs(plan, engine, say, width)
    ended: dict[str, ContainerState] = {}
    stopped: set[str] = set()
    deadline: float | None = None
    while len(ended) < len(names):
        for name in names:
            if name in ended:
                continue
            state = engine.container_state(plan.container(name))
            if state.ended:
                ended[name] = state
                if state.exit_code != 0 and deadline is None:
                    deadline = time.monotonic() + STOP_GRACE
        if deadline is not None and time.monotonic() > deadline:
            for name in names:
                if name not in ended and name not in stopped:
                    say(f"{name:<{width}} | smimg: stopping this host: another host failed {STOP_GRACE:.0f}s ago")
                    engine.stop(plan.container(name), timeout=10)
                    stopped.add(name)
        time.sleep(poll)
    for thread in threads:
        thread.join(timeout=5)
    return [
        HostResult(name, ended[name].exit_code, _failure(plan.host_dir(name)), name in stopped, ended[name].finished_at)
        for name in sorted(names)
    ]


def _failure(host_dir: Path) -> str | None:
    path = host_dir / contract.FAILURE_FILE
    return path.read_text(errors="replace").strip() or None if path.is_file() else None


def _package(plan: LocalPlan, output: Path, *, success: bool) -> tuple[Path | None, Path]:
    """model.tar.gz (hosts' model folders merged, as SDK local mode does) on success; output.tar.gz always."""
    output.mkdir(parents=True, exist_ok=True)
    model = None
    if success:
        model = _merged_tar([plan.host_dir(h.name) / contract.MODEL_DIR for h in plan.hosts], output / "model.tar.gz")
    outputs = [plan.host_dir(h.name) / contract.OUTPUT_DIR for h in plan.hosts]
    return model, _merged_tar(outputs, output / "output.tar.gz")


def _merged_tar(folders: Sequence[Path], target: Path) -> Path:
    with tempfile.TemporaryDirectory(prefix="smimg-merge-") as tmp:
        for folder in folders:
            if folder.is_dir():
                shutil.copytree(folder, tmp, dirs_exist_ok=True)
        with tarfile.open(target, "w:gz") as archive:
            for item in sorted(Path(tmp).iterdir()):
                archive.add(item, arcname=item.name)
    return target


def shell(plan: LocalPlan, command: Sequence[str] = ("/bin/bash",), engine: Engine | None = None) -> int:
    """An interactive command in an ``algo-1`` container with the job's mounts and env (entrypoint bypassed).

    Raises:
        ImageNotFound, LocalError: as for ``run``.
    """
    tool = prepare(plan, engine or default_engine())
    try:
        return tool.shell(plan.project, plan.compose_file, plan.hosts[0].name, command)
    finally:
        tool.down(plan.project, plan.compose_file)
        shutil.rmtree(plan.run_dir, ignore_errors=True)
