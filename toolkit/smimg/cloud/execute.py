"""`smimg launch`'s executor: check what the plan needs from AWS, upload the code, create the job, watch it to its
end. Ctrl-C detaches (the job runs on); with ``stop_on_interrupt`` it stops the job and watches it stop."""

from __future__ import annotations

import tarfile
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from smimg import interrupts
from smimg.adapters import aws
from smimg.cloud import watch
from smimg.cloud.image import check_region
from smimg.cloud.plan import LaunchPlan
from smimg.errors import AwsError, LaunchError, WatchLost
from smimg.local import MAX_RUNTIME_EXCEEDED
from smimg.refs import ImageRef, is_valid
from smimg.training_api.plan import warm_pool_differences


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
    warm_pool: str | None = None  # WarmPoolStatus.Status
    keep_alive: int = 0  # KeepAlivePeriodInSeconds

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
            warm_pool=(job.get("WarmPoolStatus") or {}).get("Status"),
            keep_alive=int((job.get("ResourceConfig") or {}).get("KeepAlivePeriodInSeconds") or 0),
        )


def resolve_region(region: str | None, image: str | None = None) -> str:
    """``--region``, else the standard chain's (AWS_REGION, AWS_DEFAULT_REGION, the profile's), else the region of
    the image's ECR: one region for every call of a launch.

    Raises:
        LaunchError: none is set.
    """
    location = ImageRef.parse(image).ecr if image and is_valid(image) else None
    region = region or aws.configured_region() or (location[1] if location else None)
    if not region:
        raise LaunchError("no AWS region", "pass --region, or set AWS_REGION (or a profile's region)")
    return region


def launch(
    plan: LaunchPlan,
    say: Callable[[str], None],
    *,
    region: str,
    stop_on_interrupt: bool = False,
    poll: float = watch.POLL,
    progress: watch.Progress | None = None,
) -> CloudResult:
    """Create the planned job and watch it to its end (``progress`` gets each DescribeTrainingJob).

    Raises:
        LaunchError: the job's name is taken, the output bucket or an input channel is missing or empty.
        AwsError: an AWS call failed before the job existed (credentials, permissions, a refused request).
        WatchLost: watching failed; the job runs on.
        KeyboardInterrupt: Ctrl-C detached from the job (it keeps running), or stopped it and then detached.
    """
    name = plan.job.name
    check_region(plan.job.image, region)
    sagemaker = aws.client("sagemaker", region)
    _check_name(sagemaker, name, region)
    _check_inputs(plan, region)
    if plan.job.keep_alive:
        try:
            say(warm_pool_decision(sagemaker, plan.request, region))
        except AwsError as exc:  # only advice: the job is launched either way
            say(f"smimg: warm pool: could not check the pools ({exc.message})")
    if plan.code_uri is not None and plan.job.source_dir is not None:
        _upload_code(plan.job.source_dir, plan.code_uri, region)
        say(f"smimg: code from {plan.job.source_dir} uploaded to {plan.code_uri}")
    say(f"smimg: creating training job {name} in {region}")
    interrupted = False
    try:  # a Ctrl-C during the call would leave a job created and unreported: it waits for the answer
        with interrupts.shielded(lambda _signum: say("smimg: the job is being created; Ctrl-C is handled after")):
            aws.call(sagemaker.create_training_job, f"create training job {name}", **plan.request)
    except KeyboardInterrupt:
        interrupted = True
    what = "stops the job" if stop_on_interrupt else "detaches (the job keeps running)"
    say(f"smimg: created {name}; Ctrl-C {what}")
    watching = _Watching(name, say, region, poll, progress)
    if interrupted:
        return _interrupted(watching, stop_on_interrupt)
    return _attached(watching, stop_on_interrupt)


def attach(
    name: str,
    say: Callable[[str], None],
    *,
    region: str,
    stop_on_interrupt: bool = False,
    poll: float = watch.POLL,
    progress: watch.Progress | None = None,
) -> CloudResult:
    """Watch a job to its end (its status changes and every host's lines, from the first); ``progress`` gets each
    DescribeTrainingJob.

    Raises:
        LaunchError: no such job.
        WatchLost: watching failed; the job runs on.
        KeyboardInterrupt: as for ``launch``.
    """
    return _attached(_Watching(name, say, region, poll, progress), stop_on_interrupt)


@dataclass(frozen=True)
class _Watching:
    """One watch: of which job, where, whom it tells (lines; each description to ``progress``), how often."""

    name: str
    say: Callable[[str], None]
    region: str
    poll: float
    progress: watch.Progress | None
    cursor: watch.Cursor = field(default_factory=watch.Cursor)


def _attached(watching: _Watching, stop_on_interrupt: bool) -> CloudResult:
    try:
        return _follow(watching)
    except KeyboardInterrupt:
        return _interrupted(watching, stop_on_interrupt)


def _interrupted(watching: _Watching, stop_on_interrupt: bool) -> CloudResult:
    """Ctrl-C while watching: detach (re-raising it), or stop the job and watch it stop."""
    name, say = watching.name, watching.say
    if not stop_on_interrupt:
        say(f"smimg: detached; {name} keeps running: `smimg jobs attach {name}` watches it again")
        raise KeyboardInterrupt
    try:
        stop(name, watching.region)
    except AwsError as exc:
        if "is in status" not in exc.message:  # it ended as the Ctrl-C came: its end is the answer
            raise
    say(f"smimg: stopping {name}: every host gets SIGTERM, then SIGKILL 120 s later (Ctrl-C detaches)")
    try:
        return _follow(watching)
    except KeyboardInterrupt:
        say(f"smimg: detached; {name} is stopping: `smimg jobs attach {name}` watches it")
        raise


