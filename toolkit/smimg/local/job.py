"""A local job, from command-line style inputs: image, hosts, channels, hyperparameters, code, environment.

``make_job`` checks and resolves what the user typed (``NAME=PATH|file://|s3://``, ``key=value``) into a frozen
``LocalJob``, the input of the pure planner ``smimg.local.plan``.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from smimg import resources
from smimg.errors import LocalError
from smimg.local.channels import resolve_channel
from smimg_entrypoint import contract

S3_URI = re.compile(r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$")  # a bucket name as S3 allows it


@dataclass(frozen=True)
class Conditions:
    """The cloud's conditions a local run rehearses, named after CreateTrainingJob's fields."""

    max_run: float | None = None  # StoppingCondition.MaxRuntimeInSeconds, over every attempt together
    spot_interrupt_after: float | None = None  # a managed-spot reclaim this many seconds into the first attempt
    stop_grace: float = 120.0  # from SIGTERM to SIGKILL, as SageMaker stops a job
    network_isolation: bool = False  # EnableNetworkIsolation: the hosts reach each other and nothing else
    checkpoints: Path | None = None  # CheckpointConfig.S3Uri, as a folder here: restored on start, kept after
    # CheckpointConfig.S3Uri itself when it is in S3: `checkpoints` is then this run's copy of it, downloaded before
    # the job starts and uploaded from (new and changed files) whenever the hosts' checkpoints are kept.
    checkpoints_s3: str | None = None

    @property
    def checkpoint_location(self) -> str | None:
        """Where checkpoints are kept, as the user named it."""
        return self.checkpoints_s3 or (str(self.checkpoints) if self.checkpoints else None)


class Verbatim(str):
    """A hyperparameter value as a CreateTrainingJob request carries it (already the text SageMaker writes into
    hyperparameters.json): written unchanged, not JSON-encoded again."""


@dataclass(frozen=True)
class InstanceGroup:
    """One instance group of a heterogeneous cluster (ResourceConfig.InstanceGroups): its name, type and count."""

    name: str
    instance_type: str
    count: int


MAX_INSTANCE_GROUPS = 5


def parse_instance_groups(items: Iterable[str]) -> tuple[InstanceGroup, ...]:
    """``--instance-group NAME=TYPE:COUNT`` items, checked as SageMaker checks InstanceGroups.

    Raises:
        LocalError: a malformed item, a repeated name, more than five groups, or no instance in all of them.
    """
    groups = []
    for item in items:
        name, _, rest = item.partition("=")
        instance_type, _, count = rest.rpartition(":")
        if not name or len(name) > 64 or not instance_type or not count.isdigit():
            raise LocalError(
                f"--instance-group {item!r} is not NAME=TYPE:COUNT",
                "e.g. --instance-group gpus=ml.g5.2xlarge:2 (a name of 1 to 64 characters)",
            )
        groups.append(InstanceGroup(name, instance_type, int(count)))
    names = [g.name for g in groups]
    if len(set(names)) != len(names):
        raise LocalError(f"--instance-group names {sorted(names)} repeat one", "give each group its own name")
    if len(groups) > MAX_INSTANCE_GROUPS:
        raise LocalError(f"{len(groups)} instance groups", f"SageMaker takes at most {MAX_INSTANCE_GROUPS}")
    if groups and not sum(g.count for g in groups):
        raise LocalError("the instance groups hold no instance", "give at least one group a count of 1 or more")
    return tuple(groups)


def channel_groups(
    items: Iterable[str], channels: Iterable[str], groups: tuple[InstanceGroup, ...]
) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """``--input-group CHANNEL=GROUP[,GROUP]`` items: the channel reaches only those groups' hosts
    (S3DataSource.InstanceGroupNames). As SageMaker demands, once one channel names its groups, every one does.

    Raises:
        LocalError: a malformed item, an unknown channel or group, or channels left without groups.
    """
    names, known = list(channels), {g.name for g in groups}
    assigned: dict[str, tuple[str, ...]] = {}
    for item in items:
        channel, _, listed = item.partition("=")
        chosen = tuple(g for g in listed.split(",") if g)
        if not chosen or channel not in names:
            raise LocalError(
                f"--input-group {item!r} does not name one of the job's channels and its groups",
                f"write CHANNEL=GROUP[,GROUP], a channel of {', '.join(names) or 'none: add --input'}",
            )
        if channel in assigned or len(set(chosen)) != len(chosen):
            raise LocalError(
                f"--input-group {item} repeats a channel or a group", "name each channel once, with all its groups"
            )
        if unknown := [g for g in chosen if g not in known]:
            raise LocalError(
                f"--input-group {item}: {', '.join(unknown)} is not one of the job's instance groups",
                f"name one of {', '.join(sorted(known)) or 'none: add --instance-group'}",
            )
        assigned[channel] = chosen
    if assigned and (left := [n for n in names if n not in assigned]):
        raise LocalError(
            f"channels {', '.join(left)} name no instance groups while {', '.join(assigned)} do",
            "SageMaker needs every channel's groups once one has them: add --input-group for each",
        )
    return tuple(assigned.items())


def distribution_groups(group: str | None, groups: tuple[InstanceGroup, ...]) -> tuple[tuple[str, Any], ...]:
    """``--distribution-group NAME``: the hyperparameter the SageMaker SDK sends for its ``distribution``'s
    instance group, which the hosts of that group alone train together under; none without one.

    Raises:
        LocalError: the name is not one of the job's groups.
    """
    if group is None:
        return ()
    if group not in {g.name for g in groups}:
        known = ", ".join(g.name for g in groups) or "none: add --instance-group"
        raise LocalError(
            f"--distribution-group (or launch.distribution_group) {group} is not one of the job's instance groups",
            f"name one of {known}",
        )
    return ((contract.HP_DISTRIBUTION_GROUPS, [group]),)


@dataclass(frozen=True)
class LocalJob:
    """What to run: an image, how many hosts, inputs (already local), hyperparameters, code and environment."""

    image: str
    instances: int = 1
    groups: tuple[InstanceGroup, ...] = ()  # a heterogeneous cluster's groups; their counts add up to instances
    channels: tuple[tuple[str, Path], ...] = ()
    channel_groups: tuple[tuple[str, tuple[str, ...]], ...] = ()  # a channel only on these instance groups' hosts
    hyperparameters: tuple[tuple[str, Any], ...] = ()
    source_dir: Path | None = None
    entry_point: str | None = None
    gpus: str | None = None
    env: tuple[tuple[str, str], ...] = ()
    name: str = "smimg-local"
    conditions: Conditions = Conditions()
    # AlgorithmSpecification.ContainerEntrypoint and ContainerArguments (SDK v3 ModelTrainer sends both): None runs
    # the image's entrypoint with `train`, as SageMaker does.
    entrypoint: tuple[str, ...] | None = None
    arguments: tuple[str, ...] | None = None
    # Channels are mounted read-only so that no job changes a user's folder or smimg's S3 cache; the local API's are
    # each job's own download, writable as on SageMaker (SDK v3's ModelTrainer makes its driver script executable
    # in its channel).
    writable_channels: bool = False


MAX_HYPERPARAMETERS = 100
MAX_KEY = 256
MAX_VALUE = 2500


def hyperparameter_value(text: str) -> Any:
    """A ``--hp key=value`` value as the SDK would have it: JSON when it parses (3, 0.1, true, [1]), else text; a
    number JSON would rewrite (``1.10``, ``1e3``) stays the text typed, so it reaches the script unchanged."""
    try:
        value = json.loads(text)
    except ValueError:
        return text
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return text if number and json.dumps(value) != text.strip() else value


def check_hyperparameters(values: dict[str, Any]) -> None:
    """SageMaker's limits on CreateTrainingJob's HyperParameters (values as the SDK JSON-encodes them).

    Raises:
        LocalError: naming the key, the limit and where large values belong.
    """
    if len(values) > MAX_HYPERPARAMETERS:
        raise LocalError(
            f"{len(values)} hyperparameters; SageMaker accepts at most {MAX_HYPERPARAMETERS}",
            "group related values into one JSON value, or pass a config file in an input channel",
        )
    for key, value in values.items():
        if len(key) > MAX_KEY:
            raise LocalError(f"hyperparameter name {key[:40]}... is {len(key)} characters", f"use at most {MAX_KEY}")
        if (size := len(json.dumps(value))) > MAX_VALUE:
            raise LocalError(
                f"hyperparameter {key} is {size:,} characters; SageMaker accepts at most {MAX_VALUE:,} per value",
                "put it in a file and pass it as an input channel (--input config=FOLDER), then read it from "
                "/opt/ml/input/data/config",
            )


def job_name(prefix: str = "smimg-local") -> str:
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S-%f")[:-3]
    return f"{prefix}-{stamp}"


def parse_pairs(items: Iterable[str], what: str) -> list[tuple[str, str]]:
    """``KEY=VALUE`` strings to pairs.

    Raises:
        LocalError: an item without ``=``.
    """
    pairs = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise LocalError(f"{what} {item!r} is not KEY=VALUE", f"write it as {what} name=value")
        pairs.append((key, value))
    return pairs


def load_hyperparameters(path: Path | None, pairs: Iterable[tuple[str, str]]) -> tuple[tuple[str, Any], ...]:
    """A JSON file of hyperparameters (optional), then ``--hp`` pairs over it.

    Raises:
        LocalError: the file is missing, not JSON, or not an object.
    """
    values: dict[str, Any] = {}
    if path is not None:
        if not path.is_file():
            raise LocalError(f"hyperparameter file {path} does not exist", "pass the path of a JSON object file")
        try:
            loaded = json.loads(path.read_text())
        except ValueError as exc:
            raise LocalError(f"hyperparameter file {path} is not JSON: {exc}", "write one JSON object") from None
        if not isinstance(loaded, dict):
            raise LocalError(f"hyperparameter file {path} holds no JSON object", 'write e.g. {"epochs": 3}')
        values.update(loaded)
    values.update((key, hyperparameter_value(value)) for key, value in pairs)
    check_hyperparameters(values)
    return tuple(sorted(values.items()))


def make_job(
    image: str,
    *,
    instances: int | None = None,
    inputs: Iterable[str] = (),
    hyperparameters: Iterable[str] = (),
    hyperparameter_file: Path | None = None,
    source_dir: Path | None = None,
    entry_point: str | None = None,
    gpus: str | None = None,
    env: Iterable[str] = (),
    name: str | None = None,
    conditions: Conditions = Conditions(),
    on_line: Callable[[str], None] | None = None,
    instance_groups: Iterable[str] = (),
    distribution_group: str | None = None,
    input_groups: Iterable[str] = (),
) -> LocalJob:
    """A job from command-line style inputs (``NAME=PATH|file://|s3://``, ``key=value``, ``NAME=TYPE:COUNT``),
    checked and resolved.

    Raises:
        LocalError: a malformed pair or instance group, a missing path or hyperparameter file.
    """
    groups = parse_instance_groups(instance_groups)
    if groups and instances is not None:
        raise LocalError("--instance-group replaces -n", "leave -n out: each group names its count")
    name = name or job_name()
    cache = resources.cache_dir() / "channels"
    channels = tuple(
        (key, resolve_channel(key, value, cache, on_line)) for key, value in parse_pairs(inputs, "--input")
    )
    source_dir = resolve_source_dir(source_dir, entry_point)
    return LocalJob(
        image=image,
        instances=sum(g.count for g in groups) if groups else 1 if instances is None else instances,
        groups=groups,
        channels=channels,
        channel_groups=channel_groups(input_groups, (n for n, _ in channels), groups),
        hyperparameters=(
            *load_hyperparameters(hyperparameter_file, parse_pairs(hyperparameters, "--hp")),
            *distribution_groups(distribution_group, groups),
        ),
        source_dir=source_dir,
        entry_point=entry_point,
        gpus=gpus,
        env=tuple(parse_pairs(env, "--env")),
        name=name,
        conditions=check_conditions(conditions, name),
    )


def resolve_source_dir(source_dir: Path | None, entry_point: str | None) -> Path | None:
    """Script mode's code folder, absolute, checked to hold the entry point.

    Raises:
        LocalError: not a folder, or the script is not in it.
    """
    if source_dir is None:
        return None
    source_dir = source_dir.expanduser().resolve()
    if not source_dir.is_dir():
        raise LocalError(f"--source-dir {source_dir} is not a folder", "pass the folder that holds your script")
    if entry_point and not (source_dir / entry_point).is_file():
        raise LocalError(f"--entry-point {entry_point} is not in {source_dir}", "name a script in --source-dir")
    return source_dir


def checkpoints_option(value: str | None) -> tuple[Path | None, str | None]:
    """``--checkpoints`` as typed (a folder, or an ``s3://`` URI as CheckpointConfig.S3Uri takes) as Conditions'
    ``checkpoints`` and ``checkpoints_s3``."""
    if value is None:
        return None, None
    if value.startswith("s3://"):
        return None, value
    return Path(value.removeprefix("file://")), None


def check_conditions(conditions: Conditions, name: str) -> Conditions:
    """The rehearsal's settings, checked; the checkpoint folder resolved (for ``s3://``, this run's copy of it).

    Raises:
        LocalError: a time that is not positive, an interruption after the run limit, a checkpoint path that is a file.
    """
    times = {"--max-run": conditions.max_run, "--spot-interrupt-after": conditions.spot_interrupt_after}
    for flag, value in {**times, "--stop-grace": conditions.stop_grace}.items():
        if value is not None and not value > 0:
            raise LocalError(f"{flag} {value:g} is not a positive number of seconds", f"pass {flag} SECONDS, above 0")
    interrupt, limit = conditions.spot_interrupt_after, conditions.max_run
    if interrupt and limit and interrupt >= limit:
        raise LocalError(
            f"--spot-interrupt-after {interrupt:g} is not before --max-run {limit:g}",
            "interrupt earlier, or raise --max-run (it covers every attempt together, as on SageMaker)",
        )
    if conditions.checkpoints_s3 is not None:
        uri = conditions.checkpoints_s3
        if not S3_URI.match(uri):
            raise LocalError(f"--checkpoints {uri} is not an S3 URI", "pass s3://BUCKET/PREFIX (or a local folder)")
        digest = hashlib.sha256(uri.encode()).hexdigest()[:12]
        return replace(conditions, checkpoints=resources.cache_dir() / "checkpoints" / f"{name}-{digest}")
    checkpoints = conditions.checkpoints
    if checkpoints is not None:
        checkpoints = checkpoints.expanduser().resolve()
        if checkpoints.exists() and not checkpoints.is_dir():
            raise LocalError(f"--checkpoints {checkpoints} is a file", "pass a folder (it is created if missing)")
    return replace(conditions, checkpoints=checkpoints)


def default_run_dir(job: LocalJob) -> Path:
    """Where a job's run folder goes unless the user names one."""
    return resources.cache_dir() / "runs" / job.name
