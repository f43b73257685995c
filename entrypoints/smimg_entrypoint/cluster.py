"""SageMaker's /opt/ml contract, parsed into a frozen description of the cluster and the job. Pure."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from smimg_entrypoint import contract

BASE_DIR = Path(os.environ.get(contract.BASE_DIR_ENV, contract.OPT_ML))


@dataclass(frozen=True)
class Paths:
    """Where SageMaker's files live; every path derives from one base (``/opt/ml``)."""

    base: Path = BASE_DIR

    @property
    def resource_config(self) -> Path:
        return self.base / contract.RESOURCE_CONFIG

    @property
    def hyperparameters(self) -> Path:
        return self.base / contract.HYPERPARAMETERS

    @property
    def input_data_config(self) -> Path:
        return self.base / contract.INPUT_DATA_CONFIG

    @property
    def config(self) -> Path:
        return self.resource_config.parent

    @property
    def data(self) -> Path:
        return self.base / contract.DATA_DIR

    @property
    def model(self) -> Path:
        return self.base / contract.MODEL_DIR

    @property
    def output(self) -> Path:
        return self.base / contract.OUTPUT_DIR

    @property
    def output_data(self) -> Path:
        return self.base / contract.OUTPUT_DATA_DIR

    @property
    def failure(self) -> Path:
        return self.base / contract.FAILURE_FILE

    @property
    def success(self) -> Path:
        return self.base / contract.SUCCESS_FILE

    @property
    def checkpoints(self) -> Path:
        return self.base / contract.CHECKPOINTS_DIR

    @property
    def code(self) -> Path:
        return self.base / contract.CODE_DIR


@dataclass(frozen=True)
class Cluster:
    """Hosts as SageMaker orders them (lexicographically), this host, its group, and the job's inputs."""

    hosts: tuple[str, ...]
    current_host: str
    current_instance_type: str = "local"
    current_group: str = contract.DEFAULT_GROUP
    instance_groups: tuple[tuple[str, str, tuple[str, ...]], ...] = ()
    network_interface: str = contract.DEFAULT_INTERFACE
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
    resource = _read(paths.resource_config)
    if resource is None:
        raise FileNotFoundError(
            f"{paths.resource_config} is missing: this is not a SageMaker training container "
            "(run the image with `smimg local run`, SageMaker, or mount an /opt/ml tree)"
        )
    return parse_cluster(resource, _read(paths.hyperparameters) or {}, _read(paths.input_data_config) or {})


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
        current_group=str(resource.get("current_group_name", contract.DEFAULT_GROUP)),
        instance_groups=groups,
        network_interface=str(resource.get("network_interface_name") or contract.DEFAULT_INTERFACE),
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
