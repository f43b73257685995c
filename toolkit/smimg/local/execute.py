"""Local mode's executor: run a ``LocalPlan`` to its end and always clean up.

Create the job's network and containers, interleave their logs with a host prefix, stop the rest when one fails,
judge every container's exit code, package ``model.tar.gz`` and ``output.tar.gz`` as SageMaker does, and remove
containers and network whatever happens. Docker is reached only through the engine port.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smimg import images, interrupts
from smimg.adapters.docker_engine import default_engine
from smimg.adapters.runner import Runner
from smimg.engine import ContainerState, Engine
from smimg.errors import DockerUnavailable, LocalError, SmimgError
from smimg.local import jobs, results
from smimg.local.plan import LocalPlan
from smimg_entrypoint import contract

STOP_GRACE = 15.0  # the entrypoints' own fate sharing usually ends the other hosts well within this
DOWN_GRACE = 10.0  # hosts still running at the clean-up (a Ctrl-C) get SIGTERM and this long to save their work


def available_gpus(runner: Runner | None = None) -> list[str]:
    """GPU indices `nvidia-smi` reports on this machine; none without the NVIDIA driver."""
    if shutil.which("nvidia-smi") is None:
        return []
    proc = (runner or Runner()).capture(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"])
    return [line.strip() for line in proc.output.splitlines() if line.strip()] if proc.ok else []


def write_run_dir(plan: LocalPlan) -> None:
    """Write the compose file (the job's containers, to read or run by hand) and every host's /opt/ml tree."""
    plan.run_dir.mkdir(parents=True, exist_ok=True)
    plan.compose_file.write_text(plan.compose_yaml())
    for relative, content in plan.files:
        (plan.run_dir / relative).write_text(content)
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


MAX_RUNTIME_EXCEEDED = "MaxRuntimeExceeded"
INTERRUPTED = "Interrupted"  # SageMaker's secondary status for a spot reclaim


@dataclass(frozen=True)
class Attempt:
    """One start of the job's containers: a spot reclaim makes a second."""

    seconds: float
    hosts: tuple[HostResult, ...]
    ended_by: str | None  # MAX_RUNTIME_EXCEEDED or INTERRUPTED when a timed stop ended it, else None
    stop_seconds: float | None  # from the timed stop's SIGTERM until every host had exited
    restored: tuple[str, ...]  # checkpoint files every host started with
    checkpoints: tuple[str, ...]  # checkpoint files the hosts held at its end

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "hosts": [h.__dict__ for h in self.hosts]}


@dataclass(frozen=True)
class LocalResult:
    job_name: str
    seconds: float
    hosts: tuple[HostResult, ...]
    model: Path | None
    output: Path | None
    checkpoints: Path | None
    run_dir: Path | None
    attempts: tuple[Attempt, ...] = ()

    @property
    def ended_by(self) -> str | None:
        return self.attempts[-1].ended_by if self.attempts else None

    @property
    def ok(self) -> bool:
        return self.ended_by is None and all(h.exit_code == 0 for h in self.hosts)

    @property
    def status(self) -> str:
        """TrainingJobStatus as SageMaker would end it: a job past its MaxRuntimeInSeconds is Stopped."""
        if self.ok:
            return "Completed"
        return "Stopped" if self.ended_by == MAX_RUNTIME_EXCEEDED else "Failed"

    @property
    def failed(self) -> HostResult | None:
        """The host whose failure ended the job (not one smimg stopped afterwards)."""
        failed = sorted(
            (h for h in self.hosts if h.exit_code != 0), key=lambda h: (h.stopped, h.blames_peer, h.finished_at)
        )
        return failed[0] if failed else None

    def as_dict(self) -> dict[str, Any]:
        paths = {"model": self.model, "output": self.output, "checkpoints": self.checkpoints, "run_dir": self.run_dir}
        return {
            "job_name": self.job_name,
            "ok": self.ok,
            "status": self.status,
            "secondary_status": self.ended_by,
            "seconds": round(self.seconds, 2),
            "hosts": [h.__dict__ for h in self.hosts],
            "attempts": [a.as_dict() for a in self.attempts],
            **{key: str(path) if path else None for key, path in paths.items()},
        }


