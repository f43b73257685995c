"""`smimg launch`'s executor: check what the plan needs from AWS, upload the code, create the job, watch it to its
end. Ctrl-C detaches (the job runs on); with ``stop_on_interrupt`` it stops the job and watches it stop."""

from __future__ import annotations

import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smimg.adapters import aws
from smimg.cloud import watch
from smimg.cloud.plan import LaunchPlan
from smimg.errors import LaunchError

MAX_RUNTIME_EXCEEDED = "MaxRuntimeExceeded"


@dataclass(frozen=True)
class CloudResult:
    """How a training job ended, from its last DescribeTrainingJob."""

    name: str
    status: str  # TrainingJobStatus
    secondary: str  # SecondaryStatus
    failure: str | None
    model: str | None  # ModelArtifacts.S3ModelArtifacts
    training_seconds: int | None
    billable_seconds: int | None

    @property
    def exit_code(self) -> int:
        """0 for Completed; 124 past MaxRuntimeInSeconds, as `smimg local run --max-run` and timeout(1); else 1 (a
        stopped job did not succeed)."""
        if self.status == "Completed":
            return 0
        return 124 if self.secondary == MAX_RUNTIME_EXCEEDED else 1

    @classmethod
    def from_description(cls, job: dict[str, Any]) -> CloudResult:
        return cls(
            name=str(job["TrainingJobName"]),
            status=str(job["TrainingJobStatus"]),
            secondary=str(job.get("SecondaryStatus", "")),
            failure=job.get("FailureReason"),
            model=(job.get("ModelArtifacts") or {}).get("S3ModelArtifacts"),
            training_seconds=job.get("TrainingTimeInSeconds"),
            billable_seconds=job.get("BillableTimeInSeconds"),
        )


def launch(
    plan: LaunchPlan,
    say: Callable[[str], None],
    *,
    region: str | None = None,
    stop_on_interrupt: bool = False,
    poll: float = watch.POLL,
) -> CloudResult:
    """Create the planned job and watch it to its end.

    Raises:
        LaunchError: an input channel is empty or missing.
        AwsError: an AWS call failed (credentials, permissions, a refused request).
        KeyboardInterrupt: Ctrl-C detached from the job (it keeps running), or stopped it and then detached.
    """
    name = plan.job.name
    _check_inputs(plan, region)
    if plan.code_uri is not None and plan.job.source_dir is not None:
        _upload_code(plan.job.source_dir, plan.code_uri, region)
        say(f"smimg: code from {plan.job.source_dir} uploaded to {plan.code_uri}")
    sagemaker = aws.client("sagemaker", region)
    aws.call(sagemaker.create_training_job, f"create training job {name}", **plan.request)
    say(f"smimg: created training job {name}; Ctrl-C detaches (the job keeps running)")
    return attach(name, say, region=region, stop_on_interrupt=stop_on_interrupt, poll=poll)


def attach(
    name: str,
    say: Callable[[str], None],
    *,
    region: str | None = None,
    stop_on_interrupt: bool = False,
    poll: float = watch.POLL,
) -> CloudResult:
    """Watch a job to its end (its status changes and every host's lines).

    Raises:
        AwsError: an AWS call failed.
        KeyboardInterrupt: as for ``launch``.
    """
    cursor = watch.Cursor()
    try:
        return CloudResult.from_description(watch.follow(name, say, region=region, poll=poll, cursor=cursor))
    except KeyboardInterrupt:
        if not stop_on_interrupt:
            say(f"smimg: detached; {name} keeps running: `smimg jobs attach {name}` watches it again")
            raise
    stop(name, region)
    say(f"smimg: stopping {name}: every host gets SIGTERM, then SIGKILL 120 s later (Ctrl-C detaches)")
    try:
        return CloudResult.from_description(watch.follow(name, say, region=region, poll=poll, cursor=cursor))
    except KeyboardInterrupt:
        say(f"smimg: detached; {name} is stopping: `smimg jobs attach {name}` watches it")
        raise


def stop(name: str, region: str | None = None) -> None:
    """StopTrainingJob.

    Raises:
        AwsError: the job is unknown or has ended, or the call failed.
    """
    sagemaker = aws.client("sagemaker", region)
    aws.call(sagemaker.stop_training_job, f"stop training job {name}", TrainingJobName=name)


def _check_inputs(plan: LaunchPlan, region: str | None) -> None:
    """The output bucket exists and every channel holds an object: else SageMaker fails the job only after
    starting its instances."""
    s3 = aws.client("s3", region)
    bucket, _ = aws.split_s3_uri(plan.job.output)
    if (
        aws.call(s3.head_bucket, f"find bucket {bucket}", missing=frozenset({"404", "NoSuchBucket"}), Bucket=bucket)
        is None
    ):
        raise LaunchError(
            f"the output bucket {bucket} does not exist", f"create it (`aws s3 mb s3://{bucket}`) or pass --output"
        )
    for channel, uri in plan.job.channels:
        bucket, prefix = aws.split_s3_uri(uri)
        listed = aws.call(s3.list_objects_v2, f"list {uri}", Bucket=bucket, Prefix=prefix, MaxKeys=1)
        if not listed.get("KeyCount"):
            raise LaunchError(
                f"--input {channel}={uri} holds no objects: SageMaker would fail the job after starting its instances",
                f"check the URI (`aws s3 ls {uri}`) or upload the data first (`aws s3 sync FOLDER {uri}`)",
            )


def _upload_code(source_dir: Path, uri: str, region: str | None) -> None:
    """The code folder as a gzipped tar with its files at the top, as the SageMaker SDK uploads it."""
    bucket, key = aws.split_s3_uri(uri)
    s3 = aws.client("s3", region)
    with tempfile.TemporaryDirectory(prefix="smimg-code-") as scratch:
        archive = Path(scratch) / "sourcedir.tar.gz"
        with tarfile.open(archive, "w:gz") as tar:
            for path in sorted(source_dir.iterdir()):
                tar.add(path, arcname=path.name)
        aws.call(s3.upload_file, f"upload the code to {uri}", Filename=str(archive), Bucket=bucket, Key=key)
