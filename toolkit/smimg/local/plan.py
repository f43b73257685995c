"""Local mode's planner: a ``LocalJob`` becomes the run folder's files and the containers ``algo-1..N``. Pure.

Each host gets the /opt/ml tree SageMaker creates (the contract's paths): resourceconfig, hyperparameters (JSON-
encoded as the SDK sends them), inputdataconfig, channel mounts, model, output and checkpoints folders. The same
containers are written as a compose file, to read or to run by hand.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from smimg.engine import ContainerSpec, Mount
from smimg.errors import LocalError
from smimg.local.job import InstanceGroup, LocalJob, Verbatim
from smimg_entrypoint import contract

MAX_INSTANCES = 32
SHM_SIZE = "8g"
RESOLV_CONF = "resolv.conf"  # in the run folder: the hosts' resolver under network isolation
# Docker's resolver answers nothing for outside names on an internal network: glibc's default waits 5 s per
# query and try, 20 s per lookup (torchrun and c10d look names up). One second, one try: an outside name fails in
# about 2 s (A and AAAA), the hosts' own names still resolve at once.
ISOLATED_RESOLVER = "nameserver 127.0.0.11\noptions ndots:0 timeout:1 attempts:1\n"
CHECKPOINT_CONFIG = "input/config/checkpointconfig.json"
_CHANNEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*\Z")


@dataclass(frozen=True)
class HostPlan:
    name: str
    gpu_ids: tuple[str, ...]
    files: tuple[tuple[str, str], ...]  # path inside the host's /opt/ml -> content
    dirs: tuple[str, ...]  # folders inside the host's /opt/ml to create


@dataclass(frozen=True)
class LocalPlan:
    job: LocalJob
    run_dir: Path
    project: str
    hosts: tuple[HostPlan, ...]
    containers: tuple[ContainerSpec, ...]  # one per host, in the same order
    internal: bool  # the network reaches nothing outside the job's hosts
    files: tuple[tuple[str, str], ...] = ()  # path inside the run folder -> content

    @property
    def compose_file(self) -> Path:
        return self.run_dir / "docker-compose.yaml"

    @property
    def network(self) -> str:
        return self.project

    @property
    def labels(self) -> dict[str, str]:
        """On the job's containers and network: clean-up removes only what carries them."""
        return {contract.LABEL_JOB: self.project}

    def compose_yaml(self) -> str:
        """The containers as a compose file. Compose interpolates ``$`` in every value: written as ``$$``, each of
        the user's values (environment, paths, names) reaches the container exactly as typed."""
        network: dict[str, Any] = {"name": self.network, **({"internal": True} if self.internal else {})}
        network["labels"] = self.labels
        project = {
            "services": {host.name: _service(c) for host, c in zip(self.hosts, self.containers, strict=True)},
            "networks": {"default": network},
        }
        return yaml.safe_dump(_literal(project), sort_keys=False)

    def host_dir(self, host: str) -> Path:
        return self.run_dir / host

    def container(self, host: str) -> str:
        return container_name(self.project, host)


_PRIVATE = {"propagation": "rprivate"}


def _service(container: ContainerSpec) -> dict[str, Any]:
    service: dict[str, Any] = {
        "image": container.image,
        "container_name": container.name,
        "hostname": container.hostname,
        **({"entrypoint": list(container.entrypoint)} if container.entrypoint is not None else {}),
        "command": list(container.command),
        "shm_size": container.shm_size,
        "environment": dict(container.environment),
        "labels": dict(container.labels),
        # The long syntax with a propagation: compose then uses the engine's Mount API, as smimg does.
        "volumes": [
            {"type": "bind", "source": m.source, "target": m.target, "read_only": m.read_only, "bind": _PRIVATE}
            for m in container.mounts
        ],
        "networks": {"default": {"aliases": list(container.aliases)}},
    }
    if container.gpu_ids:
        device = {"driver": "nvidia", "device_ids": list(container.gpu_ids), "capabilities": ["gpu"]}
        service["deploy"] = {"resources": {"reservations": {"devices": [device]}}}
    return service


