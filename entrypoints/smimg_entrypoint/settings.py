"""smimg's launch settings from the reserved hyperparameters and the ``SMIMG_*`` variables, checked once. Pure.

A reserved hyperparameter (per job) wins over its variable (per image or host), the variable over the default.
An empty or unset value counts as not given.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeVar

from smimg_entrypoint import contract

DEFAULT_MASTER_PORT = 7777  # what sagemaker-training and SDK v3 use
STOP_GRACE = 110.0  # SIGKILL this long after SIGTERM: SageMaker kills the container at 120 s
ABORT_GRACE = 15.0
RENDEZVOUS_TIMEOUT = 600.0
# A peer's entrypoint silent this long is lost (instance gone, network partitioned). Generous: a false alarm costs the
# whole job, and a collective waiting on a lost peer would otherwise hang for NCCL's 10 to 30 minutes.
PEER_TIMEOUT = 120.0
DNS_TIMEOUT = 900.0
# The SDK's distribution flags in the order sagemaker-pytorch-training tests them (training.py): the first one set
# decides, so {"torch_distributed", "smdistributed"} runs torchrun there and here. None: smimg does not run it.
DISTRIBUTIONS: tuple[tuple[str, str | None], ...] = (
    ("sagemaker_mpi_enabled", None),
    ("sagemaker_pytorch_ddp_enabled", None),
    (contract.HP_TORCH_DISTRIBUTED, contract.TORCHRUN),
    ("sagemaker_distributed_dataparallel_enabled", None),
    ("sagemaker_pytorch_xla_multi_worker_enabled", None),
    # TensorFlow's: the PyTorch toolkit ignores them and runs one process per host; a PyTorch image refuses them.
    ("sagemaker_parameter_server_enabled", None),
    ("sagemaker_multi_worker_mirrored_strategy_enabled", None),
)
DISTRIBUTION_NAMES = {
    "sagemaker_mpi_enabled": "MPI (mpirun)",
    "sagemaker_pytorch_ddp_enabled": "pytorchddp (SMDDP over mpirun)",
    "sagemaker_distributed_dataparallel_enabled": "smdistributed data parallel",
    "sagemaker_pytorch_xla_multi_worker_enabled": "PyTorch XLA multi-worker",
    "sagemaker_parameter_server_enabled": "parameter server",
    "sagemaker_multi_worker_mirrored_strategy_enabled": "TensorFlow MultiWorkerMirroredStrategy",
}

_Default = TypeVar("_Default", int, None)


class PlanError(Exception):
    """The job cannot be launched as configured; the message says what to change."""


@dataclass(frozen=True)
class Settings:
    """Every smimg setting of one launch. ``nproc_per_node`` None: one per GPU or Neuron core (else 1)."""

    launcher: str
    bool_style: str
    master_port: int
    nproc_per_node: int | None
    nproc_source: str  # the hyperparameter or variable that set nproc_per_node, for the launch log
    distributes: bool  # the job asked for a distribution (an SDK flag) or the launcher spans hosts
    code_dir: str | None  # the image's baked code, with entry_point
    entry_point: str | None
    watch_port: int
    stop_grace: float
    abort_grace: float
    rendezvous_timeout: float
    peer_timeout: float
    dns_timeout: float
    host_addresses: Mapping[str, str] | None  # tests only: host name -> address, instead of DNS

    @classmethod
    def load(
        cls, reserved: Mapping[str, object], environ: Mapping[str, str], sdk_processes: int | None = None
    ) -> Settings:
        """Resolve and check every setting.

        Args:
            reserved: the job's reserved hyperparameters, decoded.
            environ: the container's environment.
            sdk_processes: SDK v3's ``Torchrun(process_count_per_node)``, from its ``distributed.json``.

        Raises:
            PlanError: an unsupported distribution, an unknown launcher or bool style, or a value of the wrong kind.
        """
        launcher, asked = _launcher(reserved, environ)
        bool_style = _choice(contract.BOOL_STYLE, reserved, environ, contract.BOOL_STYLES, contract.BOOL_VALUE)
        master_port = _integer(contract.MASTER_PORT, reserved, environ, DEFAULT_MASTER_PORT)
        nproc, nproc_source = _processes(reserved, environ, sdk_processes)
        watch_port = _integer(contract.WATCH_PORT_ENV, reserved, environ, master_port + 1)
        _ports(contract.MASTER_PORT, contract.WATCH_PORT_ENV, reserved, (master_port, watch_port))
        return cls(
            launcher=launcher,
            bool_style=bool_style,
            master_port=master_port,
            nproc_per_node=nproc,
            nproc_source=nproc_source,
            distributes=asked or launcher != contract.PYTHON_LAUNCHER,
            code_dir=environ.get(contract.CODE_DIR_ENV) or None,
            entry_point=environ.get(contract.ENTRY_POINT_ENV) or None,
            watch_port=watch_port,
            stop_grace=_seconds(contract.STOP_GRACE_ENV, environ, STOP_GRACE),
            abort_grace=_seconds(contract.ABORT_GRACE_ENV, environ, ABORT_GRACE),
            rendezvous_timeout=_seconds(contract.RENDEZVOUS_TIMEOUT_ENV, environ, RENDEZVOUS_TIMEOUT),
            peer_timeout=_seconds(contract.PEER_TIMEOUT_ENV, environ, PEER_TIMEOUT),
            dns_timeout=_seconds(contract.DNS_TIMEOUT_ENV, environ, DNS_TIMEOUT),
            host_addresses=_host_addresses(environ),
        )


def _truthy(value: object) -> bool:
    return value is True or str(value).lower() in ("true", "1", "yes")


def _name(setting: tuple[str, str] | str, reserved: Mapping[str, object]) -> str:
    """The hyperparameter or variable that gave the setting's value, for error messages."""
    if isinstance(setting, str):
        return setting
    hyperparameter, variable = setting
    return hyperparameter if reserved.get(hyperparameter) else variable


