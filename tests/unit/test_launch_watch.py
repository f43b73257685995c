"""The log follower against CloudWatch Logs (moto): every host's stream, past the first page of 50, each line once,
streams that appear late, a log group that does not exist yet."""

from __future__ import annotations

import contextlib
import datetime
import time
from typing import Any

import pytest

from smimg.cloud import watch
from smimg.errors import AwsError
from tests.conftest import Moto

pytestmark = pytest.mark.aws


@pytest.fixture
def logs(aws_env: Moto, monkeypatch: pytest.MonkeyPatch) -> Any:
    import boto3

    monkeypatch.setenv("AWS_ENDPOINT_URL_CLOUDWATCH_LOGS", aws_env.endpoint)
    return boto3.client("logs", region_name="us-east-1")


def put(logs: Any, stream: str, *messages: str) -> None:
    now = int(time.time() * 1000)
    events = [{"timestamp": now + i, "message": m} for i, m in enumerate(messages)]
    logs.put_log_events(logGroupName=watch.LOG_GROUP, logStreamName=stream, logEvents=events)


def group(logs: Any) -> None:
    """The log group, which the first job's host creates (and a test before this one may have)."""
    with contextlib.suppress(logs.exceptions.ResourceAlreadyExistsException):
        logs.create_log_group(logGroupName=watch.LOG_GROUP)


def test_every_hosts_lines_once_past_the_first_page_and_streams_that_appear_late(logs: Any) -> None:
    name = f"job-{time.monotonic_ns()}"
    cursor = watch.Cursor()
    assert watch.new_lines(logs, name, cursor) == []  # no log group yet: the account's first job
    logs.create_log_group(logGroupName=watch.LOG_GROUP)
    for host in range(1, 61):  # more hosts than one page of streams holds (50)
        logs.create_log_stream(logGroupName=watch.LOG_GROUP, logStreamName=f"{name}/algo-{host}-1700000000")
        put(logs, f"{name}/algo-{host}-1700000000", f"hello from {host}")
    first = watch.new_lines(logs, name, cursor)
    assert len(first) == 60 and "algo-60 | hello from 60" in first and "algo-1  | hello from 1" in first
    assert watch.new_lines(logs, name, cursor) == []  # nothing new: nothing again
    put(logs, f"{name}/algo-7-1700000000", "later", "and more")
    logs.create_log_stream(logGroupName=watch.LOG_GROUP, logStreamName=f"{name}/algo-61-1700000000")
    put(logs, f"{name}/algo-61-1700000000", "a late host")
    assert watch.new_lines(logs, name, cursor) == ["algo-7  | later", "algo-7  | and more", "algo-61 | a late host"]


def test_a_token_past_its_24_hours_reads_on_from_the_last_lines_time_without_repeats(logs: Any) -> None:
    name = f"job-{time.monotonic_ns()}"
    stream = f"{name}/algo-1-1700000000"
    group(logs)
    logs.create_log_stream(logGroupName=watch.LOG_GROUP, logStreamName=stream)
    now = int(time.time() * 1000)
    # Lines sharing one millisecond: read again from it once the token has expired, the ones shown are skipped.
    logs.put_log_events(
        logGroupName=watch.LOG_GROUP,
        logStreamName=stream,
        logEvents=[{"timestamp": now, "message": m} for m in ("a", "b")],
    )
    cursor = watch.Cursor()
    assert watch.new_lines(logs, name, cursor) == ["algo-1 | a", "algo-1 | b"]
    cursor.tokens[stream] = "f/expired"  # CloudWatch refuses a token past its 24 hours: InvalidParameterException
    logs.put_log_events(
        logGroupName=watch.LOG_GROUP,
        logStreamName=stream,
        logEvents=[{"timestamp": now, "message": "c"}, {"timestamp": now + 1, "message": "d"}],
    )
    assert watch.new_lines(logs, name, cursor) == ["algo-1 | c", "algo-1 | d"]
    assert watch.new_lines(logs, name, cursor) == []


class Throttled:
    """A client whose named method is throttled on the given calls (1 for its first; botocore's retries spent)."""

    def __init__(self, client: Any, method: str, *throttled: int) -> None:
        self.client, self.method, self.throttled, self.calls = client, method, set(throttled), 0

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.client, name)
        if name != self.method:
            return method

        def call(**kwargs: Any) -> Any:
            from botocore.exceptions import ClientError

            self.calls += 1
            if self.calls in self.throttled:
                raise ClientError({"Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"}}, name)
            return method(**kwargs)

        return call