def _literal(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("$", "$$")
    if isinstance(value, dict):
        return {key: _literal(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_literal(item) for item in value]
    return value


def plan_job(job: LocalJob, run_dir: Path, available_gpus: Sequence[str] = ()) -> LocalPlan:
    """Turn a job into the run folder's files and its containers. Pure.

    Raises:
        LocalError: an invalid instance count, channel name or GPU request.
    """
    _check(job)
    slices = _gpu_slices(job.gpus, job.instances, available_gpus)
    layout = _layout(job)
    project = re.sub(r"[^a-z0-9-]", "-", job.name.lower())
    host_plans = tuple(_host(job, host, layout, gpu_ids) for host, gpu_ids in zip(layout, slices, strict=True))
    containers = tuple(_container(job, run_dir, h, project, layout[h.name].name) for h in host_plans)
    # As EnableNetworkIsolation: the hosts reach each other, nothing else (no PyPI, S3 or metadata endpoint).
    isolated = job.conditions.network_isolation
    files = ((RESOLV_CONF, ISOLATED_RESOLVER),) if isolated else ()
    return LocalPlan(job, run_dir, project, host_plans, containers, internal=isolated, files=files)


def _layout(job: LocalJob) -> dict[str, InstanceGroup]:
    """Each host (algo-1..N, in the groups' order) and its instance group; without groups, every host in
    SageMaker's one ``homogeneousCluster`` group."""
    groups = job.groups or (InstanceGroup(contract.DEFAULT_GROUP, "local", job.instances),)
    members = [group for group in groups for _ in range(group.count)]
    return {f"algo-{i}": group for i, group in enumerate(members, start=1)}


def _check(job: LocalJob) -> None:
    if job.groups and sum(g.count for g in job.groups) != job.instances:
        raise LocalError(
            f"the instance groups hold {sum(g.count for g in job.groups)} instances, not {job.instances}",
            "make the job's instances the sum of its groups' counts (as make_job does)",
        )
    if not 1 <= job.instances <= MAX_INSTANCES:
        raise LocalError(
            f"--instances {job.instances} is not a valid instance count", f"use 1 to {MAX_INSTANCES} instances"
        )
    for name, _ in job.channels:
        if not _CHANNEL.match(name):
            raise LocalError(f"channel name {name!r} is not valid", "use letters, digits, '-', '_' (e.g. train)")
    if job.source_dir is not None and not job.entry_point:
        raise LocalError("--source-dir needs --entry-point", "name the script to run, e.g. --entry-point train.py")


def hyperparameters_json(job: LocalJob) -> dict[str, str]:
    """``hyperparameters.json`` as the SDK writes it: every value JSON-encoded, script mode's keys added."""
    values = dict(job.hyperparameters)
    if job.source_dir is not None:
        # What the SDK's local mode sends for local code: the program and where the mounted code is.
        values[contract.HP_PROGRAM] = job.entry_point
        values[contract.HP_SUBMIT_DIRECTORY] = contract.opt_ml(contract.CODE_DIR)
    return {key: value if isinstance(value, Verbatim) else json.dumps(value) for key, value in sorted(values.items())}


def _host(job: LocalJob, host: str, layout: Mapping[str, InstanceGroup], gpu_ids: tuple[str, ...]) -> HostPlan:
    group = layout[host]
    declared = job.groups or (group,)  # a group of 0 instances is listed too, with no hosts
    resource = {
        "current_host": host,
        "current_group_name": group.name,
        "current_instance_type": group.instance_type if job.groups else "local_gpu" if gpu_ids else "local",
        # As SageMaker: `hosts` sorted as text (algo-10 before algo-2), the instance group's own list not sorted so
        # (here in numeric order); an image that ranks nodes from one and finds its master in the other breaks here.
        "hosts": sorted(layout),
        "instance_groups": [
            {
                "instance_group_name": g.name,
                "instance_type": g.instance_type,
                "hosts": [h for h, of in layout.items() if of.name == g.name],
            }
            for g in declared
        ],
        "network_interface_name": contract.DEFAULT_INTERFACE,
    }
    data_config = {
        name: {"TrainingInputMode": "File", "S3DistributionType": "FullyReplicated", "RecordWrapperType": "None"}
        for name, _ in host_channels(job, group.name)
    }
    files: tuple[tuple[str, str], ...] = (
        (contract.RESOURCE_CONFIG, json.dumps(resource, indent=2)),
        (contract.HYPERPARAMETERS, json.dumps(hyperparameters_json(job), indent=2)),
        (contract.INPUT_DATA_CONFIG, json.dumps(data_config, indent=2)),
    )
    if job.conditions.checkpoints is not None:
        # SageMaker writes it only with a CheckpointConfig; some containers look for it.
        uri = job.conditions.checkpoints_s3 or job.conditions.checkpoints.as_uri()
        where = {"LocalPath": contract.opt_ml(contract.CHECKPOINTS_DIR), "S3Uri": uri}
        files += ((CHECKPOINT_CONFIG, json.dumps(where, indent=2)),)
    channels = (f"{contract.DATA_DIR}/{name}" for name, _ in host_channels(job, group.name))
    dirs = (contract.MODEL_DIR, contract.OUTPUT_DATA_DIR, contract.CHECKPOINTS_DIR, *channels)
    return HostPlan(host, gpu_ids, files, dirs)


def host_channels(job: LocalJob, group: str) -> tuple[tuple[str, Path], ...]:
    """The channels a host of ``group`` gets: all of them, unless the job assigns channels to instance groups."""
    assigned = dict(job.channel_groups)
    return tuple((name, source) for name, source in job.channels if not assigned or group in assigned.get(name, ()))


def _container(job: LocalJob, run_dir: Path, host: HostPlan, project: str, group: str) -> ContainerSpec:
    mounts = [Mount(str(run_dir / host.name), contract.OPT_ML, read_only=False)]
    mounts += [
        Mount(str(source), f"{contract.opt_ml(contract.DATA_DIR)}/{name}", read_only=not job.writable_channels)
        for name, source in host_channels(job, group)
    ]
    if job.source_dir is not None:
        mounts.append(Mount(str(job.source_dir), contract.opt_ml(contract.CODE_DIR)))
    if job.conditions.network_isolation:
        mounts.append(Mount(str(run_dir / RESOLV_CONF), "/etc/resolv.conf"))
    return ContainerSpec(
        name=container_name(project, host.name),
        image=job.image,
        hostname=host.name,
        network=project,
        aliases=(host.name,),
        entrypoint=job.entrypoint,
        # A ContainerEntrypoint of the job's own runs without `train`, as on SageMaker.
        command=job.arguments if job.arguments is not None else () if job.entrypoint else (contract.TRAIN_COMMAND,),
        environment=tuple({contract.TRAINING_JOB_NAME_ENV: job.name, **dict(job.env)}.items()),
        labels=((contract.LABEL_JOB, project),),
        mounts=tuple(mounts),
        shm_size=SHM_SIZE,
        gpu_ids=host.gpu_ids,
    )


def container_name(project: str, host: str) -> str:
    return f"{project}-{host}"


def _gpu_slices(gpus: str | None, instances: int, available: Sequence[str]) -> list[tuple[str, ...]]:
    if gpus is None:
        return [()] * instances
    if gpus == "all":
        wanted = len(available)
    elif gpus.isdigit() and int(gpus) > 0:
        wanted = int(gpus)
    else:
        raise LocalError(f"--gpus {gpus!r} is not valid", "use --gpus all, or a total count such as --gpus 4")
    if wanted == 0 or wanted > len(available):
        raise LocalError(
            f"--gpus {gpus} asks for {wanted or 'all'} GPUs but this machine has {len(available)}",
            "leave --gpus out to run on CPU, or ask for at most the GPUs `nvidia-smi -L` lists",
        )
    if wanted % instances:
        raise LocalError(
            f"{wanted} GPUs do not split evenly over {instances} instances",
            "use a GPU count that is a multiple of --instances (SageMaker instances have equal GPUs)",
        )
    per = wanted // instances
    return [tuple(available[i * per : (i + 1) * per]) for i in range(instances)]
