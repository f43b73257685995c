"""The local jobs running on this machine: each holds a lock file while it runs; list them, stop one.

A job started in another terminal (or under nohup, tmux, CI) is stopped through its own smimg process, with
SIGTERM: that process removes the containers and network and saves the results, which `docker stop` would not.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from smimg import resources
from smimg.errors import LocalError

STOP_WAIT = 600.0  # seconds `stop` waits for the job's clean-up before it gives up


@dataclass(frozen=True)
class RunningJob:
    """A job whose smimg process holds its lock."""

    name: str
    project: str
    pid: int
    hosts: int
    started: str  # ISO 8601, UTC
    run_dir: str
    output: str


def _locks() -> Path:
    return resources.cache_dir() / "locks"


def _lock_file(project: str) -> Path:
    return _locks() / f"local-{project}.lock"


@contextlib.contextmanager
def hold(job: RunningJob) -> Iterator[None]:
    """Held while a job runs: two runs of one job name would share containers, network and run folder.

    Raises:
        LocalError: another smimg process on this machine runs a job of this name.
    """
    _locks().mkdir(parents=True, exist_ok=True)
    with open(_lock_file(job.project), "a+") as handle:
        if not _lock(handle):
            holder = _read(handle)
            raise LocalError(
                f"a job named {job.name} is already running here (smimg pid {holder.get('pid', '?')})",
                f"wait for it to end, stop it (`smimg local stop {job.name}`), or choose another --job-name",
            ) from None
        handle.truncate(0)
        handle.write(json.dumps(job.__dict__))
        handle.flush()
        yield


def _lock(handle: IO[str]) -> bool:
    """Take the lock; False when a running job holds it. Retried a moment: `running` takes it for an instant to
    look."""
    for _ in range(5):
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            time.sleep(0.05)
    return False


def this_process(name: str, project: str, hosts: int, run_dir: Path, output: Path) -> RunningJob:
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    return RunningJob(name, project, os.getpid(), hosts, started, str(run_dir), str(output))


def _read(handle: IO[str]) -> dict[str, Any]:
    handle.seek(0)
    text = handle.read().strip()
    with contextlib.suppress(ValueError):
        found = json.loads(text)
        if isinstance(found, dict):
            return found
    return {"pid": text} if text.isdigit() else {}


def running() -> list[RunningJob]:
    """Every local job an smimg process on this machine is running, oldest first."""
    found = []
    for path in sorted(_locks().glob("local-*.lock")) if _locks().is_dir() else ():
        with open(path) as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
                continue  # nobody holds it: that job ended
            except BlockingIOError:
                fields = _read(handle)
        # A lock taken but not yet written (a run starting now) has no fields yet.
        with contextlib.suppress(KeyError, TypeError, ValueError):
            found.append(RunningJob(**{**fields, "pid": int(fields["pid"])}))
    return sorted(found, key=lambda job: job.started)


def stop(name: str, wait: float = STOP_WAIT) -> RunningJob:
    """Stop a running job as Ctrl-C in its terminal would (its smimg process cleans up and saves the results), and
    wait until it has.

    Raises:
        LocalError: no such job running, or it did not end within ``wait`` seconds.
    """
    jobs = {job.name: job for job in running()}
    job = jobs.get(name) or next((j for j in jobs.values() if j.project == name), None)
    if job is None:
        known = ", ".join(sorted(jobs)) or "none"
        raise LocalError(f"no local job named {name} is running (running: {known})", "see `smimg local ps`")
    if job.pid <= 0:  # kill(0) or kill(-1) would signal a whole process group, or every process of the user
        raise LocalError(f"job {name}'s lock names no process (pid {job.pid})", "see `smimg local ps`")
    try:
        os.kill(job.pid, signal.SIGTERM)
    except ProcessLookupError:
        return job  # it ended meanwhile
    except PermissionError:
        raise LocalError(f"job {name} runs as another user (pid {job.pid})", "stop it as that user") from None
    deadline = time.monotonic() + wait
    while any(j.pid == job.pid and j.started == job.started for j in running()):  # a rerun of the name is not it
        if time.monotonic() > deadline:
            raise LocalError(
                f"job {name} (smimg pid {job.pid}) is still cleaning up after {wait:.0f}s",
                f"see its terminal; `kill -9 {job.pid}` leaves its containers, which a rerun of the name removes",
            )
        time.sleep(0.2)
    return job