def prepare(plan: LocalPlan, engine: Engine, say: Callable[[str], None]) -> None:
    """Check what a run needs before anything starts, clear an earlier run's leftovers, write the run folder.

    Call it holding the job's lock (``job_lock``): then a container or network of this name is no live job's.

    Raises:
        ImageNotFound: the image is not local.
        LocalError: a container of this job runs (started outside this machine's smimg runs), a container or network
            of its names is not one smimg made for it, or the run folder is not one smimg made.
    """
    images.require(plan.job.image, "to run", "build it with `smimg build` (local mode never pulls)", engine)
    leftovers = _leftovers(plan, engine)
    _set_aside_run_dir(plan, say)
    write_run_dir(plan)
    if leftovers:
        say(f"smimg: removing what an earlier run of {plan.job.name} left behind")
        _down(plan, engine)


def _leftovers(plan: LocalPlan, engine: Engine) -> bool:
    """Whether an earlier run of the job left containers (of any host count) or its network; refuse what is still
    running, or is not smimg's for this job."""
    ours = engine.labelled(contract.LABEL_JOB, plan.project)
    running = [name for name in ours if not _stopped(engine, name)]
    if running:
        raise LocalError(
            f"job {plan.job.name}'s containers are running outside smimg's control: {', '.join(running)}",
            f"stop them (`{_removal_command(plan, running)}`) or choose another --job-name",
        )
    strangers = [c.name for c in plan.containers if c.name not in ours and engine.container_exists(c.name)]
    network = engine.network_labels(plan.network)
    foreign_network = network is not None and network.get(contract.LABEL_JOB) != plan.project
    if strangers or foreign_network:
        named = [*strangers, *([f"network {plan.network}"] if foreign_network else [])]
        # An smimg from before the label left them too, after a kill: the command removes them.
        remove = " && ".join(
            [*([f"docker rm -f {' '.join(strangers)}"] if strangers else []), f"docker network rm {plan.network}"]
        )
        raise LocalError(
            f"{', '.join(named)} already exist and smimg did not make them for job {plan.job.name}",
            f"choose another --job-name, or, if they are yours to remove (an earlier smimg's leftovers): `{remove}`",
        )
    return bool(ours) or network is not None


def _up(plan: LocalPlan, engine: Engine) -> None:
    """Create the job's network and every host, then start them (as on SageMaker, no host waits for another)."""
    engine.create_network(plan.network, internal=plan.internal, labels=plan.labels)
    for container in plan.containers:
        engine.create_container(container)
    for container in plan.containers:
        engine.start(container.name)


def _down(plan: LocalPlan, engine: Engine) -> None:
    """Remove the job's containers (any its earlier runs left too) and network, each tried even when one fails.
    Hosts still running get SIGTERM and ``DOWN_GRACE`` seconds, all at once, to end as a stopped job ends (saving
    checkpoints), before they are killed.

    Raises:
        LocalError: the engine refused a removal (the first refusal; the rest were still tried).
    """
    names = engine.labelled(contract.LABEL_JOB, plan.project)
    running = [name for name in names if not _stopped(engine, name)]
    for name in running:
        engine.kill(name, "SIGTERM")
    deadline = time.monotonic() + DOWN_GRACE
    while running and time.monotonic() < deadline:
        time.sleep(0.1)
        running = [name for name in running if not _stopped(engine, name)]
    refused: list[LocalError] = []  # a lost engine (DockerUnavailable) ends the clean-up: nothing else would work
    for name in names:
        try:
            engine.remove_container(name)
        except LocalError as exc:
            refused.append(exc)
    try:
        if (engine.network_labels(plan.network) or {}).get(contract.LABEL_JOB) == plan.project:
            engine.remove_network(plan.network)
    except LocalError as exc:
        refused.append(exc)
    if refused:
        raise refused[0]


def _stopped(engine: Engine, container: str) -> bool:
    try:
        return engine.container_state(container).status not in {"running", "restarting", "paused"}
    except LocalError:  # gone
        return True


