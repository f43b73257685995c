"""Cluster + job + devices to a launch plan (argv and environment), with no side effects.

The same inputs give the same plan on every node, so ranks agree without talking: hosts are sorted
lexicographically (algo-10 before algo-2, as SageMaker documents), the master is the first host of the
distribution groups, and a node's rank is its index among them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath

from smimg_entrypoint import contract
from smimg_entrypoint.cluster import Cluster, Paths, group_hosts
from smimg_entrypoint.hyperparameters import Hyperparameters, to_args
from smimg_entrypoint.settings import PlanError, Settings

MAX_ARG_STRLEN = 131072  # Linux: bytes in one argument or environment string, its closing NUL included
HYPERPARAMETER_LIMIT = 2500  # SageMaker's CreateTrainingJob: characters in one hyperparameter value


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
class Topology:
    """The hosts that train together, this node's rank among them, and their master."""

    hosts: tuple[str, ...]
    node_rank: int
    master_host: str
    master_addr: str
    distributed: bool  # False: this host is outside the distribution groups and runs the script alone


@dataclass(frozen=True)
class Timeouts:
    """How long the executor waits, in seconds."""

    rendezvous: float  # for every worker's entrypoint to join the master's
    finish: float  # for the other nodes' outcome once this node's launcher succeeded
    stop_grace: float  # from forwarding SageMaker's SIGTERM to SIGKILL
    abort_grace: float  # from stopping for a failed peer to SIGKILL


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
    script_args: tuple[str, ...]
    log_dir: str
    watch_port: int
    timeouts: Timeouts

    @property
    def nnodes(self) -> int:
        return len(self.hosts)

    @property
    def is_master(self) -> bool:
        return self.node_rank == 0


def choose_code(
    reserved: Mapping[str, object],
    settings: Settings,
    environ: Mapping[str, str],
    paths: Paths,
    code_dir_has_files: bool,
) -> Code:
    """Script mode (``sagemaker_program`` + ``sagemaker_submit_directory``), /opt/ml/code, or baked code."""
    program = environ.get(contract.PROGRAM_ENV) or reserved.get(contract.HP_PROGRAM)
    submit = reserved.get(contract.HP_SUBMIT_DIRECTORY)
    if program:
        program = str(program)
        if submit and not code_dir_has_files:
            source = str(submit)
            if not source.startswith("s3://") and not source.endswith((".tar.gz", ".tgz")):
                return Code(source, program)
            return Code(str(paths.code), program, fetch_from=source)
        return Code(str(paths.code), program)
    if settings.code_dir and settings.entry_point:
        return Code(settings.code_dir, settings.entry_point)
    raise PlanError(
        f"no training code: the image has no baked code ({contract.CODE_DIR_ENV}/{contract.ENTRY_POINT_ENV}) and "
        f"the job names no {contract.HP_PROGRAM}; set code: in smimg.yaml, or pass entry_point/source_dir in the "
        "SageMaker SDK"
    )


def plan_topology(
    cluster: Cluster, reserved: Mapping[str, object], host_addresses: Mapping[str, str] | None
) -> Topology:
    """The distribution groups' hosts in SageMaker's order; the first is the master."""
    group_names = reserved.get(contract.HP_DISTRIBUTION_GROUPS)
    hosts = group_hosts(cluster, tuple(group_names) if isinstance(group_names, list) else None)
    distributed = cluster.current_host in hosts
    if not distributed:
        # A node outside the distribution groups (heterogeneous clusters) runs the script on its own.
        hosts = (cluster.current_host,)
    master_host = hosts[0]
    return Topology(
        hosts=hosts,
        node_rank=hosts.index(cluster.current_host),
        master_host=master_host,
        master_addr=(host_addresses or {}).get(master_host, master_host),
        distributed=distributed,
    )


