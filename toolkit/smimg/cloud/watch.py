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

LOG_GROUP = "/aws/sagemaker/TrainingJobs"
TERMINAL = frozenset({"Completed", "Failed", "Stopped"})
POLL = 2.0  # seconds between polls; DescribeTrainingJob and GetLogEvents are rate-limited per account


@dataclass
class Cursor:
    """Where the watch stands: transitions shown, and each stream's next token."""

    transitions: int = 0
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
        job: dict[str, Any] = aws.call(
            sagemaker.describe_training_job, f"describe training job {name}", TrainingJobName=name
        )
        transitions = job.get("SecondaryStatusTransitions") or []
        for transition in transitions[cursor.transitions :]:
            message = transition.get("StatusMessage", "")
            say(f"smimg: {transition['Status']}" + (f": {message}" if message else ""))
        cursor.transitions = len(transitions)
        ended = job["TrainingJobStatus"] in TERMINAL
        for line in new_lines(logs, name, cursor):  # after the end too: the last lines arrive with it
            say(line)
        if ended:
            return job
        time.sleep(poll)


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
