"""`smimg launch`'s planner: a job, given as `smimg local run` takes it, becomes the CreateTrainingJob request. Pure.

The request is checked by the local SageMaker API's own planner (``training_api.plan``), with SageMaker's limits and
wording, so a job that SageMaker would refuse is refused here, before anything is uploaded or billed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from smimg.cloud import DEFAULT_VOLUME_GB
from smimg.errors import LaunchError
from smimg.local.job import S3_URI, InstanceGroup
from smimg.refs import ImageRef
from smimg.training_api.plan import ApiError, plan_training
from smimg_entrypoint import contract

DEFAULT_MAX_RUN = 24 * 3600  # SageMaker's own default for MaxRuntimeInSeconds
MAX_WAIT_LIMIT = 28 * 24 * 3600
CODE_ARCHIVE = "sourcedir.tar.gz"  # the name the SageMaker SDK gives script-mode code, which toolkits expect
CODE_CHANNEL = "code"  # the SDK's channel for the code of a network-isolated job
ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+$")


@dataclass(frozen=True)
class CloudJob:
    """What to launch: the local job's inputs (S3 channels instead of folders) and what only the cloud needs."""

    image: str
    role: str
    output: str  # S3OutputPath
    instance_type: str
    name: str
    instances: int = 1
    channels: tuple[tuple[str, str], ...] = ()  # name, s3:// URI
    hyperparameters: tuple[tuple[str, Any], ...] = ()
    source_dir: Path | None = None
    entry_point: str | None = None
    env: tuple[tuple[str, str], ...] = ()
    max_run: int = DEFAULT_MAX_RUN
    volume_gb: int = DEFAULT_VOLUME_GB
    network_isolation: bool = False
    checkpoints: str | None = None  # CheckpointConfig.S3Uri
    spot: bool = False
    max_wait: int | None = None  # spot only; default: twice max_run (room to wait for capacity and be interrupted)
    tags: tuple[tuple[str, str], ...] = ()
    subnets: tuple[str, ...] = ()  # VpcConfig: the job's instances in these subnets,
    security_groups: tuple[str, ...] = ()  # with these security groups (both or neither)
    keep_alive: int = 0  # KeepAlivePeriodInSeconds: the instances kept this long for a matching next job
    groups: tuple[InstanceGroup, ...] = ()  # InstanceGroups (a heterogeneous cluster) instead of type and count
    channel_groups: tuple[tuple[str, tuple[str, ...]], ...] = ()  # a channel only on these groups' hosts


@dataclass(frozen=True)
class LaunchPlan:
    job: CloudJob
    request: Mapping[str, Any] = field(hash=False)  # CreateTrainingJob's parameters, as boto3 takes them
    code_uri: str | None  # where the script-mode code archive goes, when there is one

    def as_json(self) -> str:
        return json.dumps(self.request, indent=2, sort_keys=True)


def plan_launch(job: CloudJob) -> LaunchPlan:
    """The CreateTrainingJob request for a job, checked as SageMaker would check it.

    Raises:
        LaunchError: an input SageMaker would refuse (named, with its limit), or one smimg cannot use.
    """
    _check(job)
    output = job.output.rstrip("/")
    code_uri = f"{output}/{job.name}/source/{CODE_ARCHIVE}" if job.source_dir is not None else None
    channels = list(job.channels)
    submit = code_uri
    if code_uri is not None and job.network_isolation:
        # An isolated container cannot reach S3: as the SageMaker SDK does, the code comes in as a channel.
        channels.append((CODE_CHANNEL, code_uri.removesuffix(CODE_ARCHIVE)))
        submit = f"{contract.opt_ml(contract.DATA_DIR)}/{CODE_CHANNEL}/{CODE_ARCHIVE}"
    request: dict[str, Any] = {
        "TrainingJobName": job.name,
        "AlgorithmSpecification": {"TrainingImage": job.image, "TrainingInputMode": "File"},
        "RoleArn": job.role,
        "HyperParameters": _hyperparameters(job, submit),
        "OutputDataConfig": {"S3OutputPath": output},
        "ResourceConfig": _resources(job),
        "StoppingCondition": {"MaxRuntimeInSeconds": job.max_run},
        "EnableNetworkIsolation": job.network_isolation,
    }
    if channels:
        # The code channel goes to every group (SageMaker wants groups on every channel once one has them).
        assigned = {CODE_CHANNEL: tuple(g.name for g in job.groups), **dict(job.channel_groups)}
        request["InputDataConfig"] = [
            _channel(name, uri, assigned.get(name, ()) if job.channel_groups else ()) for name, uri in channels
        ]
    if job.env:
        request["Environment"] = dict(job.env)
    if job.checkpoints:
        request["CheckpointConfig"] = {"S3Uri": job.checkpoints, "LocalPath": contract.opt_ml(contract.CHECKPOINTS_DIR)}
    if job.spot:
        request["EnableManagedSpotTraining"] = True
        request["StoppingCondition"]["MaxWaitTimeInSeconds"] = job.max_wait or min(2 * job.max_run, MAX_WAIT_LIMIT)
    if job.tags:
        request["Tags"] = [{"Key": key, "Value": value} for key, value in job.tags]
    if job.keep_alive:
        request["ResourceConfig"]["KeepAlivePeriodInSeconds"] = job.keep_alive
    if job.subnets:
        request["VpcConfig"] = {"Subnets": list(job.subnets), "SecurityGroupIds": list(job.security_groups)}
    try:
        plan_training(request, max_instances=None)
    except ApiError as exc:
        raise LaunchError(f"SageMaker would refuse this job: {exc.message}", "change the input it names") from None
    return LaunchPlan(job, request, code_uri)