def _given(setting: tuple[str, str] | str, reserved: Mapping[str, object], environ: Mapping[str, str]) -> object:
    if isinstance(setting, str):
        return environ.get(setting) or None
    hyperparameter, variable = setting
    return reserved.get(hyperparameter) or environ.get(variable) or None


def _launcher(reserved: Mapping[str, object], environ: Mapping[str, str]) -> tuple[str, bool]:
    """The launcher, and whether an SDK distribution flag chose it."""
    for key, launcher in DISTRIBUTIONS:
        if not _truthy(reserved.get(key)):
            continue
        if launcher is None:
            raise PlanError(
                f"the job asks for {DISTRIBUTION_NAMES[key]} ({key}), which smimg images do not run; use "
                "distribution={'torch_distributed': {'enabled': True}} or the launcher setting in smimg.yaml"
            )
        # The SDK's torch_distributed means torchrun whatever the image's default launcher is.
        return launcher, True
    return _choice(contract.LAUNCHER, reserved, environ, contract.LAUNCHERS, contract.DEFAULT_LAUNCHER), False


def _processes(
    reserved: Mapping[str, object], environ: Mapping[str, str], sdk_processes: int | None
) -> tuple[int | None, str]:
    """Processes per host and who chose them: the job's own settings before the image's default.

    smimg_nproc_per_node (per job) > the SDK's per-job ask (v2 sends sagemaker_mpi_num_of_processes_per_host for
    distribution={"mpi": {"processes_per_host": N}}, v3 writes Torchrun(process_count_per_node) to distributed.json)
    > SMIMG_NPROC_PER_NODE (the image's or the host's default) > the devices (None here).
    """
    hyperparameter, variable = contract.NPROC_PER_NODE
    candidates = (
        (hyperparameter, reserved.get(hyperparameter)),
        (contract.HP_MPI_PROCESSES_PER_HOST, reserved.get(contract.HP_MPI_PROCESSES_PER_HOST)),
        (contract.SDK_DISTRIBUTED_FILE, sdk_processes),
        (variable, environ.get(variable)),
    )
    for source, value in candidates:
        if value is None or value == "":
            continue
        nproc = _whole(source, value)
        if nproc < 1:
            raise PlanError(f"{source} must be at least 1, not {nproc}: set a number of processes per host")
        return nproc, source
    return None, "the devices"


def _choice(
    setting: tuple[str, str] | str,
    reserved: Mapping[str, object],
    environ: Mapping[str, str],
    allowed: tuple[str, ...],
    default: str,
) -> str:
    value = str(_given(setting, reserved, environ) or default)
    if value not in allowed:
        raise PlanError(f"{_name(setting, reserved)} must be one of {', '.join(allowed)}, not {value!r}")
    return value


def _integer(
    setting: tuple[str, str] | str, reserved: Mapping[str, object], environ: Mapping[str, str], default: _Default
) -> int | _Default:
    value = _given(setting, reserved, environ)
    if value is None:
        return default
    return _whole(_name(setting, reserved), value)


def _whole(name: str, value: object) -> int:
    # Hyperparameters arrive JSON-decoded (8, or 8.0 from some tools), variables as text ("8").
    with contextlib.suppress(ValueError, OverflowError):
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):
            number = float(value)
            if number == int(number):
                return int(number)
    raise PlanError(f"{name} must be a whole number, not {value!r}: set one, or remove it to use the default")


def _ports(master: tuple[str, str], watch: str, reserved: Mapping[str, object], values: tuple[int, int]) -> None:
    for setting, port in zip((_name(master, reserved), watch), values, strict=True):
        if not 0 < port < 65536:
            raise PlanError(f"{setting} must be a TCP port (1 to 65535), not {port}")
    if values[0] == values[1]:
        raise PlanError(
            f"{watch} is {values[1]}, the master port: torchrun's store and smimg's watch need a port each; set "
            f"{watch} to another one"
        )


def _seconds(variable: str, environ: Mapping[str, str], default: float) -> float:
    value = environ.get(variable) or None
    if value is None:
        return default
    with contextlib.suppress(ValueError):
        if math.isfinite(seconds := float(value)) and seconds > 0:
            return seconds
    raise PlanError(
        f"{variable} must be a number of seconds above 0, not {value!r}: set one, or remove it to use the default "
        f"({default:.0f})"
    )


def _host_addresses(environ: Mapping[str, str]) -> Mapping[str, str] | None:
    raw = environ.get(contract.HOST_ADDRESSES_ENV)
    if not raw:
        return None
    try:
        addresses = json.loads(raw)
    except ValueError:
        addresses = None
    if not isinstance(addresses, dict):
        raise PlanError(
            f"{contract.HOST_ADDRESSES_ENV} must be a JSON object of host name to address, not {raw!r}: "
            "set one, or remove it to resolve host names through DNS"
        )
    return {str(host): str(address) for host, address in addresses.items()}
