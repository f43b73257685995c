"""Following a training job to its end: its status changes and every host's log lines, merged.

SageMaker writes one CloudWatch stream per host (``JOB/algo-N-EPOCH``) once that host first writes; streams are
listed page by page (the SDK reads only the first page, so it misses hosts beyond 50) and read from where the last
poll stopped: by the stream's forward token, or, once a token has expired (after 24 hours), from the time of the
last line shown, skipping the lines of that millisecond already shown (as the SDK reads every poll).

A watch outlives throttling and brief outages (botocore's own retries spent) once it has had one answer: it backs
off, up to a minute between polls, and gives up only after ``OUTAGE`` seconds without one.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from smimg.adapters import aws
from smimg.errors import AwsError, LaunchError

LOG_GROUP = "/aws/sagemaker/TrainingJobs"
TERMINAL = frozenset({"Completed", "Failed", "Stopped"})
POLL = 2.0  # seconds between polls; DescribeTrainingJob and GetLogEvents are rate-limited per account
MAX_BACKOFF = 60.0
OUTAGE = 900.0  # seconds of transient failures in a row before the watch is given up
Progress = Callable[[Mapping[str, Any]], None]  # gets each DescribeTrainingJob of a watch


@dataclass
class Cursor:
    """Where the watch stands: the last transition shown (how many, and its message), each stream's next token and
    its last line shown (its timestamp, and how many lines of that millisecond were shown)."""

    transitions: int = 0
    message: str = ""
    tokens: dict[str, str | None] = field(default_factory=dict)
    positions: dict[str, tuple[int, int]] = field(default_factory=dict)


def follow(
    name: str,
    say: Callable[[str], None],
    *,
    region: str | None = None,
    poll: float = POLL,
    cursor: Cursor | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Show the job's secondary-status changes and log lines until it ends; its last DescribeTrainingJob. Each
    description also goes to ``progress`` (a terminal's status line).

    Raises:
        AwsError: a call failed (the job is unknown, credentials, permissions).
    """
    sagemaker, logs = aws.client("sagemaker", region), aws.client("logs", region)
    cursor = cursor or Cursor()
    outage: float | None = None  # when the current run of transient failures began
    wait, answered = poll, False
    while True:
        try:
            job = describe(sagemaker, name, region)
            answered = True
            lines = new_lines(logs, name, cursor)
        except AwsError as exc:
            outage = outage or time.monotonic()
            # Before the first answer a "transient" failure is more likely a wrong region or endpoint: said at once.
            if not exc.transient or not answered or time.monotonic() - outage > OUTAGE:
                raise
            wait = min(max(wait, poll) * 2, MAX_BACKOFF)
            say(f"smimg: {exc.message}; asking again in {wait:.0f} s")
            time.sleep(wait)
            continue
        outage, wait = None, poll
        _transitions(job, cursor, say)
        if progress is not None:
            progress(job)
        for line in lines:
            say(line)
        if job["TrainingJobStatus"] in TERMINAL:
            _last_lines(logs, name, cursor, say, poll)
            return job
        time.sleep(poll)


def _last_lines(logs: Any, name: str, cursor: Cursor, say: Callable[[str], None], poll: float) -> None:
    """CloudWatch delivers a host's last lines (often a failure's traceback) a moment after the job ends."""
    for _ in range(2):
        time.sleep(min(poll, 2.0))
        try:
            lines = new_lines(logs, name, cursor)
        except AwsError as exc:
            if not exc.transient:
                raise
            continue  # the job's outcome is known; a throttled last read costs at most its last lines
        if not lines:
            return
        for line in lines:
            say(line)


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


def summary(job: Mapping[str, Any], now: datetime.datetime) -> str:
    """One line for a terminal: the job, its secondary status and how long it has been in it, its whole time."""
    transitions = job.get("SecondaryStatusTransitions") or []
    current = transitions[-1] if transitions else {}
    status = str(current.get("Status") or job.get("SecondaryStatus") or job.get("TrainingJobStatus", ""))
    line = f"{job.get('TrainingJobName', '')}: {status}"
    if since := current.get("StartTime"):
        line += f" for {_duration(now - since)}"
    if created := job.get("CreationTime"):
        line += f", {_duration(now - created)} since it was created"
    return line


def _duration(delta: datetime.timedelta) -> str:
    seconds = max(0, int(delta.total_seconds()))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


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
    """Every host's lines since the cursor, merged by time, as ``algo-2 | ...``.

    Raises:
        AwsError: a call failed; the cursor is left where it stood, so the next call reads the same lines again.
    """
    tokens, positions = dict(cursor.tokens), dict(cursor.positions)
    try:
        return _new_lines(logs, name, cursor)
    except AwsError:
        cursor.tokens, cursor.positions = tokens, positions
        raise


def _new_lines(logs: Any, name: str, cursor: Cursor) -> list[str]:
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
        elif stream in cursor.positions:
            kwargs["startTime"] = cursor.positions[stream][0]
        try:
            page = aws.call(logs.get_log_events, f"read log stream {stream}", **kwargs)
        except AwsError as exc:
            if token is None or exc.code != "InvalidParameterException":
                raise
            cursor.tokens[stream] = None  # expired (they last 24 hours): read on from the last line's time
            continue
        fresh = page.get("events", [])
        if token is None and stream in cursor.positions:
            fresh = _unseen(fresh, cursor.positions[stream])
        events += fresh
        _advance(cursor, stream, fresh)
        cursor.tokens[stream] = page.get("nextForwardToken")
        if cursor.tokens[stream] == token or not page.get("events"):
            return events


def _unseen(events: list[dict[str, Any]], position: tuple[int, int]) -> list[dict[str, Any]]:
    """Events read again from the last shown line's millisecond, less the ``shown`` lines of it already shown."""
    timestamp, shown = position
    index = 0
    while index < len(events) and index < shown and events[index]["timestamp"] == timestamp:
        index += 1
    return events[index:]


def _advance(cursor: Cursor, stream: str, events: list[dict[str, Any]]) -> None:
    for event in events:
        timestamp, shown = cursor.positions.get(stream, (event["timestamp"], 0))
        cursor.positions[stream] = (
            (timestamp, shown + 1) if timestamp == event["timestamp"] else (event["timestamp"], 1)
        )
