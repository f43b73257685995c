"""`smimg check IMAGE --contract`: run any image (smimg's, a colleague's, a DLC) as SageMaker would, on local hosts,
and report which parts of SageMaker's runtime contract it honours, each with its timing and evidence.

Every scenario is a local job (``local.run``) whose script-mode code is a small probe, so it needs nothing from the
image but Python and torch: the same scenarios judge smimg's entrypoint and the DLCs' own toolkit.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from smimg import images, resources
from smimg.adapters.docker_engine import default_engine
from smimg.engine import Engine
from smimg.errors import CommandError, LocalError
from smimg.local import execute, job, plan
from smimg_entrypoint import contract

PROBE = r"""
import json, os, signal, sys, time
mode, host = os.environ["SMIMG_PROBE"], os.environ.get("SM_CURRENT_HOST", "?")
model = os.environ.get("SM_MODEL_DIR", "/opt/ml/model")


def write(name, data):
    # Whole or not at all: every process of a host (SMIMG_NPROC_PER_NODE) may write the same file at once.
    path = os.path.join(model, name)
    private = f"{path}.{os.getpid()}"
    with open(private, "w") as f:
        json.dump(data, f)
    os.replace(private, path)


if mode == "argv":
    write("argv.json", sys.argv[1:])
elif mode == "sigterm":
    def on_sigterm(signum, frame):
        write("sigterm.json", {"at": time.time()})
        sys.exit(0)
    signal.signal(signal.SIGTERM, on_sigterm)
    write("ready.json", {"at": time.time()})
    time.sleep(600)
else:
    import torch
    import torch.distributed as dist
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    if mode == "failure" and host == "algo-2":
        raise ValueError("smimg contract probe: failing on purpose on algo-2")
    value = torch.tensor([float(rank + 1)])
    dist.all_reduce(value)
    write(f"world-{rank}.json", {"rank": rank, "world": world, "sum": value.item(), "host": host})
    dist.barrier()
    # Without it gloo's threads may still run at exit: "terminate called without an active exception", SIGABRT.
    dist.destroy_process_group()