def _set_aside_run_dir(plan: LocalPlan, say: Callable[[str], None]) -> None:
    """An earlier run folder of this job is kept (renamed) when it holds results, else removed; a folder smimg
    did not make is refused, never removed."""
    run_dir = plan.run_dir
    if not run_dir.exists() or (run_dir.is_dir() and not any(run_dir.iterdir())):
        return
    if not (plan.compose_file.is_file() and plan.host_dir(plan.hosts[0].name).is_dir()):
        raise LocalError(
            f"run folder {run_dir} exists and is not one smimg made", "pass a new folder to --run-dir, or leave it out"
        )
    if results.holds_results(run_dir, (contract.MODEL_DIR, contract.OUTPUT_DIR, contract.CHECKPOINTS_DIR)):
        kept = run_dir.with_name(f"{run_dir.name}.{time.strftime('%Y%m%d-%H%M%S')}")
        run_dir.rename(kept)
        say(f"smimg: an earlier run of {plan.job.name} left results; its folder is kept as {kept}")
    else:
        shutil.rmtree(run_dir)


def job_lock(plan: LocalPlan, output: Path | None = None) -> contextlib.AbstractContextManager[None]:
    """Held while a job runs (``jobs.hold``): two runs of one job name would share containers, network and run folder.

    Raises:
        LocalError: another smimg process on this machine runs a job of this name.
    """
    return jobs.hold(jobs.this_process(plan.job.name, plan.project, len(plan.hosts), plan.run_dir, output or Path()))


def run(
    plan: LocalPlan,
    *,
    output: Path,
    keep: bool = False,
    engine: Engine | None = None,
    on_line: Callable[[str], None] | None = None,
    on_restart: Callable[[], None] | None = None,
) -> LocalResult:
    """Run a planned job to the end, then save its results to ``output``, however it ends.

    Containers and network are removed on success, failure, Ctrl-C, SIGTERM and SIGHUP (``interrupts``); the
    removal and the saving of results cannot be cut short by another signal. The run folder is removed only once
    the results are safely in ``output``. ``on_restart`` is told when a rehearsed spot reclaim restarts the job.

    Raises:
        ImageNotFound, LocalError: the job could not start, or its clean-up failed (naming what is left).
    """
    say = on_line or (lambda _line: None)
    engine = engine or default_engine()
    results.check_output(output)
    results.check_checkpoints(plan, output)
    with job_lock(plan, output):
        if plan.job.conditions.checkpoints_s3:
            fetched = results.fetch_checkpoints(plan)
            say(f"smimg: {fetched} checkpoint file(s) from {plan.job.conditions.checkpoints_s3}")
        prepare(plan, engine, say)
        started = time.monotonic()
        attempts: list[Attempt] = []
        try:
            attempts = _attempts(plan, engine, say, started, on_restart or (lambda: None))
        finally:
            with interrupts.shielded(lambda _signum: say(_CLEANING)):
                last = attempts[-1] if attempts else None
                # SageMaker uploads the model of a job it stopped at its run limit: the stop's grace is for saving it.
                finished = last is not None and (last.ended_by == MAX_RUNTIME_EXCEEDED or _all_ok(last.hosts))
                saved = _finish(plan, engine, output, success=finished)
                if sys.exc_info()[1] is not None:
                    say(f"smimg: containers and network removed; the job's output is saved in {output}")
                # A model is packaged only on success: after a failure or an interrupt it lives only in the run
                # folder (an interrupt may even land after every host finished), so that folder stays.
                keep = keep or (not saved.model and results.holds_results(plan.run_dir, (contract.MODEL_DIR,)))
                if keep:
                    say(f"smimg: the hosts' /opt/ml trees are kept in {plan.run_dir}")
                else:
                    shutil.rmtree(plan.run_dir, ignore_errors=True)
    return LocalResult(
        job_name=plan.job.name,
        seconds=time.monotonic() - started,
        hosts=attempts[-1].hosts if attempts else (),
        model=saved.model,
        output=saved.output,
        checkpoints=saved.checkpoints,
        run_dir=plan.run_dir if keep else None,
        attempts=tuple(attempts),
    )