def plan_launch(
    cluster: Cluster,
    hyperparameters: Hyperparameters,
    settings: Settings,
    environ: Mapping[str, str],
    devices: Devices,
    code: Code,
    log_dir: str,
    paths: Paths | None = None,
) -> LaunchPlan:
    """Plan this node's launch.

    Args:
        cluster: the parsed /opt/ml config.
        hyperparameters: the job's, decoded once (``hyperparameters.parse``).
        settings: smimg's settings, checked (``Settings.load``).
        environ: the container's environment (image defaults and the user's variables).
        devices: what this node has.
        code: where the code is (see ``choose_code``).
        log_dir: where torchrun writes each rank's output; the executor creates it before the launch.
        paths: the /opt/ml layout.
    """
    paths = paths or Paths()
    topology = plan_topology(cluster, hyperparameters.reserved, settings.host_addresses)
    launcher = settings.launcher if topology.distributed else contract.PYTHON_LAUNCHER
    nproc = settings.nproc_per_node or devices.gpus or devices.neuron_cores or 1
    script_args = tuple(to_args(hyperparameters.user, settings.bool_style))
    if launcher == contract.TORCHRUN:
        argv = _torchrun_argv(topology, nproc, settings.master_port, code, log_dir)
    elif launcher == contract.ACCELERATE:
        argv = _accelerate_argv(topology, nproc, settings.master_port, code, devices)
    else:
        argv = _python_argv(code)
    env = sm_environment(
        cluster, hyperparameters.user, hyperparameters.reserved, devices, code, paths, topology.hosts, script_args
    )
    env.update(_launch_env(cluster, environ, devices, topology, settings.master_port))
    _check_exec_limits((*argv, *script_args), env, hyperparameters)
    return LaunchPlan(
        launcher=launcher,
        argv=(*argv, *script_args),
        env=env,
        cwd=code.directory,
        hosts=topology.hosts,
        node_rank=topology.node_rank,
        nproc_per_node=nproc,
        master_host=topology.master_host,
        master_addr=topology.master_addr,
        master_port=settings.master_port,
        code=code,
        script_args=script_args,
        log_dir=log_dir,
        watch_port=settings.watch_port,
        timeouts=Timeouts(
            rendezvous=settings.rendezvous_timeout,
            finish=settings.finish_timeout,
            stop_grace=settings.stop_grace,
            abort_grace=settings.abort_grace,
        ),
    )


def _check_exec_limits(argv: tuple[str, ...], env: Mapping[str, str], hyperparameters: Hyperparameters) -> None:
    """Refuse here what exec would refuse with E2BIG ("Argument list too long"), which names no value."""
    # Surrogates JSON let through must not make the measure itself fail.
    sizes = [(len(arg.encode(errors="surrogatepass")), "an argument") for arg in argv]
    sizes += [(len(f"{key}={value}".encode(errors="surrogatepass")), key) for key, value in env.items()]
    size, where = max(sizes)
    if size >= MAX_ARG_STRLEN:
        raise PlanError(
            too_long(
                {**hyperparameters.user, **hyperparameters.reserved},
                f"{where} would be {size:,} bytes, and Linux refuses any argument or environment variable of "
                f"{MAX_ARG_STRLEN:,} bytes or more",
            )
        )


def too_long(hyperparameters: Mapping[str, object], problem: str) -> str:
    """Why the launch is too long for Linux, naming the hyperparameters over SageMaker's own limit, and the fix."""
    sizes = {key: len(value if isinstance(value, str) else json.dumps(value)) for key, value in hyperparameters.items()}
    over = sorted((key for key, size in sizes.items() if size > HYPERPARAMETER_LIMIT), key=lambda key: -sizes[key])
    # Five at most: the failure file keeps 1,024 characters, and the fix must fit in them.
    named = ", ".join(f"{key!r} ({sizes[key]:,} characters)" for key in over[:5])
    named += f" and {len(over) - 5} more" if len(over) > 5 else ""
    if len(over) > 1:
        blame = f"hyperparameters {named} are too long to pass to the training script"
    elif over:
        blame = f"hyperparameter {named} is too long to pass to the training script"
    else:
        blame = "the training script's arguments and environment are too long"
    return (
        f"{blame}: {problem}; SageMaker allows at most {HYPERPARAMETER_LIMIT:,} characters per hyperparameter "
        "value: pass large values as a file in an input channel and read it from the folder SM_CHANNEL_<NAME> names"
    )


