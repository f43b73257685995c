"""SageMaker's /opt/ml contract, parsed into a frozen description of the cluster and the job. Pure."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BASE_DIR = Path(os.environ.get("SAGEMAKER_BASE_DIR", "/opt/ml"))


@dataclass(frozen=True)
class Paths:
    """Where SageMaker's files live; every path derives from one base (``/opt/ml``)."""

    base: Path = BASE_DIR

    @property
    def config(self) -> Path:
        return self.base / "input" / "config"

    @property
    def data(self) -> Path:
        return self.base / "input" / "data"

    @property
    def model(self) -> Path:
        return self.base / "model"

    @property
    def output(self) -> Path:
        return self.base / "output"

    @property
    def failure(self) -> Path:
        return self.output / "failure"

    @property
    def code(self) -> Path:
        return self.base / "code"


@dataclass(frozen=True)
class Cluster:
    """Hosts as SageMaker orders them (lexicographically), this host, its group, and the job's inputs."""

    hosts: tuple[str, ...]
    current_host: str
    current_instance_type: str = "local"
    current_group: str = "homogeneousCluster"
    instance_groups: tuple[tuple[str, str, tuple[str, ...]], ...] = ()
    network_interface: str = "eth0"
    hyperparameters: Mapping[str, str] = field(default_factory=dict)
    channels: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    resource_config: Mapping[str, Any] = field(default_factory=dict)


def _read(path: Path) -> Any:
    if not path.is_file():
        return None
    with path.open() as handle:
        return json.load(handle)


def read_cluster(paths: Paths = Paths()) -> Cluster:
    """Read the three config files. Missing optional files and fields are tolerated."""
    resource = _read(paths.config / "resourceconfig.json")
    if resource is None:
        raise FileNotFoundError(
            f"{paths.config / 'resourceconfig.json'} is missing: this is not a SageMaker training container "
            "(run the image with `smimg local run`, SageMaker, or mount an /opt/ml tree)"
        )
    return parse_cluster(
        resource,
        _read(paths.config / "hyperparameters.json") or {},
        _read(paths.config / "inputdataconfig.json") or {},
    )


def parse_cluster(
    resource: Mapping[str, Any], hyperparameters: Mapping[str, Any], channels: Mapping[str, Any]
) -> Cluster:
    hosts = tuple(sorted(resource["hosts"]))
    groups = tuple(
        (str(g.get("instance_group_name", "")), str(g.get("instance_type", "")), tuple(sorted(g.get("hosts", ()))))
        for g in resource.get("instance_groups") or ()
    )
    return Cluster(
        hosts=hosts,
        current_host=str(resource["current_host"]),
        current_instance_type=str(resource.get("current_instance_type", "local")),
        current_group=str(resource.get("current_group_name", "homogeneousCluster")),
        instance_groups=groups,
        network_interface=str(resource.get("network_interface_name") or "eth0"),
        hyperparameters={str(k): str(v) for k, v in hyperparameters.items()},
        channels={str(k): dict(v) for k, v in channels.items()},
        resource_config=dict(resource),
    )


def group_hosts(cluster: Cluster, names: tuple[str, ...] | None) -> tuple[str, ...]:
    """The hosts of the named instance groups (all hosts when ``names`` is None or there are no groups)."""
    if not names or not cluster.instance_groups:
        return cluster.hosts
    selected: dict[str, None] = {}
    for name, _, hosts in cluster.instance_groups:
        if name in names:
            selected.update(dict.fromkeys(hosts))
    return tuple(sorted(selected))