def _all_ok(hosts: Sequence[HostResult]) -> bool:
    return bool(hosts) and all(h.exit_code == 0 for h in hosts)


def _attempts(
    plan: LocalPlan, engine: Engine, say: Callable[[str], None], started: float, on_restart: Callable[[], None]
) -> list[Attempt]:
    """The job's first start and, after a rehearsed spot reclaim, its restart on fresh containers with the
    checkpoints restored (from ``--checkpoints``; without it the restart begins from nothing, as on SageMaker
    without a CheckpointConfig)."""
    conditions = plan.job.conditions
    limit = started + conditions.max_run if conditions.max_run else None
    spot = started + conditions.spot_interrupt_after if conditions.spot_interrupt_after else None
    first = _attempt(plan, engine, say, _timed_stop(spot, limit, conditions.stop_grace))
    if first.ended_by != INTERRUPTED:
        if spot is not None and first.ended_by is None:
            say(f"smimg: the job ended before the spot interruption at {conditions.spot_interrupt_after:g}s")
        return [first]
    if limit is not None and time.monotonic() >= limit:
        say(f"smimg: the job's --max-run of {conditions.max_run:g}s has passed: no restart, as on SageMaker")
        return [first]
    _down(plan, engine)  # the reclaimed instances are gone, and their disks with them
    results.keep_checkpoints(plan)
    # Set aside, not deleted: files the containers wrote as root may not be removable here, and the first
    # attempt's trees help to debug a resume.
    aside = plan.run_dir / ".attempt-1"
    aside.mkdir()
    for host in plan.hosts:
        plan.host_dir(host.name).rename(aside / host.name)
    write_run_dir(plan)
    on_restart()
    say(
        "smimg: spot capacity is back: restarting the job on fresh hosts"
        + (
            f" with the checkpoints of {where}"
            if (where := conditions.checkpoint_location)
            else ", with no checkpoints"
        )
    )
    return [first, _attempt(plan, engine, say, _timed_stop(None, limit, conditions.stop_grace))]


def _timed_stop(spot: float | None, limit: float | None, grace: float) -> TimedStop | None:
    if spot is not None:
        return TimedStop(spot, INTERRUPTED, grace)
    if limit is not None:
        return TimedStop(limit, MAX_RUNTIME_EXCEEDED, grace)
    return None


def _attempt(plan: LocalPlan, engine: Engine, say: Callable[[str], None], stop: TimedStop | None) -> Attempt:
    """Start every host (the checkpoints restored into each), supervise them to their end."""
    restored = results.restore_checkpoints(plan)
    started = time.monotonic()
    ends = _Ends()
    hosts = {plan.container(h.name): h.name for h in plan.hosts}
    # Watched from before the hosts exist, so that no end goes unseen.
    stop_watching = engine.watch_ends(contract.LABEL_JOB, plan.project, lambda name: ends.note(hosts.get(name, name)))
    try:
        _up(plan, engine)
        supervised = supervise(plan, engine, say, ends, stop=stop)
    finally:
        stop_watching()
    signalled = supervised.signalled_at
    return Attempt(
        seconds=supervised.ended_at - started,
        hosts=supervised.hosts,
        ended_by=stop.status if signalled is not None and stop is not None else None,
        stop_seconds=supervised.ended_at - signalled if signalled is not None else None,
        restored=restored,
        checkpoints=results.checkpoint_files(plan),
    )


_CLEANING = (
    "smimg: removing the job's containers and network and saving its results (seconds); a third signal abandons it"
)


