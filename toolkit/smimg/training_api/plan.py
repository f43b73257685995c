"""CreateTrainingJob, checked as the SageMaker API checks it, and turned into what a local run needs. Pure.

Errors carry the API's own exception names and message shapes, so launch code sees here what it would see from
SageMaker (``botocore`` already checks types, required members and minimum lengths on the client side; patterns,
maximum lengths and counts are checked by the service, so here).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from smimg.local.job import MAX_HYPERPARAMETERS, MAX_INSTANCE_GROUPS, MAX_KEY, MAX_VALUE, InstanceGroup
from smimg.local.plan import MAX_INSTANCES
from smimg_entrypoint import contract

JOB_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
CHANNEL_NAME = re.compile(r"^[A-Za-z0-9\.\-_]+$")
ENV_KEY = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
MAX_ENV = 100
MAX_ENV_TEXT = 512
MAX_CHANNELS = 20
MAX_RUNTIME_LIMIT = 28 * 24 * 3600
DEFAULT_MAX_RUNTIME = 24 * 3600
REQUIRED = ("TrainingJobName", "AlgorithmSpecification", "RoleArn", "OutputDataConfig", "ResourceConfig")
MAX_KEEP_ALIVE = 21600  # ResourceConfig.KeepAlivePeriodInSeconds in the service model (the guide still says 3600)
# What a job must share with an ended one to take over its warm pool: SageMaker's "matching training jobs".
WARM_POOL_MATCH = (
    ("RoleArn",),
    ("ResourceConfig", "InstanceType"),
    ("ResourceConfig", "InstanceCount"),
    ("ResourceConfig", "VolumeSizeInGB"),
    ("ResourceConfig", "VolumeKmsKeyId"),
    ("VpcConfig", "Subnets"),
    ("VpcConfig", "SecurityGroupIds"),
    ("EnableNetworkIsolation",),
    ("EnableInterContainerTrafficEncryption",),
)


class ApiError(Exception):
    """An error the API answers with: its exception name (``__type``), message and HTTP status."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


def _invalid(value: object, member: str, constraint: str) -> ApiError:
    shown = value if isinstance(value, (int, float)) else f"'{value}'"
    return ApiError(
        "ValidationException",
        f"1 validation error detected: Value {shown} at '{member}' failed to satisfy constraint: {constraint}",
    )


@dataclass(frozen=True)
class TrainingPlan:
    """What a local run of one CreateTrainingJob request needs, every value as the request carried it."""

    name: str
    image: str
    instances: int
    instance_type: str
    channels: tuple[tuple[str, str], ...]  # name, S3 URI
    hyperparameters: tuple[tuple[str, str], ...]  # verbatim, the reserved script-mode ones taken out
    program: str | None  # sagemaker_program, decoded
    submit_directory: str | None  # sagemaker_submit_directory, decoded: an s3:// sourcedir.tar.gz
    reserved: tuple[tuple[str, str], ...]  # those two as sent, for an image whose code is baked in
    env: tuple[tuple[str, str], ...]
    output_path: str
    max_run: int
    network_isolation: bool
    checkpoint_s3: str | None
    entrypoint: tuple[str, ...] | None = None  # ContainerEntrypoint
    arguments: tuple[str, ...] | None = None  # ContainerArguments
    spot: bool = False  # EnableManagedSpotTraining
    keep_alive: int = 0  # ResourceConfig.KeepAlivePeriodInSeconds: a warm pool kept this long after the job
    groups: tuple[InstanceGroup, ...] = ()  # ResourceConfig.InstanceGroups: a heterogeneous cluster
    channel_groups: tuple[tuple[str, tuple[str, ...]], ...] = ()  # S3DataSource.InstanceGroupNames, by channel