"""
# Spaces, quotes, shell metacharacters, a string holding JSON, booleans, numbers: all must arrive verbatim.
TEXT = "two words; rm -rf / 'single' \"double\" $HOME `date` \\ end"
JSON_TEXT = '{"lr": 0.1, "layers": [1, 2]}'
HYPERPARAMETERS: Mapping[str, Any] = {
    "text": TEXT,
    "config": JSON_TEXT,
    "flag": True,
    "off": False,
    "epochs": 3,
    "ratio": 0.5,
}
# What sagemaker-training's mapping.to_cmd_args gives the script for them, spelled out (not smimg's own code).
TOOLKIT_ARGV = [
    "--config", JSON_TEXT, "--epochs", "3", "--flag", "True", "--off", "False", "--ratio", "0.5", "--text", TEXT,
]  # fmt: skip
SIGTERM_AFTER = 20.0  # seconds into the job: long enough for an entrypoint to have started the script
SIGTERM_GRACE = 30.0  # the local stand-in for SageMaker's 120 s: a handler must be done well before it
SDK_V3_TOOLS = ("bash", "python", "pip", "torchrun")  # ModelTrainer's sm_train.sh runs them from PATH
# SageMaker lists `hosts` sorted as text: from 10 hosts on, algo-10 comes before algo-2. One process per host keeps
# the job small; a host that takes the wrong rank or master leaves the world incomplete.
ORDER_HOSTS = 10
# Any job scenario ends by then (a rendezvous that never completes would otherwise wait on it for good).
SCENARIO_LIMIT = 300.0


@dataclass(frozen=True)
class Scenario:
    name: str
    ok: bool
    seconds: float
    evidence: str


@dataclass(frozen=True)
class ConformanceReport:
    image: str
    scenarios: tuple[Scenario, ...]

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.scenarios)

    def as_dict(self) -> dict[str, Any]:
        return {"image": self.image, "ok": self.ok, "scenarios": [s.__dict__ for s in self.scenarios]}


def check_contract(
    image: str, engine: Engine | None = None, on_scenario: Callable[[Scenario], None] | None = None
) -> ConformanceReport:
    """Run every scenario against ``image`` and report each.

    Raises:
        ImageNotFound: no such local image.
        LocalError: a scenario's job could not start (the engine refused or was lost).
    """
    engine = engine or default_engine()
    images.require(image, "to check", "build or pull it first", engine)
    found: list[Scenario] = []
    # Under smimg's cache (a snap-packaged Docker cannot mount /tmp); containers may write as root, and what cannot
    # be removed is left there, not an error.
    scratch = resources.cache_dir() / "contract"
    scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="check-", dir=scratch, ignore_cleanup_errors=True) as tmp:
        root = Path(tmp)
        (root / "probe").mkdir()
        (root / "probe" / "probe.py").write_text(PROBE)
        for name, scenario in SCENARIOS.items():
            started = time.monotonic()
            try:
                ok, evidence = scenario(image, root, engine)
            except LocalError as exc:  # the job could not run: that scenario fails, the others still report
                ok, evidence = False, f"could not run: {exc.message}"
            found.append(Scenario(name, ok, time.monotonic() - started, evidence))
            if on_scenario is not None:
                on_scenario(found[-1])
    return ConformanceReport(image, tuple(found))


def _run(
    image: str,
    root: Path,
    engine: Engine,
    probe: str,
    instances: int = 1,
    hps: Mapping[str, Any] | None = None,
    **conditions: Any,
) -> tuple[execute.LocalResult, Path]:
    """The probe as a script-mode job; the run folder is kept for the evidence, under ``root``."""
    local_job = job.make_job(
        image,
        instances=instances,
        source_dir=root / "probe",
        entry_point="probe.py",
        env=[f"SMIMG_PROBE={probe}"],
        name=job.job_name(f"smimg-contract-{probe}"),
        conditions=job.Conditions(**{"max_run": SCENARIO_LIMIT, **conditions}),
    )
    local_job = replace(local_job, hyperparameters=tuple(sorted((hps or {}).items())))
    run_dir = root / local_job.name
    result = execute.run(
        plan.plan_job(local_job, run_dir), output=root / f"{local_job.name}-out", keep=True, engine=engine
    )
    return result, run_dir


def _model_files(run_dir: Path, pattern: str) -> list[Any]:
    return [json.loads(p.read_text()) for p in sorted(run_dir.glob(f"algo-*/{contract.MODEL_DIR}/{pattern}"))]


def _world(image: str, root: Path, engine: Engine) -> tuple[bool, str]:
    result, run_dir = _run(image, root, engine, "world", 2, {contract.HP_TORCH_DISTRIBUTED: True})
    ranks = _model_files(run_dir, "world-*.json")
    if not result.ok or not ranks:
        return False, _failed(result, "no rank reported a world")
    world, total, hosts = ranks[0]["world"], ranks[0]["sum"], sorted({r["host"] for r in ranks})
    ok = len(ranks) == world and total == world * (world + 1) / 2 and hosts == ["algo-1", "algo-2"]
    return (
        ok,
        f"world {world} over {', '.join(hosts)}; all_reduce gave {total:g} (every rank: {world * (world + 1) / 2:g})",
    )


def _host_order(image: str, root: Path, engine: Engine) -> tuple[bool, str]:
    hps = {contract.HP_TORCH_DISTRIBUTED: True, contract.HP_MPI_PROCESSES_PER_HOST: 1}
    result, run_dir = _run(image, root, engine, "world", ORDER_HOSTS, hps)
    ranks = _model_files(run_dir, "world-*.json")
    if not result.ok or not ranks:
        return False, _failed(result, f"no rank of {ORDER_HOSTS} hosts reported a world")
    listed = sorted(f"algo-{i}" for i in range(1, ORDER_HOSTS + 1))
    hosts = {r["host"]: r["rank"] for r in ranks}
    ok = ranks[0]["world"] == ORDER_HOSTS and len(ranks) == ORDER_HOSTS and sorted(hosts) == listed
    shown = ", ".join(f"{host} rank {hosts[host]}" for host in ("algo-1", "algo-2", "algo-10") if host in hosts)
    return ok, f"hosts listed {', '.join(listed[:3])}, ...: world {ranks[0]['world']} of {ORDER_HOSTS} ({shown})"


def _hyperparameters(image: str, root: Path, engine: Engine) -> tuple[bool, str]:
    result, run_dir = _run(image, root, engine, "argv", hps=HYPERPARAMETERS)
    got = _model_files(run_dir, "argv.json")
    expected = TOOLKIT_ARGV
    if not result.ok or not got:
        return False, _failed(result, "the script wrote no argv")
    if got[0] == expected:
        return True, f"{len(HYPERPARAMETERS)} values (spaces, quotes, $, `, \\, a JSON string, booleans) verbatim"
    first = next(
        (i for i, (a, b) in enumerate(zip(got[0], expected, strict=False)) if a != b), min(len(got[0]), len(expected))
    )
    theirs, ours = expected[first : first + 2], got[0][first : first + 2]
    return False, f"argument {first}: got {ours!r}, SageMaker's toolkit gives {theirs!r}"


def _failure(image: str, root: Path, engine: Engine) -> tuple[bool, str]:
    result, _ = _run(image, root, engine, "failure", 2, {contract.HP_TORCH_DISTRIBUTED: True})
    codes = ", ".join(
        f"{h.name} exit {h.exit_code}" + (" (stopped by smimg)" if h.stopped else "") for h in result.hosts
    )
    failing = next((h for h in result.hosts if h.name == "algo-2"), None)
    reason = (failing.failure or "") if failing else ""
    ok = all(h.exit_code != 0 and not h.stopped for h in result.hosts) and "failing on purpose" in reason
    lines = [line.strip() for line in reason.splitlines() if line.strip()] or ["no failure file"]
    shown = next((line for line in lines if "failing on purpose" in line), lines[-1])[:120]
    return ok, f"{codes}; algo-2's failure file: {shown}"


def _sigterm(image: str, root: Path, engine: Engine) -> tuple[bool, str]:
    result, run_dir = _run(image, root, engine, "sigterm", max_run=SIGTERM_AFTER, stop_grace=SIGTERM_GRACE)
    attempt = result.attempts[0] if result.attempts else None
    if attempt is None or attempt.stop_seconds is None:
        return False, _failed(result, f"the job ended before its SIGTERM at {SIGTERM_AFTER:g}s")
    if not _model_files(run_dir, "ready.json"):
        return False, f"inconclusive: the script had not started {SIGTERM_AFTER:g}s into the job (a slow start?)"
    handled = bool(_model_files(run_dir, "sigterm.json"))
    ok = handled and attempt.stop_seconds < SIGTERM_GRACE
    ran = "the script's handler ran" if handled else "the script's SIGTERM handler never ran"
    return ok, f"{ran}; the container exited {attempt.stop_seconds:.1f}s after SIGTERM (SIGKILL at {SIGTERM_GRACE:g}s)"


def _sdk_v3_tools(image: str, root: Path, engine: Engine) -> tuple[bool, str]:
    missing, error = _shell(
        engine, image, f"for t in {' '.join(SDK_V3_TOOLS)}; do command -v $t >/dev/null || echo $t; done"
    )
    if error is not None:
        return False, error
    return not missing, f"missing from PATH: {', '.join(missing)}" if missing else f"{', '.join(SDK_V3_TOOLS)} on PATH"


def _code_dir_empty(image: str, root: Path, engine: Engine) -> tuple[bool, str]:
    code = contract.opt_ml(contract.CODE_DIR)
    held, error = _shell(engine, image, f"ls -A {code} 2>/dev/null; true")
    if error is not None:
        return False, error
    if held:
        return False, f"{code} holds {', '.join(held[:5])}: SageMaker would skip the uploaded sourcedir.tar.gz"
    return True, f"{code} is empty: the SDK's uploaded code is used"


def _shell(engine: Engine, image: str, script: str) -> tuple[list[str], str | None]:
    """The words a shell script prints in a throw-away container of the image, or why it could not run."""
    try:
        return engine.run(image, ["/bin/sh", "-c", script]).split(), None
    except CommandError as exc:
        return [], f"could not run /bin/sh in the image: {exc.output.strip()[-200:]}"


def _failed(result: execute.LocalResult, what: str) -> str:
    if result.ended_by == execute.MAX_RUNTIME_EXCEEDED:
        return f"{what}: still running after {SCENARIO_LIMIT:g}s, stopped"
    failed = result.failed
    if failed is None:
        return what
    return f"{what}: {failed.name} exit {failed.exit_code}: {(failed.failure or 'no failure file')[-160:]}"


SCENARIOS: dict[str, Callable[[str, Path, Engine], tuple[bool, str]]] = {
    "multi-node torchrun": _world,
    "hyperparameters verbatim": _hyperparameters,
    "a failing host fails the job": _failure,
    "host order (algo-10 before algo-2)": _host_order,
    "SIGTERM reaches the script": _sigterm,
    "SDK v3 ModelTrainer's tools": _sdk_v3_tools,
    "/opt/ml/code empty": _code_dir_empty,
}