def _target(code: Code) -> list[str]:
    return ["-m", code.entry_point[3:].strip()] if code.is_module else [code.entry_point]


def _torchrun_argv(topology: Topology, nproc: int, master_port: int, code: Code, log_dir: str) -> list[str]:
    return [
        contract.TORCHRUN,
        # Per-rank logs (and "[rankN]:" prefixes on the console) let the failure file name the failing rank.
        "--log-dir",
        log_dir,
        "--tee",
        "3",
        "--nnodes",
        str(len(topology.hosts)),
        "--nproc_per_node",
        str(nproc),
        "--node_rank",
        str(topology.node_rank),
        "--master_addr",
        topology.master_addr,
        "--master_port",
        str(master_port),
        *_target(code),
    ]


def _accelerate_argv(topology: Topology, nproc: int, master_port: int, code: Code, devices: Devices) -> list[str]:
    processes = nproc * len(topology.hosts)
    target = _target(code)
    return [
        contract.ACCELERATE,
        "launch",
        "--num_machines",
        str(len(topology.hosts)),
        "--num_processes",
        str(processes),
        "--machine_rank",
        str(topology.node_rank),
        "--main_process_ip",
        topology.master_addr,
        "--main_process_port",
        str(master_port),
        *(["--multi_gpu"] if devices.gpus and processes > 1 else []),
        *(["--cpu"] if not devices.gpus else []),
        *(["--module", target[1]] if code.is_module else target),
    ]


def _python_argv(code: Code) -> list[str]:
    return [contract.PYTHON_LAUNCHER, *_target(code)]


def _launch_env(
    cluster: Cluster, environ: Mapping[str, str], devices: Devices, topology: Topology, master_port: int
) -> dict[str, str]:
    """The rendezvous variables and the network settings, over the SM_* ones."""
    env = {
        "MASTER_ADDR": topology.master_addr,
        "MASTER_PORT": str(master_port),
        "SM_MASTER_ADDR": topology.master_host,
        "SM_MASTER_PORT": str(master_port),
        "SM_HOST_COUNT": str(len(topology.hosts)),
        "SM_CURRENT_HOST_RANK": str(topology.node_rank),
    }
    env.update(_network_env(cluster, environ, devices))
    if "PYTHONUNBUFFERED" not in environ:
        env["PYTHONUNBUFFERED"] = "1"
    return env


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
        "SM_OUTPUT_DATA_DIR": str(paths.output_data),
        "SM_OUTPUT_INTERMEDIATE_DIR": str(paths.output / "intermediate"),
        "SM_INPUT_DIR": str(paths.base / "input"),
        "SM_INPUT_CONFIG_DIR": str(paths.config),
        "SM_RESOURCE_CONFIG": _dumps(dict(cluster.resource_config)),
        "SM_INPUT_DATA_CONFIG": _dumps({k: dict(v) for k, v in cluster.channels.items()}),
        "SM_USER_ENTRY_POINT": entry,
        "SM_MODULE_NAME": module,
        "SM_MODULE_DIR": code.fetch_from or code.directory,
        "SM_FRAMEWORK_PARAMS": _dumps({k: v for k, v in reserved.items() if k.startswith(contract.SAGEMAKER_PREFIX)}),
        "SM_LOG_LEVEL": str(reserved.get(contract.HP_LOG_LEVEL, 20)),
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
            "output_data_dir": str(paths.output_data),
            "num_gpus": devices.gpus,
            "num_cpus": devices.cpus,
            "user_entry_point": entry,
            "module_name": module,
            "network_interface_name": cluster.network_interface,
        }
    )
    return env