# NVIDIA GPUs per instance of the ml.* types that have them (AWS's instance specifications); others have none.
_ONE_GPU_SIZES = ("xlarge", "2xlarge", "4xlarge", "8xlarge", "16xlarge")
GPUS: dict[str, int] = {
    **{f"ml.{family}.{size}": 1 for family in ("g4dn", "g5", "g6", "g6e") for size in _ONE_GPU_SIZES},
    **{f"ml.{family}.{size}": 4 for family in ("g5", "g6", "g6e") for size in ("12xlarge", "24xlarge")},
    **{f"ml.{family}.48xlarge": 8 for family in ("g5", "g6", "g6e", "p5", "p5e", "p5en")},
    "ml.g4dn.12xlarge": 4,
    "ml.p3.2xlarge": 1,
    "ml.p3.8xlarge": 4,
    "ml.p3.16xlarge": 8,
    "ml.p3dn.24xlarge": 8,
    "ml.p4d.24xlarge": 8,
    "ml.p4de.24xlarge": 8,
}


def gpu_request(plan: TrainingPlan, available: Sequence[str]) -> str | None:
    """local mode's ``--gpus`` for the job: the instance type's GPUs per host, sliced from this machine's where
    present (as many per host as there are, up to the type's count; none on a machine without GPUs)."""
    per_host = min(GPUS.get(plan.instance_type, 0), len(available) // plan.instances)
    return str(per_host * plan.instances) if per_host else None


def plan_training(request: Mapping[str, Any], max_instances: int | None = MAX_INSTANCES) -> TrainingPlan:
    """Check a CreateTrainingJob request and plan its local run (``max_instances``: this machine's limit on hosts;
    None for the cloud, where an account's quota decides).

    Raises:
        ApiError: ValidationException naming the member and the constraint, as SageMaker words it.
    """
    for member in REQUIRED:
        if member not in request:
            raise ApiError("ValidationException", f"1 validation error detected: '{member}' is required")
    name = str(request["TrainingJobName"])
    if not JOB_NAME.match(name):
        raise _invalid(name, "trainingJobName", f"Member must satisfy regular expression pattern: {JOB_NAME.pattern}")
    resources = request["ResourceConfig"]
    groups = instance_groups(resources)
    count = sum(g.count for g in groups) if groups else int(resources.get("InstanceCount", 1))
    if count < 1 or (max_instances is not None and count > max_instances):
        limit = f"between 1 and {max_instances} here" if max_instances is not None else "greater than or equal to 1"
        raise _invalid(count, "resourceConfig.instanceCount", f"Member must be {limit}")
    hyperparameters = dict(request.get("HyperParameters") or {})
    _check_hyperparameters(hyperparameters)
    env = dict(request.get("Environment") or {})
    _check_environment(env)
    channels = tuple(_channel(c) for c in request.get("InputDataConfig") or ())
    assigned = channel_groups(request.get("InputDataConfig") or (), groups)
    if len(channels) > MAX_CHANNELS:
        raise _invalid(
            len(channels), "inputDataConfig", f"Member must have length less than or equal to {MAX_CHANNELS}"
        )
    max_run, spot = _stopping(request)
    keep = keep_alive(resources)
    if "TrainingImage" not in request["AlgorithmSpecification"]:
        raise ApiError("ValidationException", "AlgorithmSpecification.TrainingImage is required here (no algorithms)")
    reserved = {
        k: hyperparameters.pop(k) for k in (contract.HP_PROGRAM, contract.HP_SUBMIT_DIRECTORY) if k in hyperparameters
    }
    program = _decoded(reserved.get(contract.HP_PROGRAM))
    submit = _decoded(reserved.get(contract.HP_SUBMIT_DIRECTORY))
    algorithm = request["AlgorithmSpecification"]
    return TrainingPlan(
        name=name,
        image=str(algorithm["TrainingImage"]),
        instances=count,
        instance_type=str(resources.get("InstanceType", "" if groups else "local")),
        groups=groups,
        channels=channels,
        channel_groups=assigned,
        hyperparameters=tuple(sorted(hyperparameters.items())),
        program=program,
        submit_directory=submit,
        reserved=tuple(sorted(reserved.items())),
        env=tuple(sorted(env.items())),
        output_path=str(request["OutputDataConfig"]["S3OutputPath"]).rstrip("/"),
        max_run=max_run,
        network_isolation=bool(request.get("EnableNetworkIsolation", False)),
        checkpoint_s3=(request.get("CheckpointConfig") or {}).get("S3Uri"),
        entrypoint=_strings(algorithm.get("ContainerEntrypoint")),
        arguments=_strings(algorithm.get("ContainerArguments")),
        spot=spot,
        keep_alive=keep,
    )


def instance_groups(resources: Mapping[str, Any]) -> tuple[InstanceGroup, ...]:
    """A ResourceConfig's InstanceGroups (none for a homogeneous cluster).

    Raises:
        ApiError: more than five, a name out of its length or repeated, InstanceType or InstanceCount beside them, or
            a warm pool (SageMaker keeps none of a heterogeneous cluster).
    """
    given = resources.get("InstanceGroups") or []
    if not given:
        return ()
    if "InstanceType" in resources or "InstanceCount" in resources:
        raise ApiError("ValidationException", "InstanceType or InstanceCount cannot be specified with InstanceGroups")
    if len(given) > MAX_INSTANCE_GROUPS:
        raise _invalid(
            len(given),
            "resourceConfig.instanceGroups",
            f"Member must have length less than or equal to {MAX_INSTANCE_GROUPS}",
        )
    for i, group in enumerate(given, start=1):
        if not 1 <= len(str(group["InstanceGroupName"])) <= 64:
            raise _invalid(
                group["InstanceGroupName"],
                f"resourceConfig.instanceGroups.{i}.member.instanceGroupName",
                "Member must have length between 1 and 64",
            )
    names = [str(g["InstanceGroupName"]) for g in given]
    if len(set(names)) != len(names):
        raise ApiError("ValidationException", f"InstanceGroupName must be unique within InstanceGroups: {names}")
    if resources.get("KeepAlivePeriodInSeconds"):
        raise ApiError(
            "ValidationException", "Warm pools are not supported for heterogeneous clusters (InstanceGroups)"
        )
    return tuple(
        InstanceGroup(str(g["InstanceGroupName"]), str(g["InstanceType"]), int(g["InstanceCount"])) for g in given
    )


def channel_groups(
    channels: Sequence[Mapping[str, Any]], groups: tuple[InstanceGroup, ...]
) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """Each channel's S3DataSource.InstanceGroupNames, when the channels name them.

    Raises:
        ApiError: some channels name groups and others do not, or a name is not one of the job's groups.
    """
    named = {
        str(c.get("ChannelName")): tuple(
            str(g) for g in ((c.get("DataSource") or {}).get("S3DataSource") or {}).get("InstanceGroupNames") or ()
        )
        for c in channels
    }
    with_groups = [name for name, of in named.items() if of]
    if not with_groups:
        return ()
    if without := [name for name, of in named.items() if not of]:
        raise ApiError(
            "ValidationException",
            f"Some channels have assigned instance groups: [{', '.join(with_groups)}] while others not: "
            f"[{', '.join(without)}]",
        )
    known = {g.name for g in groups}
    for name, of in named.items():
        if unknown := [g for g in of if g not in known]:
            raise ApiError(
                "ValidationException",
                f"Channel {name} names instance groups {unknown} that are not in ResourceConfig.InstanceGroups",
            )
    return tuple(named.items())


def keep_alive(resources: Mapping[str, Any]) -> int:
    """A ResourceConfig's KeepAlivePeriodInSeconds (0 without one).

    Raises:
        ApiError: out of the API's range.
    """
    value = int(resources.get("KeepAlivePeriodInSeconds") or 0)
    if not 0 <= value <= MAX_KEEP_ALIVE:
        raise _invalid(
            value,
            "resourceConfig.keepAlivePeriodInSeconds",
            f"Member must have value less than or equal to {MAX_KEEP_ALIVE}",
        )
    return value


def warm_pool_differences(pool: Mapping[str, Any], request: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    """Why a request would not take over the warm pool of job ``pool``: each member SageMaker matches on that
    differs, as (its name, the pool's value, the request's); none when it would."""
    differences = []
    for path in WARM_POOL_MATCH:
        theirs, ours = _member(pool, path), _member(request, path)
        if theirs != ours:
            differences.append((".".join(path), theirs, ours))
    return differences


def _member(request: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    """A matched member as SageMaker compares it: absent as its default, lists in any order."""
    value: Any = request
    for key in path:
        value = (value or {}).get(key)
    if path == ("ResourceConfig", "InstanceCount"):
        return int(value or 1)
    if path[0].startswith("Enable"):
        return bool(value)
    return sorted(value) if isinstance(value, list) else value


def _stopping(request: Mapping[str, Any]) -> tuple[int, bool]:
    """MaxRuntimeInSeconds, and whether the job is a managed spot one (which needs a MaxWaitTimeInSeconds)."""
    stopping = request.get("StoppingCondition") or {}
    max_run = int(stopping.get("MaxRuntimeInSeconds", DEFAULT_MAX_RUNTIME))
    if not 1 <= max_run <= MAX_RUNTIME_LIMIT:
        raise _invalid(max_run, "stoppingCondition.maxRuntimeInSeconds", f"Member must be <= {MAX_RUNTIME_LIMIT}")
    spot = bool(request.get("EnableManagedSpotTraining", False))
    max_wait = stopping.get("MaxWaitTimeInSeconds")
    if spot and (max_wait is None or int(max_wait) < max_run):
        raise ApiError(
            "ValidationException",
            "Invalid MaxWaitTimeInSeconds. It must be present and be greater than or equal to MaxRuntimeInSeconds",
        )
    if max_wait is not None and not spot:
        raise ApiError("ValidationException", "MaxWaitTimeInSeconds is only valid with EnableManagedSpotTraining")
    return max_run, spot


def _strings(values: list[Any] | None) -> tuple[str, ...] | None:
    return tuple(str(v) for v in values) if values is not None else None


def _check_hyperparameters(values: Mapping[str, str]) -> None:
    if len(values) > MAX_HYPERPARAMETERS:
        raise _invalid(
            f"map of {len(values)} entries",
            "hyperParameters",
            f"Map value must satisfy constraint: [Member must have length less than or equal to {MAX_HYPERPARAMETERS}]",
        )
    for key, value in values.items():
        if len(key) > MAX_KEY:
            raise _invalid(key, "hyperParameters", f"Map keys must have length less than or equal to {MAX_KEY}")
        if len(str(value)) > MAX_VALUE:
            raise _invalid(
                f"value of {key}", "hyperParameters", f"Map values must have length less than or equal to {MAX_VALUE}"
            )


def _check_environment(values: Mapping[str, str]) -> None:
    if len(values) > MAX_ENV:
        raise _invalid(f"map of {len(values)} entries", "environment", f"Member must have length <= {MAX_ENV}")
    for key, value in values.items():
        if not ENV_KEY.match(key) or len(key) > MAX_ENV_TEXT:
            raise _invalid(key, "environment", f"Map keys must satisfy regular expression pattern: {ENV_KEY.pattern}")
        if len(str(value)) > MAX_ENV_TEXT:
            raise _invalid(f"value of {key}", "environment", f"Map values must have length <= {MAX_ENV_TEXT}")


def _channel(channel: Mapping[str, Any]) -> tuple[str, str]:
    name = str(channel.get("ChannelName", ""))
    if not CHANNEL_NAME.match(name) or len(name) > 64:
        raise _invalid(
            name,
            "inputDataConfig.channelName",
            f"Member must satisfy regular expression pattern: {CHANNEL_NAME.pattern}",
        )
    source = (channel.get("DataSource") or {}).get("S3DataSource") or {}
    if "S3Uri" not in source:
        raise ApiError("ValidationException", f"channel {name}: only S3DataSource channels run locally")
    return name, str(source["S3Uri"])


def _decoded(value: str | None) -> str | None:
    """A script-mode hyperparameter as the SDK sends it (JSON-encoded), or as a boto3 user may (plain text)."""
    if value is None:
        return None
    try:
        decoded = json.loads(value)
    except ValueError:
        return value
    return decoded if isinstance(decoded, str) else value
