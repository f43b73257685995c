"""A cloud job from command-line style inputs, parsed as `smimg local run` parses them (one meaning per flag)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from smimg.adapters import aws
from smimg.cloud.execute import resolve_region
from smimg.cloud.plan import DEFAULT_MAX_RUN, DEFAULT_VOLUME_GB, CloudJob
from smimg.errors import LaunchError
from smimg.local.job import job_name, load_hyperparameters, parse_pairs, resolve_source_dir


def make_cloud_job(
    image: str,
    *,
    instance_type: str | None,
    role: str | None,
    output: str | None,
    region: str | None = None,
    instances: int = 1,
    inputs: Iterable[str] = (),
    hyperparameters: Iterable[str] = (),
    hyperparameter_file: Path | None = None,
    source_dir: Path | None = None,
    entry_point: str | None = None,
    env: Iterable[str] = (),
    name: str | None = None,
    max_run: int = DEFAULT_MAX_RUN,
    volume_gb: int = DEFAULT_VOLUME_GB,
    network_isolation: bool = False,
    checkpoints: str | None = None,
    spot: bool = False,
    max_wait: int | None = None,
    tags: Iterable[str] = (),
    subnets: Iterable[str] = (),
    security_groups: Iterable[str] = (),
    keep_alive: int = 0,
) -> CloudJob:
    """The job to plan; without ``output``, the SageMaker SDK's default bucket (``sagemaker-REGION-ACCOUNT``).

    Raises:
        LaunchError: no instance type or no role.
        LocalError: a missing code folder or script, a malformed pair (as `local run` says it).
        AwsError: the default bucket's account could not be found.
    """
    if not instance_type:
        raise LaunchError("no instance type for the job", "pass --instance-type, e.g. ml.g5.2xlarge")
    if not role:
        raise LaunchError(
            "no IAM role for the job",
            "pass --role arn:aws:iam::ACCOUNT:role/NAME (or set SMIMG_ROLE): a role SageMaker may assume, such as "
            "the SageMaker execution role the console creates",
        )
    source_dir = resolve_source_dir(source_dir, entry_point)
    return CloudJob(
        image=image,
        role=role,
        output=output or default_output(region),
        instance_type=instance_type,
        name=name or job_name("smimg"),
        instances=instances,
        channels=tuple(parse_pairs(inputs, "--input")),
        hyperparameters=load_hyperparameters(hyperparameter_file, parse_pairs(hyperparameters, "--hp")),
        source_dir=source_dir,
        entry_point=entry_point,
        env=tuple(parse_pairs(env, "--env")),
        max_run=max_run,
        volume_gb=volume_gb,
        network_isolation=network_isolation,
        checkpoints=checkpoints,
        spot=spot,
        max_wait=max_wait,
        tags=tuple(parse_pairs(tags, "--tag")),
        subnets=tuple(subnets),
        security_groups=tuple(security_groups),
        keep_alive=keep_alive,
    )


def default_output(region: str | None) -> str:
    """The SageMaker SDK's default bucket for this account and region, under ``smimg/``."""
    region = resolve_region(region)
    return f"s3://sagemaker-{region}-{aws.account_id(region)}/smimg"
