"""The local API's training jobs: one record per job, kept as JSON in the state folder so that finished jobs are
still listed after a restart, and rendered as DescribeTrainingJob and ListTrainingJobs answer."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from smimg.training_api.plan import ApiError, warm_pool_differences

IN_PROGRESS, COMPLETED, FAILED, STOPPING, STOPPED = "InProgress", "Completed", "Failed", "Stopping", "Stopped"
INTERNAL_ERROR = "InternalServerError"  # a failure of the service, not of the job's code
AVAILABLE, IN_USE, REUSED, TERMINATED = "Available", "InUse", "Reused", "Terminated"  # WarmPoolStatus.Status
# What the secondary statuses say on SageMaker.
MESSAGES = {
    "Starting": "Preparing the instances for training",
    "Downloading": "Downloading input data",
    "Training": "Training image download completed. Training in progress.",
    "Uploading": "Uploading generated training model",
    "Completed": "Training job completed",
    "Failed": "Training job failed",
    "Stopping": "Stopping the training job",
    "Stopped": "The training job was stopped",
    "MaxRuntimeExceeded": "Training job exceeded its MaxRuntimeInSeconds and was stopped",
    "Interrupted": "The spot instances were interrupted (simulated: smimg local api --spot-interrupt-after)",
}
# Managed spot's discount on the on-demand price, for BillableTimeInSeconds: a typical figure (the real one varies by
# instance type, region and hour), so that a launcher's savings report has something true to its shape to show.
SPOT_SAVINGS = 0.7


class Store:
    """Job records by name; every change is written through to ``folder`` (one JSON file per job)."""

    def __init__(self, folder: Path, region: str, account: str) -> None:
        self.folder = folder
        self.region = region
        self.account = account
        self._lock = threading.Lock()
        self._jobs: dict[str, dict[str, Any]] = {}
        folder.mkdir(parents=True, exist_ok=True)
        for path in sorted(folder.glob("*.json")):
            record = json.loads(path.read_text())
            if record["TrainingJobStatus"] in (IN_PROGRESS, STOPPING):
                # Its containers went with the server that ran them, and so did its warm pool.
                _end(record, FAILED, "Failed", "the local SageMaker API stopped while the job ran", pool=False)
            self._jobs[record["TrainingJobName"]] = record

    def arn(self, name: str) -> str:
        return f"arn:aws:sagemaker:{self.region}:{self.account}:training-job/{name.lower()}"

    def create(self, request: Mapping[str, Any]) -> dict[str, Any]:
        name = str(request["TrainingJobName"])
        with self._lock:
            if name in self._jobs:
                raise ApiError(
                    "ResourceInUse",
                    f"Training job names must be unique within an AWS account and region, "
                    f"and a training job with this name already exists ({self.arn(name)})",
                )
            now = time.time()
            record = {
                **request,
                "TrainingJobName": name,
                "TrainingJobArn": self.arn(name),
                "TrainingJobStatus": IN_PROGRESS,
                "SecondaryStatus": "Starting",
                "CreationTime": now,
                "LastModifiedTime": now,
                "SecondaryStatusTransitions": [_transition("Starting", now)],
            }
            pool = self._warm_pool_for(record, now)
            if pool is not None:  # the job takes over that job's instances
                pool["WarmPoolStatus"] = {
                    "Status": REUSED,
                    "ReusedByJob": name,
                    "ResourceRetainedBillableTimeInSeconds": round(now - pool["TrainingEndTime"]),
                }
                self._save(pool)
                record["WarmPoolStatus"] = {"Status": IN_USE}
            self._jobs[name] = record
            self._save(record)
            return record

    def _warm_pool_for(self, record: dict[str, Any], now: float) -> dict[str, Any] | None:
        """The newest Available warm pool the new job matches; a job takes one only when it keeps one itself."""
        if not _keeps_pool(record):
            return None
        pools = [job for job in self._jobs.values() if _settle(job, now) == AVAILABLE]
        for job in sorted(pools, key=lambda j: j["TrainingEndTime"], reverse=True):
            if not warm_pool_differences(job, record):
                return job
        return None

    def get(self, name: str) -> dict[str, Any]:
        with self._lock:
            if name not in self._jobs:
                raise ApiError("ValidationException", f"Requested resource not found: training job {name}")
            _settle(self._jobs[name], time.time())
            copy: dict[str, Any] = json.loads(json.dumps(self._jobs[name]))  # the caller may keep it
            return copy

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._jobs, key=lambda n: self._jobs[n]["CreationTime"], reverse=True)

    def secondary(self, name: str, status: str) -> None:
        with self._lock:
            record = self._jobs[name]
            now = time.time()
            if status == "Training":
                record.setdefault("TrainingStartTime", now)  # a spot restart trains on: one training time
            _close(record, now)
            record["SecondaryStatus"] = status
            record["SecondaryStatusTransitions"].append(_transition(status, now))
            record["LastModifiedTime"] = now
            self._save(record)

    def mark_stopping(self, name: str) -> None:
        """StopTrainingJob's first step, only for a job still in progress.

        Raises:
            ApiError: the job has ended (or is stopping) already.
        """
        with self._lock:
            record = self._jobs[name]
            if record["TrainingJobStatus"] != IN_PROGRESS:
                raise ApiError(
                    "ValidationException",
                    f"The request was rejected because the training job is in status {record['TrainingJobStatus']}.",
                )
            record.update(TrainingJobStatus=STOPPING, LastModifiedTime=time.time())
            self._save(record)

    def update(self, name: str, **fields: Any) -> None:
        with self._lock:
            self._jobs[name].update(fields, LastModifiedTime=time.time())
            self._save(self._jobs[name])

    def finish(self, name: str, status: str, secondary: str, reason: str | None = None) -> None:
        with self._lock:
            # SageMaker keeps the pool of a job that completed, was stopped or failed in its own code; not of one
            # that failed in the service.
            _end(self._jobs[name], status, secondary, reason, pool=not (reason or "").startswith(INTERNAL_ERROR))
            self._save(self._jobs[name])

    def _save(self, record: Mapping[str, Any]) -> None:
        path = self.folder / f"{record['TrainingJobName']}.json"
        partial = path.with_suffix(".partial")
        partial.write_text(json.dumps(record, indent=1))
        partial.replace(path)


def _transition(status: str, at: float) -> dict[str, Any]:
    return {"Status": status, "StartTime": at, "StatusMessage": MESSAGES.get(status, status)}


def _close(record: dict[str, Any], at: float) -> None:
    transitions = record["SecondaryStatusTransitions"]
    if transitions and "EndTime" not in transitions[-1]:
        transitions[-1]["EndTime"] = at


def _keeps_pool(record: Mapping[str, Any]) -> bool:
    """Warm pools are for on-demand, single-group jobs that ask for one."""
    keep = int((record.get("ResourceConfig") or {}).get("KeepAlivePeriodInSeconds") or 0)
    return keep > 0 and not record.get("EnableManagedSpotTraining")


def _settle(record: dict[str, Any], now: float) -> str | None:
    """A warm pool's status as of ``now``: an Available one ends (Terminated) once its keep-alive has passed since
    its job ended (a keep-alive updated to 0 ends it at once); its retained time counts until then."""
    pool = record.get("WarmPoolStatus")
    if not pool:
        return None
    if pool["Status"] == AVAILABLE:
        keep = int(record["ResourceConfig"].get("KeepAlivePeriodInSeconds") or 0)
        retained = now - record["TrainingEndTime"]
        pool["ResourceRetainedBillableTimeInSeconds"] = round(min(retained, keep))
        if retained >= keep:
            pool["Status"] = TERMINATED
    return str(pool["Status"])


def _end(record: dict[str, Any], status: str, secondary: str, reason: str | None, pool: bool = True) -> None:
    now = time.time()
    _close(record, now)
    record["SecondaryStatusTransitions"].append({**_transition(secondary, now), "EndTime": now})
    record.update(TrainingJobStatus=status, SecondaryStatus=secondary, TrainingEndTime=now, LastModifiedTime=now)
    started = record.get("TrainingStartTime", now)
    record["TrainingTimeInSeconds"] = training = max(1, round(now - started))
    # Managed spot is billed at the spot price: BillableTimeInSeconds is the training time scaled to it.
    spot = record.get("EnableManagedSpotTraining")
    record["BillableTimeInSeconds"] = max(1, round(training * (1 - SPOT_SAVINGS))) if spot else training
    if reason:
        record["FailureReason"] = reason[:1024]
    if pool and _keeps_pool(record):
        record["WarmPoolStatus"] = {"Status": AVAILABLE, "ResourceRetainedBillableTimeInSeconds": 0}
    elif record.get("WarmPoolStatus"):  # it ran on a pool that ends with it
        record["WarmPoolStatus"] = {"Status": TERMINATED, "ResourceRetainedBillableTimeInSeconds": 0}


def summary(record: Mapping[str, Any]) -> dict[str, Any]:
    """A ListTrainingJobs entry."""
    keys = ("TrainingJobName", "TrainingJobArn", "CreationTime", "TrainingEndTime", "LastModifiedTime",
            "TrainingJobStatus", "SecondaryStatus", "WarmPoolStatus")  # fmt: skip
    return {key: record[key] for key in keys if key in record}
