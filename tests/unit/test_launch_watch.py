"""The log follower against CloudWatch Logs (moto): every host's stream, past the first page of 50, each line once,
streams that appear late, a log group that does not exist yet."""

from __future__ import annotations

import time
from typing import Any

import pytest

from smimg.cloud import watch
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
