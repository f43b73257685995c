"""A cloud job from command-line style inputs, parsed as `smimg local run` parses them (one meaning per flag), over
the defaults of an accelerate SageMaker config when one is given."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from smimg.adapters import aws, service_model
from smimg.cloud import DEFAULT_VOLUME_GB
from smimg.cloud.accelerate import AccelerateLaunch, read_accelerate_config
from smimg.cloud.execute import resolve_region
from smimg.cloud.image import choose_image, ship_image
from smimg.cloud.plan import DEFAULT_MAX_RUN, CloudJob, LaunchPlan, plan_launch
from smimg.errors import LaunchError
from smimg.local.job import (
    channel_groups,
    distribution_groups,
    job_name,
    load_hyperparameters,
    parse_instance_groups,
    parse_pairs,
    resolve_source_dir,
)

if TYPE_CHECKING:
    from smimg.spec import LaunchSpec

ROLE_ENV = "SMIMG_ROLE"  # the role when neither --role nor an accelerate config names one (over the spec's)


@dataclass(frozen=True)
class LaunchFlags:
    """The launch's flags as given: None (or empty) where a flag was left out, so a config's value can stand."""

    instance_type: str | None = None
    role: str | None = None
    output: str | None = None
    instances: int | None = None
    inputs: tuple[str, ...] = ()
    hyperparameters: tuple[str, ...] = ()
    hyperparameter_file: Path | None = None
    source_dir: Path | None = None
    entry_point: str | None = None
    env: tuple[str, ...] = ()
    name: str | None = None
    max_run: int | None = None
    volume_gb: int | None = None
    network_isolation: bool | None = None
    checkpoints: str | None = None
    spot: bool | None = None
    max_wait: int | None = None
    tags: tuple[str, ...] = ()
    subnets: tuple[str, ...] | None = None
    security_groups: tuple[str, ...] | None = None
    keep_alive: int | None = None
    instance_groups: tuple[str, ...] = ()  # NAME=TYPE:COUNT, instead of an instance type and count
    distribution_group: str | None = None
    input_groups: tuple[str, ...] = ()  # CHANNEL=GROUP[,GROUP]


def prepare_launch(
    image: str | None,
    flags: LaunchFlags,
    say: Callable[[str], None],
    *,
    spec: Path | None = None,
    region: str | None = None,
    accelerate_config: Path | None = None,
    check: bool = True,
) -> tuple[LaunchPlan, str]:
    """The launch's plan and region: the job from the flags over the accelerate config over the spec's ``launch``
    section (the spec named, or the current folder's), made and planned, then its image shipped (``cloud.image``:
    pushed if local, checked and pinned; with ``check`` False, as ``--dry-run``, nothing is read from ECR or pushed).

    Raises:
        LaunchError: a bad input, named; SageMaker would refuse the request.
        LocalError, SpecError, PushError, ImageNotFound, AwsError: as the steps they come from raise them.
    """
    from smimg.spec import load_optional

    config = read_accelerate_config(accelerate_config) if accelerate_config else AccelerateLaunch()
    _use_profile(config.profile)
    image = image or config.values.get("image")
    loaded = load_optional(spec, required=image is None)
    where = resolve_region(region or config.values.get("region"), image)
    merged = merge_flags(flags, config, loaded.spec.launch if loaded else None)
    chosen = choose_image(image, loaded, where)
    job = make_cloud_job(chosen.uri, merged, where)
    plan = plan_launch(job)  # every input checked before the image is pushed or read: a bad flag costs no upload
    check_request(plan.request)
    if not check:
        return plan, where
    shipped = plan_launch(dataclasses.replace(job, image=ship_image(chosen, where, say)))
    check_request(shipped.request)  # the pinned image's URI is longer than the tag's
    return shipped, where


def check_request(request: Mapping[str, Any]) -> None:
    """The request against every limit botocore's service model gives and botocore leaves to the service (lengths,
    counts, ranges, patterns), which the service would otherwise check only once the code is uploaded.

    Raises:
        LaunchError: the service's own report of what it would refuse.
    """
    if found := service_model.violations("sagemaker", "CreateTrainingJob", request):
        raise LaunchError(
            f"SageMaker would refuse this job: {service_model.summary(found)}", "change the input it names"
        )


def merge_flags(flags: LaunchFlags, config: AccelerateLaunch, launch: LaunchSpec | None) -> LaunchFlags:
    """The flags given, over the accelerate config's values, over the spec's ``launch`` section; the role from
    ``--role``, the config, ``SMIMG_ROLE``, then the spec (the environment over the project's file, a config named
    on the command line over both)."""
    section = _section_flags(launch) if launch else {}
    values = {k: v for k, v in config.values.items() if k not in ("image", "region")}
    given = {k: v for k, v in dataclasses.asdict(flags).items() if v is not None and v != ()}
    layered = LaunchFlags(**{**section, **values, **given})
    return dataclasses.replace(
        layered,
        role=flags.role or values.get("role") or os.environ.get(ROLE_ENV) or section.get("role"),
        # A flag's value of a variable, channel or tag wins over the config's, the config's over the spec's.
        env=_by_key(tuple(f"{k}={v}" for k, v in config.env), flags.env),
        inputs=_by_key(config.inputs, flags.inputs),
        tags=_by_key(section.get("tags", ()), config.tags, flags.tags),
        name=flags.name or (job_name(config.base_job_name) if config.base_job_name else None),
        # --no-spot over a config's spot job drops the config's spot wait with it; a --max-wait flag is still named.
        max_wait=flags.max_wait if flags.spot is False else layered.max_wait,
        **_cluster(flags, values, layered),
    )


def _cluster(flags: LaunchFlags, config: dict[str, Any], layered: LaunchFlags) -> dict[str, Any]:
    """Instance groups or an instance type, from the highest layer that names either: the spec's groups give way to
    a config's or a flag's instance type, and a flag's groups to nothing (beside -n or --instance-type they are
    named as a conflict)."""
    if flags.instance_groups:
        return {"instance_type": flags.instance_type, "instances": flags.instances}
    if flags.instance_type or config.get("instance_type"):
        return {"instance_groups": (), "distribution_group": flags.distribution_group}
    if layered.instance_groups:
        return {"instance_type": None, "instances": flags.instances}
    return {}


def _section_flags(launch: LaunchSpec) -> dict[str, Any]:
    """The spec's ``launch`` section as the flags it stands for (unset fields left out)."""
    values = launch.model_dump(exclude_defaults=True)
    renamed = {"volume_gb": values.pop("volume_size", None), "tags": tuple(f"{k}={v}" for k, v in launch.tags.items())}
    values.pop("tags", None)
    return {**values, **{k: v for k, v in renamed.items() if v is not None and v != ()}}