def _finish(plan: LocalPlan, engine: Engine, output: Path, *, success: bool) -> results.Saved:
    """Remove the containers and network, then save results even when the removal failed (the files are on this host).

    Raises:
        LocalError: the removal failed (naming what is left and the command that removes it), or the results
            could not be saved (naming the run folder that keeps them).
    """
    cause = sys.exc_info()[1]
    try:
        _down(plan, engine)
        removal_error = None
    except SmimgError as exc:  # the engine refused, or is gone
        removal_error = exc
    try:
        results.keep_checkpoints(plan)
        kept_error = None
    except LocalError as exc:
        kept_error = exc  # the results are saved first: they hold a copy of the checkpoints too
    saved = results.save(plan, output, success=success)
    if kept_error is not None and removal_error is None:
        raise kept_error
    if removal_error is not None:
        lost = isinstance(cause, DockerUnavailable)
        first = ""
        if isinstance(cause, SmimgError):
            first = f"the Docker engine stopped answering ({cause.message}); " if lost else f"{cause.message}\nthen "
        names = [plan.container(h.name) for h in plan.hosts]
        raise LocalError(
            f"{first}could not remove job {plan.job.name}'s containers {', '.join(names)} and network "
            f"{plan.network} ({removal_error.message.splitlines()[-1].strip()}); results are in {output}",
            f"{'once the engine answers, ' if lost else ''}remove them: `{_removal_command(plan, names)}` "
            f"(a rerun with --job-name {plan.job.name} does it too)",
        )
    return saved


def _removal_command(plan: LocalPlan, containers: Sequence[str]) -> str:
    return f"docker rm -f {' '.join(containers)} && docker network rm {plan.network}"


@dataclass
class _Ends:
    """Signs that hosts ended (the engine's die event, their log stream closing), which wake the supervisor."""

    seen: dict[str, float] = dataclasses.field(default_factory=dict)  # host -> time.monotonic() of its latest sign
    changed: threading.Event = dataclasses.field(default_factory=threading.Event)

    def note(self, host: str) -> None:
        self.seen[host] = time.monotonic()
        self.changed.set()


def _follow_logs(
    plan: LocalPlan, engine: Engine, say: Callable[[str], None], width: int, ends: _Ends
) -> list[threading.Thread]:
    """One thread per host prints its container's lines as ``algo-2 | ...``, host names padded to ``width``; each
    notes in ``ends`` when its stream ends."""
    lock = threading.Lock()

    def follow(name: str) -> None:
        pending = b""
        try:
            for chunk in engine.logs(plan.container(name)):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                with lock:
                    for line in lines:
                        say(f"{name:<{width}} | {line.decode('utf-8', 'replace')}")
            if pending:
                with lock:
                    say(f"{name:<{width}} | {pending.decode('utf-8', 'replace')}")
        finally:
            ends.note(name)

    threads = [threading.Thread(target=follow, args=(h.name,), daemon=True) for h in plan.hosts]
    for thread in threads:
        thread.start()
    return threads


@dataclass(frozen=True)
class TimedStop:
    """SageMaker stopping every host at one moment (MaxRuntimeInSeconds, a spot reclaim): SIGTERM to each
    container's PID 1, SIGKILL ``grace`` seconds later."""

    at: float  # time.monotonic()
    status: str  # what SageMaker's secondary status would say: MAX_RUNTIME_EXCEEDED or INTERRUPTED
    grace: float

    @property
    def why(self) -> str:
        return "spot interruption" if self.status == INTERRUPTED else "the job reached --max-run"


@dataclass(frozen=True)
class Supervised:
    hosts: tuple[HostResult, ...]
    signalled_at: float | None  # when the timed stop sent SIGTERM (time.monotonic()), if it came
    ended_at: float