class Jobs:
    """DescribeTrainingJob's answers, one per call: InProgress, then Completed."""

    def __init__(self, name: str) -> None:
        self.answers = [("InProgress", "Training"), ("Completed", "Completed")]
        self.name = name

    def describe_training_job(self, TrainingJobName: str) -> dict[str, Any]:
        status, secondary = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        transitions = [{"Status": "Training", "StatusMessage": "Training image download completed."}]
        return {
            "TrainingJobName": TrainingJobName,
            "TrainingJobStatus": status,
            "SecondaryStatus": secondary,
            "SecondaryStatusTransitions": transitions,
        }


def test_a_throttled_watch_backs_off_and_shows_every_line_once(logs: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"job-{time.monotonic_ns()}"
    group(logs)
    for host in (1, 2):
        logs.create_log_stream(logGroupName=watch.LOG_GROUP, logStreamName=f"{name}/algo-{host}-1700000000")
        put(logs, f"{name}/algo-{host}-1700000000", f"hello from {host}")
    clients = {
        "sagemaker": Throttled(Jobs(name), "describe_training_job", 2, 3),
        # The second read is algo-1's page after its first line: that line is read again, not lost.
        "logs": Throttled(logs, "get_log_events", 2, 3, 4),
    }
    monkeypatch.setattr(watch.aws, "client", lambda service, region: clients[service])
    said: list[str] = []
    seen: list[Any] = []
    job = watch.follow(name, said.append, region="us-east-1", poll=0.01, progress=seen.append)
    assert job["TrainingJobStatus"] == "Completed"
    assert [j["TrainingJobStatus"] for j in seen] == ["Completed"]  # only polls that were answered whole
    retries = [line for line in said if "asking again" in line]
    assert len(retries) == 5 and "ThrottlingException: Rate exceeded; asking again in" in retries[0], said
    # A line read before a later read of the same poll was throttled is shown once, neither lost nor repeated.
    assert [line for line in said if "|" in line] == ["algo-1 | hello from 1", "algo-2 | hello from 2"]


def test_a_watch_gives_up_on_a_lasting_outage_and_at_once_on_a_lasting_error(
    logs: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"job-{time.monotonic_ns()}"
    clients = {"sagemaker": Throttled(Jobs(name), "describe_training_job", *range(2, 100)), "logs": logs}
    monkeypatch.setattr(watch.aws, "client", lambda service, region: clients[service])
    monkeypatch.setattr(watch, "OUTAGE", 0.05)
    said: list[str] = []
    with pytest.raises(AwsError, match="ThrottlingException") as lost:
        watch.follow(name, said.append, region="us-east-1", poll=0.01)
    assert lost.value.transient and 2 <= len(said) < 10, said

    class Denied(Jobs):
        def describe_training_job(self, TrainingJobName: str) -> dict[str, Any]:
            from botocore.exceptions import ClientError

            raise ClientError({"Error": {"Code": "ExpiredTokenException", "Message": "expired"}}, "Describe")

    clients["sagemaker"] = Denied(name)
    said.clear()
    with pytest.raises(AwsError, match="ExpiredTokenException"):
        watch.follow(name, said.append, region="us-east-1", poll=0.01)
    assert said == []
    # Never answered at all (a wrong region or endpoint fails as a connection would): said at once, no back-off.
    clients["sagemaker"] = Throttled(Jobs(name), "describe_training_job", 1)
    with pytest.raises(AwsError, match="ThrottlingException"):
        watch.follow(name, said.append, region="us-east-1", poll=0.01)
    assert said == []


def test_a_terminals_status_line_says_how_long_the_job_has_been_in_its_state() -> None:
    utc = datetime.timezone.utc
    created = datetime.datetime(2026, 11, 22, 8, 0, 0, tzinfo=utc)
    job = {
        "TrainingJobName": "bert-1",
        "TrainingJobStatus": "InProgress",
        "SecondaryStatus": "Training",
        "CreationTime": created,
        "SecondaryStatusTransitions": [
            {"Status": "Starting", "StartTime": created},
            {"Status": "Training", "StartTime": created + datetime.timedelta(minutes=4)},
        ],
    }
    now = created + datetime.timedelta(hours=1, minutes=7, seconds=9)
    assert watch.summary(job, now) == "bert-1: Training for 1h03m, 1h07m since it was created"
    fresh = {"TrainingJobName": "bert-2", "TrainingJobStatus": "InProgress", "CreationTime": created}
    assert (
        watch.summary(fresh, created + datetime.timedelta(seconds=42))
        == "bert-2: InProgress, 0m42s since it was created"
    )