def _by_key(*layers: tuple[str, ...]) -> tuple[str, ...]:
    """KEY=VALUE items, a later layer's value of a key over an earlier's (each malformed item kept, to be named)."""
    merged: dict[str, str] = {}
    for item in (item for layer in layers for item in layer):
        key, sep, _ = item.partition("=")
        merged[key if sep else item] = item
    return tuple(merged.values())


def _use_profile(profile: str | None) -> None:
    """The config's AWS profile for every client of this launch, as accelerate sets it, unless AWS_PROFILE is set.

    Raises:
        LaunchError: no such profile here.
    """
    if not profile or "AWS_PROFILE" in os.environ:
        return
    import boto3

    if profile not in boto3.session.Session().available_profiles:
        raise LaunchError(
            f"the accelerate config's profile {profile} is not in this machine's AWS config",
            "remove profile from the config, set AWS_PROFILE, or add the profile (`aws configure --profile NAME`)",
        )
    os.environ["AWS_PROFILE"] = profile


def make_cloud_job(image: str, flags: LaunchFlags, region: str) -> CloudJob:
    """The job to plan; without an output, the SageMaker SDK's default bucket (``sagemaker-REGION-ACCOUNT``).

    Raises:
        LaunchError: no instance type or no role.
        LocalError: a missing code folder or script, a malformed pair (as `local run` says it).
        AwsError: the default bucket's account, or a role given by name, could not be found.
    """
    groups = parse_instance_groups(flags.instance_groups)
    if groups and (flags.instance_type or flags.instances is not None):
        raise LaunchError(
            "instance groups (--instance-group, or the spec's launch.instance_groups) replace --instance-type and -n",
            "leave those out: each group names its type and count",
        )
    if not groups and not flags.instance_type:
        raise LaunchError(
            "no instance type for the job",
            "pass --instance-type, e.g. ml.g5.2xlarge (or --instance-group NAME=TYPE:COUNT for each group)",
        )
    if not flags.role:
        raise LaunchError(
            "no IAM role for the job",
            f"pass --role arn:aws:iam::ACCOUNT:role/NAME (or set {ROLE_ENV}, or launch.role in smimg.yaml): a role "
            "SageMaker may assume, such as the SageMaker execution role the console creates",
        )
    channels = tuple(parse_pairs(flags.inputs, "--input"))
    return CloudJob(
        image=image,
        role=role_arn(flags.role, region),
        output=flags.output or default_output(region),
        instance_type=flags.instance_type or "",
        name=flags.name or job_name("smimg"),
        instances=sum(g.count for g in groups) if groups else 1 if flags.instances is None else flags.instances,
        groups=groups,
        channels=channels,
        channel_groups=channel_groups(flags.input_groups, (name for name, _ in channels), groups),
        hyperparameters=(
            *load_hyperparameters(flags.hyperparameter_file, parse_pairs(flags.hyperparameters, "--hp")),
            *distribution_groups(flags.distribution_group, groups),
        ),
        source_dir=resolve_source_dir(flags.source_dir, flags.entry_point),
        entry_point=flags.entry_point,
        env=tuple(parse_pairs(flags.env, "--env")),
        max_run=DEFAULT_MAX_RUN if flags.max_run is None else flags.max_run,
        volume_gb=DEFAULT_VOLUME_GB if flags.volume_gb is None else flags.volume_gb,
        network_isolation=bool(flags.network_isolation),
        checkpoints=flags.checkpoints,
        spot=bool(flags.spot),
        max_wait=flags.max_wait,
        tags=tuple(parse_pairs(flags.tags, "--tag")),
        subnets=tuple(flags.subnets or ()),
        security_groups=tuple(flags.security_groups or ()),
        keep_alive=flags.keep_alive or 0,
    )


def role_arn(role: str, region: str) -> str:
    """A role ARN, or a role's name made its ARN through IAM (as the SageMaker SDK expands one)."""
    if "/" in role:  # an ARN (or a path SageMaker will refuse, named by the planner)
        return role
    found: Any = aws.call(
        aws.client("iam", region).get_role,
        f"find IAM role {role}",
        missing=frozenset({"NoSuchEntity"}),
        RoleName=role,
    )
    if found is None:
        raise LaunchError(
            f"no IAM role named {role} in this account",
            "pass the ARN of a role SageMaker may assume (`aws iam list-roles --query 'Roles[].Arn'`)",
        )
    return str(found["Role"]["Arn"])


def default_output(region: str) -> str:
    """The SageMaker SDK's default bucket for this account and region, under ``smimg/``."""
    return f"s3://sagemaker-{region}-{aws.account_id(region)}/smimg"
