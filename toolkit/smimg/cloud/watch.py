"""Following a training job to its end: its status changes and every host's log lines, merged.

SageMaker writes one CloudWatch stream per host (``JOB/algo-N-EPOCH``) once that host first writes; streams are
listed page by page (the SDK reads only the first page, so it misses hosts beyond 50) and read from where the last
poll stopped.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from smimg.adapters import aws
from smimg.errors import AwsError, LaunchError

LOG_GROUP = "/aws/sagemaker/TrainingJobs"
TERMINAL = frozenset({"Completed", "Failed", "Stopped"})
POLL = 2.0  # seconds between polls; DescribeTrainingJob and GetLogEvents are rate-limited per account


@dataclass
class Cursor:
    """Where the watch stands: the last transition shown (how many, and its message), each stream's next token."""

    transitions: int = 0
    message: str = ""
    tokens: dict[str, str | None] = field(default_factory=dict)


def follow(
    name: str,
    say: Callable[[str], None],
    *,
    region: str | None = None,
    poll: float = POLL,
    cursor: Cursor | None = None,
) -> dict[str, Any]:
    """Show the job's secondary-status changes and log lines until it ends; its last DescribeTrainingJob.

    Raises:
        AwsError: a call failed (the job is unknown, credentials, permissions).
    """
    sagemaker, logs = aws.client("sagemaker", region), aws.client("logs", region)
    cursor = cursor or Cursor()
    while True:
        job = describe(sagemaker, name, region)
        _transitions(job, cursor, say)
        for line in new_lines(logs, name, cursor):
            say(line)
        if job["TrainingJobStatus"] in TERMINAL:
            # CloudWatch delivers a host's last lines (often a failure's traceback) a moment after the job ends.
            for _ in range(2):
                time.sleep(min(poll, 2.0))
                if not (lines := new_lines(logs, name, cursor)):
                    break
                for line in lines:
                    say(line)
            return job
        time.sleep(poll)


def describe(sagemaker: Any, name: str, region: str | None) -> dict[str, Any]:
    """DescribeTrainingJob; an unknown job is named, with where it was looked for.

    Raises:
        LaunchError: no such job in this region.
        AwsError: the call failed otherwise.
    """
    try:
        job: dict[str, Any] = aws.call(
            sagemaker.describe_training_job, f"describe training job {name}", TrainingJobName=name
        )
    except AwsError as exc:
        if "Requested resource not found" not in exc.message:
            raise
        raise LaunchError(
            f"no training job {name} in {region or 'this region'}",
            "check the name (`aws sagemaker list-training-jobs`) and --region",
        ) from None
    return job


def _transitions(job: dict[str, Any], cursor: Cursor, say: Callable[[str], None]) -> None:
    """Each new secondary status, and a new message of the current one (capacity retries, spot waits)."""
    transitions = job.get("SecondaryStatusTransitions") or []
    start = cursor.transitions
    if transitions and start == len(transitions) and transitions[-1].get("StatusMessage", "") != cursor.message:
        start -= 1
    for transition in transitions[start:]:
        message = transition.get("StatusMessage", "")
        say(f"smimg: {transition['Status']}" + (f": {message}" if message else ""))
    cursor.transitions = len(transitions)
    cursor.message = transitions[-1].get("StatusMessage", "") if transitions else ""


def new_lines(logs: Any, name: str, cursor: Cursor) -> list[str]:
    """Every host's lines since the cursor, merged by time, as ``algo-2 | ...``."""
    events: list[tuple[int, str, str]] = []
    pages = aws.paginate(
        logs,
        "describe_log_streams",
        f"list the log streams of {name}",
        missing=frozenset({"ResourceNotFoundException"}),  # no log group before an account's first job writes
        logGroupName=LOG_GROUP,
        logStreamNamePrefix=f"{name}/",
    )
    for page in pages:
        for stream in page.get("logStreams", []):
            stream_name = stream["logStreamName"]
            host = stream_name.removeprefix(f"{name}/").rsplit("-", 1)[0]
            events += [(e["timestamp"], host, e["message"]) for e in _read(logs, stream_name, cursor)]
    width = max((len(host) for _, host, _ in events), default=0)
    return [f"{host:<{width}} | {message}" for _, host, message in sorted(events, key=lambda e: (e[0], e[1]))]


def _read(logs: Any, stream: str, cursor: Cursor) -> list[dict[str, Any]]:
    """A stream's events from where the cursor stands to its end for now."""
    events: list[dict[str, Any]] = []
    while True:
        token = cursor.tokens.get(stream)
        kwargs: dict[str, Any] = {"logGroupName": LOG_GROUP, "logStreamName": stream, "startFromHead": True}
        if token is not None:
            kwargs["nextToken"] = token
        page = aws.call(logs.get_log_events, f"read log stream {stream}", **kwargs)
        events += page.get("events", [])
        cursor.tokens[stream] = page.get("nextForwardToken")
        if cursor.tokens[stream] == token or not page.get("events"):
            return events