def _resources(job: CloudJob) -> dict[str, Any]:
    if not job.groups:
        return {"InstanceType": job.instance_type, "InstanceCount": job.instances, "VolumeSizeInGB": job.volume_gb}
    groups = [
        {"InstanceGroupName": g.name, "InstanceType": g.instance_type, "InstanceCount": g.count} for g in job.groups
    ]
    return {"InstanceGroups": groups, "VolumeSizeInGB": job.volume_gb}


def _check(job: CloudJob) -> None:
    if ImageRef.parse(job.image).ecr is None:
        raise LaunchError(
            f"{job.image} is not an image in ECR: SageMaker trains only from ECR",
            "push it first (`smimg push` prints its URI) and pass ACCOUNT.dkr.ecr.REGION.amazonaws.com/NAME:TAG",
        )
    _check_resources(job)
    if job.network_isolation and job.source_dir is not None and CODE_CHANNEL in dict(job.channels):
        raise LaunchError(
            f"--input {CODE_CHANNEL}= is taken: under --network-isolation the code comes in as that channel",
            "name your channel otherwise",
        )
    if not ROLE_ARN.match(job.role):
        raise LaunchError(
            f"--role {job.role!r} is not an IAM role ARN",
            "pass arn:aws:iam::ACCOUNT:role/NAME of a role SageMaker may assume (the console's SageMaker "
            "execution role, or `aws iam list-roles --query 'Roles[].Arn'`)",
        )
    for flag, uri in [("--output ", job.output), *((f"--input {n}=", u) for n, u in job.channels)]:
        if not S3_URI.match(uri):
            raise LaunchError(f"{flag}{uri} is not an S3 URI", "the cloud reads S3: upload it (`aws s3 sync`) first")
    if job.checkpoints is not None and not S3_URI.match(job.checkpoints):
        raise LaunchError(f"--checkpoints {job.checkpoints} is not an S3 URI", "pass s3://BUCKET/PREFIX")
    if job.source_dir is not None and not job.entry_point:
        raise LaunchError("--source-dir needs --entry-point", "name the script to run, e.g. --entry-point train.py")
    _check_vpc(job.subnets, job.security_groups)
    if job.keep_alive and job.spot:
        raise LaunchError(
            "--keep-alive and --spot do not go together: SageMaker keeps no warm pool of spot instances",
            "leave one of them out",
        )
    if job.max_wait is not None and not job.spot:
        raise LaunchError("--max-wait is for spot jobs", "add --spot, or leave --max-wait out")
    if job.spot and job.max_wait is not None and job.max_wait < job.max_run:
        raise LaunchError(
            f"--max-wait {job.max_wait} is below --max-run {job.max_run}",
            "SageMaker needs MaxWaitTimeInSeconds >= MaxRuntimeInSeconds: raise --max-wait",
        )


def _check_resources(job: CloudJob) -> None:
    types = [(f"--instance-group {g.name}=", g.instance_type) for g in job.groups]
    for flag, instance_type in types or [("--instance-type ", job.instance_type)]:
        if not instance_type.startswith("ml."):
            raise LaunchError(f"{flag}{instance_type} is not a SageMaker instance type", "e.g. ml.g5.2xlarge")
    if job.groups and job.keep_alive:
        raise LaunchError(
            "--keep-alive and --instance-group do not go together: SageMaker keeps no warm pool of a "
            "heterogeneous cluster",
            "leave one of them out",
        )
    if job.volume_gb < 1:
        raise LaunchError(f"--volume-size {job.volume_gb} is not a size", "pass the GB each instance needs, e.g. 30")


def _check_vpc(subnets: tuple[str, ...], groups: tuple[str, ...]) -> None:
    if bool(subnets) != bool(groups):
        raise LaunchError(
            "--subnets and --security-groups go together", "pass both (VpcConfig needs subnets and security groups)"
        )
    for flag, values, prefix, most in (("--subnets", subnets, "subnet-", 16), ("--security-groups", groups, "sg-", 5)):
        if len(values) > most:
            raise LaunchError(f"{flag} names {len(values)}; SageMaker takes at most {most}", f"pass at most {most}")
        for value in values:
            if not re.fullmatch(rf"{prefix}[0-9a-z]+", value):
                raise LaunchError(f"{flag} {value!r} is not a {prefix}... ID", f"pass IDs such as {prefix}0123abcd")


def _hyperparameters(job: CloudJob, submit: str | None) -> dict[str, str]:
    """JSON-encoded as the SageMaker SDK sends them; script mode's two keys point at the uploaded code."""
    values: dict[str, Any] = dict(job.hyperparameters)
    if submit is not None:
        values[contract.HP_PROGRAM] = job.entry_point
        values[contract.HP_SUBMIT_DIRECTORY] = submit
    return {key: json.dumps(value) for key, value in sorted(values.items())}


def _channel(name: str, uri: str, groups: tuple[str, ...]) -> dict[str, Any]:
    source: dict[str, Any] = {"S3DataType": "S3Prefix", "S3Uri": uri, "S3DataDistributionType": "FullyReplicated"}
    if groups:
        source["InstanceGroupNames"] = list(groups)
    return {"ChannelName": name, "DataSource": {"S3DataSource": source}, "InputMode": "File"}