def supervise(
    plan: LocalPlan, engine: Engine, say: Callable[[str], None], ends: _Ends, stop: TimedStop | None = None
) -> Supervised:
    """Wait for every host; after the first failure the others get ``STOP_GRACE`` seconds, then are stopped; at
    ``stop.at`` every host still running is stopped as SageMaker stops a job."""
    names = [h.name for h in plan.hosts]
    width = max(len(name) for name in names)
    threads = _follow_logs(plan, engine, say, width, ends)
    ended: dict[str, ContainerState] = {}
    stopped: set[str] = set()
    deadline: float | None = None
    signalled: float | None = None
    killed = False
    while len(ended) < len(names):
        ends.changed.clear()  # before the look: a sign that comes during it wakes the next wait at once
        for name in names:
            if name in ended:
                continue
            state = engine.container_state(plan.container(name))
            if state.ended:
                ended[name] = state
                if state.exit_code != 0 and deadline is None and signalled is None:
                    deadline = time.monotonic() + STOP_GRACE
        running = [name for name in names if name not in ended]
        # A host that failed on its own ended the job first: the timed stop does not relabel that failure.
        if stop is not None and running and signalled is None and deadline is None and time.monotonic() >= stop.at:
            why = f"{stop.why} ({stop.status}): SIGTERM to every host"
            signalled = _signal_all(plan, engine, running, "SIGTERM", say, why)
        elif stop is not None and signalled is not None and not killed and time.monotonic() > signalled + stop.grace:
            _signal_all(plan, engine, running, "SIGKILL", say, f"{stop.grace:g}s after SIGTERM: SIGKILL")
            killed = True
        if deadline is not None and time.monotonic() > deadline:
            for name in running:
                if name not in stopped:
                    say(f"{name:<{width}} | smimg: stopping this host: another host failed {STOP_GRACE:.0f}s ago")
                    engine.stop(plan.container(name), timeout=10)
                    stopped.add(name)
        due = [
            *([deadline] if deadline is not None and set(running) - stopped else []),
            *([stop.at] if stop is not None and signalled is None and deadline is None else []),
            *([signalled + stop.grace] if stop is not None and signalled is not None and not killed else []),
        ]
        ends.changed.wait(_wait(running, ends.seen, due))
    for thread in threads:
        thread.join(timeout=5)
    hosts = tuple(
        HostResult(name, ended[name].exit_code, _failure(plan.host_dir(name)), name in stopped, ended[name].finished_at)
        for name in sorted(names)
    )
    return Supervised(hosts, signalled, time.monotonic())


IDLE_POLL = 1.0  # seconds between looks at hosts with no sign of an end: only a sign that never came needs them
ENDING_POLL = 0.05  # a host whose end was signalled: its state says so within a moment


def _wait(running: Sequence[str], seen: Mapping[str, float], due: Sequence[float]) -> float:
    """How long the supervisor sleeps unless a host's end is signalled: until the next thing due, a short while for
    a host whose end was signalled in the last seconds but whose state does not say so yet, else ``IDLE_POLL``.
    Nothing is asked of the engine meanwhile: on a machine the job keeps busy, polling slowed it."""
    now = time.monotonic()
    ending = any(now - seen[name] < 5 * IDLE_POLL for name in running if name in seen)
    return max(0.0, min([ENDING_POLL if ending else IDLE_POLL, *(at - now + 0.01 for at in due)]))


def _signal_all(
    plan: LocalPlan, engine: Engine, names: Sequence[str], signal: str, say: Callable[[str], None], why: str
) -> float:
    say(f"smimg: {why} ({', '.join(names)})")
    for name in names:
        engine.kill(plan.container(name), signal)
    return time.monotonic()


def _failure(host_dir: Path) -> str | None:
    path = host_dir / contract.FAILURE_FILE
    return path.read_text(errors="replace").strip() or None if path.is_file() else None


def shell(plan: LocalPlan, command: Sequence[str] = ("/bin/bash",), engine: Engine | None = None) -> int:
    """An interactive command in an ``algo-1`` container with the job's mounts and env (entrypoint bypassed).

    Raises:
        ImageNotFound, LocalError: as for ``run``.
    """
    engine = engine or default_engine()
    with job_lock(plan):
        prepare(plan, engine, lambda _line: None)
        first = plan.containers[0]
        try:
            engine.create_network(plan.network, internal=plan.internal, labels=plan.labels)
            entrypoint, arguments = (command[0],), tuple(command[1:])  # the entrypoint bypassed
            tty = sys.stdin.isatty()  # a terminal only for one: `echo ls | smimg local shell` works too
            engine.create_container(
                dataclasses.replace(first, entrypoint=entrypoint, command=arguments, interactive=True, tty=tty)
            )
            return engine.attach(first.name)
        finally:
            with interrupts.shielded(lambda _signum: None):
                _down(plan, engine)
            shutil.rmtree(plan.run_dir, ignore_errors=True)
