"""Cluster + job + devices to a launch plan (argv and environment), with no side effects.

The same inputs give the same plan on every node, so ranks agree without talking: hosts are sorted
lexicographically (algo-10 before algo-2, as SageMaker documents), the master is the first host of the
distribution groups, and a node's rank is its index among them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from smimg_entrypoint import hyperparameters as hp
from smimg_entrypoint.cluster import Cluster, Paths, group_hosts

LAUNCHERS = ("torchrun", "accelerate", "python")
DEFAULT_MASTER_PORT = 7777  # what sagemaker-training and SDK v3 use
UNSUPPORTED = {
    "sagemaker_mpi_enabled": "MPI (mpirun)",
    "sagemaker_distributed_dataparallel_enabled": "smdistributed data parallel",
    "sagemaker_pytorch_ddp_enabled": "pytorchddp (SMDDP over mpirun)",
    "sagemaker_pytorch_xla_multi_worker_enabled": "PyTorch XLA multi-worker",
    "sagemaker_parameter_server_enabled": "parameter server",
    "sagemaker_multi_worker_mirrored_strategy_enabled": "TensorFlow MultiWorkerMirroredStrategy",
}


class PlanError(Exception):
    """The job cannot be launched as configured; the message says what to change."""


@dataclass(frozen=True)
class Devices:
    """What this node has: GPUs, Neuron cores, CPUs, EFA, network interfaces."""

    gpus: int = 0
    neuron_cores: int = 0
    cpus: int = 1
    efa: bool = False
    interfaces: tuple[str, ...] = ()


@dataclass(frozen=True)
class Code:
    """Where the training code is, its entry point, and what must be fetched first."""

    directory: str
    entry_point: str
    fetch_from: str | None = None

    @property
    def is_module(self) -> bool:
        return self.entry_point.startswith("-m ")


@dataclass(frozen=True)
class LaunchPlan:
    launcher: str
    argv: tuple[str, ...]
    env: Mapping[str, str]
    cwd: str
    hosts: tuple[str, ...]
    node_rank: int
    nproc_per_node: int
    master_host: str
    master_addr: str
    master_port: int
    code: Code
    script_args: tuple[str, ...] = field(default=())

    @property
    def nnodes(self) -> int:
        return len(self.hosts)

    @property
    def is_master(self) -> bool:
        return self.node_rank == 0


def choose_code(
    reserved: Mapping[str, object], environ: Mapping[str, str], paths: Paths, code_dir_has_files: bool
) -> Code:
    """Script mode (``sagemaker_program`` + ``sagemaker_submit_directory``), /opt/ml/code, or baked code."""
    program = environ.get("SAGEMAKER_PROGRAM") or reserved.get("sagemaker_program")
    submit = reserved.get("sagemaker_submit_directory")
    if program:
        program = str(program)
        if submit and not code_dir_has_files:
            source = str(submit)
            if not source.startswith("s3://") and not source.endswith((".tar.gz", ".tgz")):
                return Code(source, program)
            return Code(str(paths.code), program, fetch_from=source)
        return Code(str(paths.code), program)
    baked = environ.get("SMIMG_CODE_DIR")
    entry = environ.get("SMIMG_ENTRY_POINT")
    if baked and entry:
        return Code(baked, entry)
    raise PlanError(
        "no training code: the image has no baked code (SMIMG_CODE_DIR/SMIMG_ENTRY_POINT) and the job names no "
        "sagemaker_program; set code: in smimg.yaml, or pass entry_point/source_dir in the SageMaker SDK"
    )


def _truthy(value: object) -> bool:
    return value is True or str(value).lower() in ("true", "1", "yes")


def choose_launcher(reserved: Mapping[str, object], environ: Mapping[str, str]) -> str:
    for key, name in UNSUPPORTED.items():
        if _truthy(reserved.get(key)):
            raise PlanError(
                f"the job asks for {name} ({key}), which smimg images do not run; use "
                "distribution={'torch_distributed': {'enabled': True}} or the launcher setting in smimg.yaml"
            )
    chosen = str(reserved.get("smimg_launcher") or environ.get("SMIMG_LAUNCHER") or "torchrun")
    if _truthy(reserved.get("sagemaker_torch_distributed_enabled")):
        chosen = "torchrun"
    if chosen not in LAUNCHERS:
        raise PlanError(f"unknown launcher {chosen!r}: use one of {', '.join(LAUNCHERS)}")
    return chosen


def plan_launch(
    cluster: Cluster,
    environ: Mapping[str, str],
    devices: Devices,
    code: Code,
    paths: Paths | None = None,
    host_addresses: Mapping[str, str] | None = None,
) -> LaunchPlan:
    """Plan this node's launch.

    Args:
        cluster: the parsed /opt/ml config.
        environ: the container's environment (image defaults and the user's variables).
        devices: what this node has.
        code: where the code is (see ``choose_code``).
        paths: the /opt/ml layout.
        host_addresses: test-only host-to-address map; SageMaker hosts resolve through DNS.

    Raises:
        PlanError: an unsupported distribution, an unknown launcher, or a bad smimg_* setting.
    """
    paths = paths or Paths()
    decoded = hp.decode(cluster.hyperparameters)
    user, reserved = hp.split(decoded)
    launcher = choose_launcher(reserved, environ)
    try:
        script_args = tuple(
            hp.to_args(user, str(reserved.get("smimg_bool_style") or environ.get("SMIMG_BOOL_STYLE") or "value"))
        )
    except ValueError as exc:
        raise PlanError(str(exc)) from None

    group_names = reserved.get("sagemaker_distribution_instance_groups")
    hosts = group_hosts(cluster, tuple(group_names) if isinstance(group_names, list) else None)
    if cluster.current_host not in hosts:
        # A node outside the distribution groups (heterogeneous clusters) runs the script on its own.
        hosts, launcher = (cluster.current_host,), "python"
    node_rank = hosts.index(cluster.current_host)
    master_host = hosts[0]
    master_addr = (host_addresses or {}).get(master_host, master_host)
    master_port = int(reserved.get("smimg_master_port") or environ.get("SMIMG_MASTER_PORT") or DEFAULT_MASTER_PORT)

    override = reserved.get("smimg_nproc_per_node") or environ.get("SMIMG_NPROC_PER_NODE")
    nproc = int(override) if override else (devices.gpus or devices.neuron_cores or 1)
    if nproc < 1:
        raise PlanError(f"smimg_nproc_per_node must be at least 1, not {nproc}")

    target = ["-m", code.entry_point[3:].strip()] if code.is_module else [code.entry_point]
    if launcher == "torchrun":
        argv = [
            "torchrun",
            "--nnodes",
            str(len(hosts)),
            "--nproc_per_node",
            str(nproc),
            "--node_rank",
            str(node_rank),
            "--master_addr",
            master_addr,
            "--master_port",
            str(master_port),
            *target,
            *script_args,
        ]
    elif launcher == "accelerate":
        argv = [
            "accelerate",
            "launch",
            "--num_machines",
            str(len(hosts)),
            "--num_processes",
            str(nproc * len(hosts)),
            "--machine_rank",
            str(node_rank),
            "--main_process_ip",
            master_addr,
            "--main_process_port",
            str(master_port),
            *(["--multi_gpu"] if devices.gpus and nproc * len(hosts) > 1 else []),
            *(["--cpu"] if not devices.gpus else []),
            *(["--module", target[1]] if code.is_module else [target[0]]),
            *script_args,
        ]
    else:
        argv = ["python", *target, *script_args]

    env = sm_environment(cluster, user, reserved, devices, code, paths, hosts, script_args)
    env.update(
        {
            "MASTER_ADDR": master_addr,
            "MASTER_PORT": str(master_port),
            "SM_MASTER_ADDR": master_host,
            "SM_MASTER_PORT": str(master_port),
            "SM_HOST_COUNT": str(len(hosts)),
            "SM_CURRENT_HOST_RANK": str(node_rank),
        }
    )
    env.update(_network_env(cluster, environ, devices))
    if "PYTHONUNBUFFERED" not in environ:
        env["PYTHONUNBUFFERED"] = "1"
    return LaunchPlan(
        launcher=launcher,
        argv=tuple(argv),
        env=env,
        cwd=code.directory,
        hosts=hosts,
        node_rank=node_rank,
        nproc_per_node=nproc,
        master_host=master_host,
        master_addr=master_addr,
        master_port=master_port,
        code=code,
        script_args=script_args,
    )


def _network_env(cluster: Cluster, environ: Mapping[str, str], devices: Devices) -> dict[str, str]:
    """NCCL/EFA settings by capability; a variable the user set is never overwritten."""
    wanted: dict[str, str] = {}
    if cluster.network_interface in devices.interfaces:
        wanted["NCCL_SOCKET_IFNAME"] = cluster.network_interface
    if devices.efa:
        wanted.update({"FI_PROVIDER": "efa", "FI_EFA_USE_DEVICE_RDMA": "1", "RDMAV_FORK_SAFE": "1"})
    return {k: v for k, v in wanted.items() if k not in environ}


def _dumps(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def sm_environment(
    cluster: Cluster,
    user: Mapping[str, object],
    reserved: Mapping[str, object],
    devices: Devices,
    code: Code,
    paths: Paths,
    hosts: tuple[str, ...],
    script_args: tuple[str, ...],
) -> dict[str, str]:
    """The SM_* variables sagemaker-training defines, in its encoding (strings verbatim, the rest JSON)."""
    channels = sorted(cluster.channels)
    entry = code.entry_point[3:].strip() if code.is_module else code.entry_point
    module = entry if code.is_module else PurePosixPath(entry).name.rsplit(".py", 1)[0]
    env = {
        "SM_HOSTS": _dumps(list(cluster.hosts)),
        "SM_CURRENT_HOST": cluster.current_host,
        "SM_CURRENT_INSTANCE_TYPE": cluster.current_instance_type,
        "SM_CURRENT_INSTANCE_GROUP": cluster.current_group,
        "SM_NETWORK_INTERFACE_NAME": cluster.network_interface,
        "SM_NUM_GPUS": str(devices.gpus),
        "SM_NUM_CPUS": str(devices.cpus),
        "SM_NUM_NEURONS": str(devices.neuron_cores),
        "SM_CHANNELS": _dumps(channels),
        "SM_HPS": _dumps(dict(user)),
        "SM_USER_ARGS": _dumps(list(script_args)),
        "SM_MODEL_DIR": str(paths.model),
        "SM_OUTPUT_DIR": str(paths.output),
        "SM_OUTPUT_DATA_DIR": str(paths.output / "data"),
        "SM_OUTPUT_INTERMEDIATE_DIR": str(paths.output / "intermediate"),
        "SM_INPUT_DIR": str(paths.base / "input"),
        "SM_INPUT_CONFIG_DIR": str(paths.config),
        "SM_RESOURCE_CONFIG": _dumps(dict(cluster.resource_config)),
        "SM_INPUT_DATA_CONFIG": _dumps({k: dict(v) for k, v in cluster.channels.items()}),
        "SM_USER_ENTRY_POINT": entry,
        "SM_MODULE_NAME": module,
        "SM_MODULE_DIR": code.fetch_from or code.directory,
        "SM_FRAMEWORK_PARAMS": _dumps({k: v for k, v in reserved.items() if k.startswith("sagemaker_")}),
        "SM_LOG_LEVEL": str(reserved.get("sagemaker_container_log_level", 20)),
        "SM_DISTRIBUTION_HOSTS": _dumps(list(hosts)),
    }
    for name in channels:
        env[f"SM_CHANNEL_{name.upper()}"] = str(paths.data / name)
    for key, value in user.items():
        env[f"SM_HP_{key.upper()}"] = value if isinstance(value, str) else _dumps(value)
    env["SM_TRAINING_ENV"] = _dumps(
        {
            "hosts": list(cluster.hosts),
            "current_host": cluster.current_host,
            "master_hostname": hosts[0],
            "is_master": cluster.current_host == hosts[0],
            "distribution_hosts": list(hosts),
            "channel_input_dirs": {n: str(paths.data / n) for n in channels},
            "hyperparameters": dict(user),
            "model_dir": str(paths.model),
            "output_data_dir": str(paths.output / "data"),
            "num_gpus": devices.gpus,
            "num_cpus": devices.cpus,
            "user_entry_point": entry,
            "module_name": module,
            "network_interface_name": cluster.network_interface,
        }
    )
    return env