def _follow(w: _Watching) -> CloudResult:
    try:
        job = watch.follow(w.name, w.say, region=w.region, poll=w.poll, cursor=w.cursor, progress=w.progress)
    except AwsError as exc:
        raise WatchLost(
            f"lost the watch on {w.name}: {exc.message}",
            f"the job runs on: `smimg jobs attach {w.name}` watches it again ({exc.hint})",
        ) from None
    return CloudResult.from_description(job)


def stop(name: str, region: str) -> None:
    """StopTrainingJob.

    Raises:
        LaunchError: no such job.
        AwsError: the job has ended, or the call failed.
    """
    sagemaker = aws.client("sagemaker", region)
    watch.describe(sagemaker, name, region)
    aws.call(sagemaker.stop_training_job, f"stop training job {name}", TrainingJobName=name)


def warm_pool_decision(sagemaker: Any, request: Mapping[str, Any], region: str, most: int = 10) -> str:
    """Which Available warm pool the request matches (SageMaker's own rule), or why the nearest does not: the
    reuse is decided by SageMaker at creation, so a mismatch is worth knowing before paying for a cold start.

    Raises:
        AwsError: a call failed.
    """
    pools = _newest(sagemaker, "list the warm pools", most, WarmPoolStatusEquals="Available")
    nearest: tuple[str, list[tuple[str, Any, Any]]] | None = None
    for summary in pools[:most]:
        name = summary["TrainingJobName"]
        differences = warm_pool_differences(watch.describe(sagemaker, name, region), request)
        if not differences:
            return f"smimg: warm pool: the job matches {name}'s, and starts on its instances"
        if nearest is None or len(differences) < len(nearest[1]):
            nearest = (name, differences)
    if nearest is None:
        return "smimg: warm pool: none is available; the job starts new instances and keeps them after it ends"
    among = f" among the {most} newest" if len(pools) > most else ""
    name, differences = nearest
    shown = "; ".join(f"{member} {_value(theirs)} there, {_value(ours)} here" for member, theirs, ours in differences)
    return (
        f"smimg: warm pool: none matches{among}; the nearest, {name}'s, differs in {shown}: the job starts new "
        "instances"
    )


def _value(value: Any) -> str:
    return "none" if value is None else ",".join(value) if isinstance(value, list) else str(value)


def _check_name(sagemaker: Any, name: str, region: str) -> None:
    """A taken name: checked before the code is uploaded, which would replace that job's code."""
    try:
        job = watch.describe(sagemaker, name, region)
    except LaunchError:
        return
    raise LaunchError(
        f"a training job named {name} exists in {region} ({job['TrainingJobStatus']}): names are unique per account",
        "choose another --job-name, or leave it out for smimg-TIME",
    )


def _check_inputs(plan: LaunchPlan, region: str) -> None:
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


def jobs(region: str, limit: int = 20, name_contains: str | None = None) -> list[dict[str, Any]]:
    """The newest training jobs (ListTrainingJobs' summaries), newest first.

    Raises:
        AwsError: the call failed.
    """
    filters = {"NameContains": name_contains} if name_contains else {}
    return _newest(aws.client("sagemaker", region), "list training jobs", limit, **filters)[:limit]


def _newest(sagemaker: Any, doing: str, limit: int, **filters: Any) -> list[dict[str, Any]]:
    """ListTrainingJobs' summaries, newest first, page by page until at least ``limit`` (or all there are).

    Raises:
        AwsError: the call failed.
    """
    found: list[dict[str, Any]] = []
    pages = aws.paginate(
        sagemaker, "list_training_jobs", doing, SortBy="CreationTime", SortOrder="Descending", **filters
    )
    for page in pages:
        found += page.get("TrainingJobSummaries", [])
        if len(found) >= limit:
            break
    return found


def describe(name: str, region: str) -> dict[str, Any]:
    """DescribeTrainingJob.

    Raises:
        LaunchError: no such job.
        AwsError: the call failed.
    """
    return watch.describe(aws.client("sagemaker", region), name, region)


def logs(name: str, region: str) -> list[str]:
    """Every host's lines so far, merged by time, as ``algo-2 | ...``.

    Raises:
        LaunchError: no such job.
        AwsError: a call failed.
    """
    describe(name, region)
    return watch.new_lines(aws.client("logs", region), name, watch.Cursor())


def download(result: CloudResult, folder: Path, region: str) -> Path:
    """The job's model.tar.gz into ``folder``.

    Raises:
        LaunchError: the job has no model (it did not complete).
        AwsError: the download failed.
    """
    if not result.model:
        raise LaunchError(f"job {result.name} has no model to download ({result.status})", "download a completed job")
    folder.mkdir(parents=True, exist_ok=True)
    bucket, key = aws.split_s3_uri(result.model)
    target = folder / Path(key).name
    aws.download_file(aws.client("s3", region), bucket, key, target)
    return target
