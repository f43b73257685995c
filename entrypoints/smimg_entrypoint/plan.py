"""Cluster + job + devices to a launch plan (argv and environment), with no side effects.

The same inputs give the same plan on every node, so ranks agree without talking: hosts are sorted
lexicographically (algo-10 before algo-2, as SageMaker documents), the master is the first host of the
distribution groups, and a node's rank is its index among them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from smimg_entrypoint import contract
from smimg_entrypoint.cluster import Cluster, Paths, group_hosts
from smimg_entrypoint.hyperparameters import Hyperparameters, to_args
from smimg_entrypoint.settings import PlanError, Settings

# EFA instances whose device can RDMA-read (sagemaker-training's SM_EFA_RDMA_INSTANCES and SDK v3's list). On any
# other EFA instance (ml.g5.48xlarge, ml.g4dn.8/12/16xlarge, ml.p3dn.24xlarge) libfabric aborts when
# FI_EFA_USE_DEVICE_RDMA=1 is set; left unset, it uses what the device supports.
EFA_RDMA_READ_TYPES = frozenset(
    {
        "ml.p4d.24xlarge",
        "ml.p4de.24xlarge",
        "ml.p5.48xlarge",
        "ml.p5e.48xlarge",
        "ml.trn1.32xlarge",
        "ml.p6e-gb200.36xlarge",
    }
)
COMMAND_LAUNCHER = "command"  # a shell script entry point, run as a program
SDK_PARAMETERS = frozenset(contract.SDK_HYPERPARAMETERS)
MAX_ARG_STRLEN = 131072  # Linux: bytes in one argument or environment string, its closing NUL included
HYPERPARAMETER_LIMIT = 2500  # SageMaker's CreateTrainingJob: characters in one hyperparameter value


@dataclass(frozen=True)
class Devices:
    """What this node has: GPUs, Neuron cores, CPUs, EFA, network interfaces, and the image's torch and tools."""

    gpus: int = 0
    neuron_cores: int = 0
    cpus: int = 1
    efa: bool = False
    interfaces: tuple[str, ...] = ()
    torch_version: str | None = None
    tools: frozenset[str] = frozenset()  # which of SMDDP_TOOLS are on PATH


SMDDP_TOOLS = ("smddprun", "smddpmprun")  # SM_TRAINING_ENV reports whether they are installed


@dataclass(frozen=True)
class Code:
    """Where the training code is, its entry point, and what must be fetched first."""

    directory: str
    entry_point: str
    fetch_from: str | None = None

    @property
    def is_module(self) -> bool:
        return self.entry_point.startswith("-m ")

    @property
    def is_command(self) -> bool:
        """A shell script or any other non-Python file, which sagemaker-training runs as a program, once per host."""
        return not self.is_module and (self.entry_point.endswith(".sh") or not self.entry_point.endswith(".py"))


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
    peer: float  # a peer's entrypoint silent this long is lost
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
    nproc_source: str
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


def named_groups(reserved: Mapping[str, object]) -> tuple[str, ...] | None:
    """The job's sagemaker_distribution_instance_groups, or None when it names none."""
    given = reserved.get(contract.HP_DISTRIBUTION_GROUPS)
    return tuple(str(g) for g in given) if isinstance(given, list) else None


def plan_topology(
    cluster: Cluster, reserved: Mapping[str, object], host_addresses: Mapping[str, str] | None
) -> Topology:
    """The hosts that train together, in SageMaker's order; the first is the master.

    sagemaker_distribution_instance_groups names them; without it, as sagemaker-training, this host's own instance
    group (so a heterogeneous cluster's CPU-only group never joins the GPU group's NCCL world); a tree without
    instance groups (local mode) is one group of every host.
    """
    named = named_groups(reserved)
    hosts = group_hosts(cluster, named if named is not None else (cluster.current_group,))
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


def reported_groups(cluster: Cluster, reserved: Mapping[str, object], settings: Settings) -> tuple[str, ...]:
    """sagemaker-training's distribution_instance_groups: the named ones, else this host's group when distributing.

    smimg distributes without an SDK flag when the image's launcher spans hosts (torchrun, accelerate), so it reports
    this host's group where the toolkit, running one python per host, reports none.
    """
    named = named_groups(reserved)
    if named is not None:
        return named
    return (cluster.current_group,) if settings.distributes else ()


ACCELERATE_CPU = "ACCELERATE_USE_CPU"


def _launcher(settings: Settings, topology: Topology, code: Code, devices: Devices) -> str:
    if code.is_command:
        # The script is the launcher (it calls torchrun or accelerate itself, from the SM_* and MASTER_* variables),
        # run once per host as sagemaker-training runs it; torchrun would start it once per process.
        return COMMAND_LAUNCHER
    if not topology.distributed:
        return contract.PYTHON_LAUNCHER
    if settings.launcher == contract.ACCELERATE and not devices.gpus and not devices.neuron_cores:
        # accelerate's launcher joins processes only over GPUs: without them (and without mpirun) it starts one
        # process per host, alone, a world of one (measured, accelerate 1.15). Under torchrun the script's
        # Accelerator takes the whole world from torchrun's variables.
        return contract.TORCHRUN
    return settings.launcher


def plan_launch(
    cluster: Cluster,
    hyperparameters: Hyperparameters,
    settings: Settings,
    environ: Mapping[str, str],
    devices: Devices,
    code: Code,
    log_dir: str,
    paths: Paths | None = None,
    defaults: Mapping[str, str] | None = None,
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
        defaults: what the base image's own entrypoint would have set (see ``main.image_defaults``); anything
            smimg or the user sets wins over them.
    """
    paths = paths or Paths()
    topology = plan_topology(cluster, hyperparameters.reserved, settings.host_addresses)
    launcher = _launcher(settings, topology, code, devices)
    nproc, nproc_source = settings.nproc_per_node or devices.gpus or devices.neuron_cores or 1, settings.nproc_source
    if launcher in (COMMAND_LAUNCHER, contract.PYTHON_LAUNCHER):
        nproc, nproc_source = 1, f"the {launcher} launcher, which runs one per host"
    script_args = tuple(to_args(hyperparameters.user, settings.bool_style))
    argv = _launcher_argv(launcher, topology, nproc, settings.master_port, code, log_dir, environ)
    groups = reported_groups(cluster, hyperparameters.reserved, settings)
    env = sm_environment(SmInputs(cluster, hyperparameters, devices, code, paths, groups, script_args, environ))
    env.update(_launch_env(cluster, environ, devices, topology, settings.master_port))
    if settings.launcher == contract.ACCELERATE and launcher == contract.TORCHRUN and ACCELERATE_CPU not in environ:
        env[ACCELERATE_CPU] = "true"  # what accelerate's --cpu sets: without it, Accelerator takes no CPU world
    env = {**{k: v for k, v in (defaults or {}).items() if not environ.get(k)}, **env}
    _check_exec_limits((*argv, *script_args), env, hyperparameters)
    return LaunchPlan(
        launcher=launcher,
        argv=(*argv, *script_args),
        env=env,
        cwd=code.directory,
        hosts=topology.hosts,
        node_rank=topology.node_rank,
        nproc_per_node=nproc,
        nproc_source=nproc_source,
        master_host=topology.master_host,
        master_addr=topology.master_addr,
        master_port=settings.master_port,
        code=code,
        script_args=script_args,
        log_dir=log_dir,
        watch_port=settings.watch_port,
        timeouts=Timeouts(
            rendezvous=settings.rendezvous_timeout,
            peer=settings.peer_timeout,
            stop_grace=settings.stop_grace,
            abort_grace=settings.abort_grace,
        ),
    )


def _launcher_argv(
    launcher: str,
    topology: Topology,
    nproc: int,
    master_port: int,
    code: Code,
    log_dir: str,
    environ: Mapping[str, str],
) -> list[str]:
    if launcher == contract.TORCHRUN:
        return _torchrun_argv(topology, nproc, master_port, code, log_dir)
    if launcher == contract.ACCELERATE:
        return _accelerate_argv(topology, nproc, master_port, code, environ)
    if launcher == COMMAND_LAUNCHER:
        # As sagemaker-training runs it (./script through sh): the kernel reads its #! line, and sh runs a file
        # without one as a shell script; "$@" passes the arguments without a second round of shell parsing.
        return ["/bin/sh", "-c", 'exec "./$0" "$@"', code.entry_point]
    return [contract.PYTHON_LAUNCHER, *_target(code)]


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
        # Per-rank logs let the failure file quote the failing rank's traceback; logs.RankLogs shows them on the
        # console (whole lines with "[default<local rank>]:" first, as --tee would: ranks writing one pipe would
        # split each other's lines) and keeps them from filling the disk.
        "--log-dir",
        log_dir,
        "--redirects",
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


def _accelerate_argv(
    topology: Topology, nproc: int, master_port: int, code: Code, environ: Mapping[str, str]
) -> list[str]:
    processes = nproc * len(topology.hosts)
    target = _target(code)
    precision = environ.get(contract.ACCELERATE_MIXED_PRECISION)
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
        *(["--multi_gpu"] if processes > 1 else []),  # only with GPUs: without them the plan is torchrun's
        *(["--mixed_precision", precision] if precision else []),
        *(["--module", target[1]] if code.is_module else target),
    ]


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
    """NCCL, gloo and EFA settings by capability; a variable the user set is never overwritten."""
    # WARN, as sagemaker-pytorch-training sets it: the DLCs' /etc/nccl.conf says INFO, a line per channel and peer.
    wanted = {"NCCL_DEBUG": "WARN", "NCCL_IB_DISABLE": "1"}
    if cluster.network_interface in devices.interfaces:
        # gloo picks its device from gethostname() and may land on loopback (the DLC's hostname shim is not here).
        wanted["NCCL_SOCKET_IFNAME"] = wanted["GLOO_SOCKET_IFNAME"] = cluster.network_interface
    if devices.efa:
        # RDMAV_FORK_SAFE on every EFA instance, not only the RDMA-read ones as the toolkit does: DataLoader workers
        # fork while memory is registered with the device.
        wanted.update({"FI_PROVIDER": "efa", "RDMAV_FORK_SAFE": "1"})
        if cluster.current_instance_type in EFA_RDMA_READ_TYPES:
            wanted["FI_EFA_USE_DEVICE_RDMA"] = "1"
    return {k: v for k, v in wanted.items() if k not in environ}


def _dumps(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class SmInputs:
    """What the SM_* variables are made of."""

    cluster: Cluster
    hyperparameters: Hyperparameters
    devices: Devices
    code: Code
    paths: Paths
    groups: tuple[str, ...]  # the distribution instance groups, as reported (see ``reported_groups``)
    script_args: tuple[str, ...]
    environ: Mapping[str, str]


def training_env(inputs: SmInputs) -> dict[str, Any]:
    """sagemaker-training's SM_TRAINING_ENV, key for key (its Environment's properties).

    Where smimg differs, on purpose: ``hosts``, ``distribution_hosts`` and the master come sorted (SageMaker's order
    for ``hosts``, which every node computes alike; the toolkit keeps a group's listing order); ``module_dir`` of baked
    code is the image's folder; ``hyperparameters`` and ``additional_framework_parameters`` leave out smimg_*
    settings, which configure the launch and never reach the script.
    """
    cluster, paths, code, devices = inputs.cluster, inputs.paths, inputs.code, inputs.devices
    reserved = inputs.hyperparameters.reserved
    raw_groups = [dict(g) for g in cluster.resource_config.get("instance_groups") or ()]
    current_group_hosts = next(
        (list(g.get("hosts", ())) for g in raw_groups if g.get("instance_group_name") == cluster.current_group), []
    )
    distribution_hosts = list(group_hosts(cluster, inputs.groups)) if inputs.groups or not raw_groups else []
    master = distribution_hosts[0] if distribution_hosts else cluster.hosts[0]
    entry = code.entry_point[3:].strip() if code.is_module else code.entry_point
    mp_parameters = inputs.environ.get("SM_HP_MP_PARAMETERS")
    return {
        "additional_framework_parameters": {
            k: v for k, v in reserved.items() if k.startswith(contract.SAGEMAKER_PREFIX) and k not in SDK_PARAMETERS
        },
        "channel_input_dirs": {name: str(paths.data / name) for name in cluster.channels},
        "current_host": cluster.current_host,
        "current_instance_group": cluster.current_group,
        "current_instance_group_hosts": current_group_hosts,
        "current_instance_type": cluster.current_instance_type,
        "distribution_hosts": distribution_hosts,
        "distribution_instance_groups": list(inputs.groups),
        "framework_module": inputs.environ.get(contract.FRAMEWORK_MODULE_ENV),
        "hosts": list(cluster.hosts),
        "hyperparameters": dict(inputs.hyperparameters.user),
        "input_config_dir": str(paths.config),
        "input_data_config": {k: dict(v) for k, v in cluster.channels.items()},
        "input_dir": str(paths.base / "input"),
        "instance_groups": [str(g.get("instance_group_name")) for g in raw_groups],
        "instance_groups_dict": {str(g.get("instance_group_name")): g for g in raw_groups},
        "is_hetero": len(raw_groups) > 1,
        "is_master": cluster.current_host == master,
        "is_modelparallel_enabled": mp_parameters and mp_parameters != "{}",
        "is_smddpmprun_installed": "smddpmprun" in devices.tools,
        "is_smddprun_installed": "smddprun" in devices.tools,
        "job_name": inputs.environ.get(contract.TRAINING_JOB_NAME_ENV),
        "log_level": reserved.get(contract.HP_LOG_LEVEL, 20),
        "master_hostname": master,
        "model_dir": str(paths.model),
        "module_dir": str(reserved.get(contract.HP_SUBMIT_DIRECTORY) or code.directory),
        "module_name": entry[:-3] if entry.endswith(".py") else entry,
        "network_interface_name": cluster.network_interface,
        "num_cpus": devices.cpus,
        "num_gpus": devices.gpus,
        "num_neurons": devices.neuron_cores,
        "output_data_dir": str(paths.output_data),
        "output_dir": str(paths.output),
        "output_intermediate_dir": str(paths.output / "intermediate"),
        "resource_config": dict(cluster.resource_config),
        "topology": list(cluster.resource_config.get("topology") or ()),
        "user_entry_point": entry,
    }


# SM_<KEY> for these keys of SM_TRAINING_ENV (the toolkit's to_env_vars), under their variable's name.
_EXPORTED = {
    "hosts": "hosts",
    "network_interface_name": "network_interface_name",
    "hyperparameters": "hps",
    "user_entry_point": "user_entry_point",
    "additional_framework_parameters": "framework_params",
    "resource_config": "resource_config",
    "input_data_config": "input_data_config",
    "output_data_dir": "output_data_dir",
    "current_host": "current_host",
    "current_instance_type": "current_instance_type",
    "current_instance_group": "current_instance_group",
    "current_instance_group_hosts": "current_instance_group_hosts",
    "instance_groups": "instance_groups",
    "instance_groups_dict": "instance_groups_dict",
    "distribution_instance_groups": "distribution_instance_groups",
    "is_hetero": "is_hetero",
    "module_name": "module_name",
    "log_level": "log_level",
    "framework_module": "framework_module",
    "input_dir": "input_dir",
    "input_config_dir": "input_config_dir",
    "output_dir": "output_dir",
    "num_cpus": "num_cpus",
    "num_gpus": "num_gpus",
    "num_neurons": "num_neurons",
    "model_dir": "model_dir",
    "module_dir": "module_dir",
    "output_intermediate_dir": "output_intermediate_dir",
}


def _value(value: object) -> str:
    """The toolkit's encoding of a variable: strings verbatim, None empty, anything else compact JSON."""
    if value is None:
        return ""
    return value if isinstance(value, str) else _dumps(value)


def sm_environment(inputs: SmInputs) -> dict[str, str]:
    """The variables sagemaker-training gives the script: SM_*, and the three it sets in its own environment."""
    env_dict = training_env(inputs)
    env = {f"SM_{name.upper()}": _value(env_dict[key]) for key, name in _EXPORTED.items()}
    env["SM_CHANNELS"] = _dumps(sorted(inputs.cluster.channels))
    env["SM_USER_ARGS"] = _dumps(list(inputs.script_args))
    env["SM_TRAINING_ENV"] = _dumps(env_dict)
    if env_dict["topology"]:
        env["SM_TOPOLOGY"] = _dumps(env_dict["topology"])
    for name, path in env_dict["channel_input_dirs"].items():
        env[f"SM_CHANNEL_{name.upper()}"] = path
    for key, value in inputs.hyperparameters.user.items():
        env[f"SM_HP_{key.upper()}"] = _value(value)
    if inputs.devices.torch_version:
        env["SM_DLC_TORCH_VERSION"] = inputs.devices.torch_version
    reserved = inputs.hyperparameters.reserved
    # The toolkit falls back on boto3's session region, which reads AWS_DEFAULT_REGION (not AWS_REGION).
    region = reserved.get(contract.HP_REGION) or inputs.environ.get("AWS_DEFAULT_REGION")
    env.update(
        {
            "CURRENT_HOST": inputs.cluster.current_host,
            "SAGEMAKER_JOB_NAME": str(reserved.get(contract.HP_JOB_NAME, "")),
            "SAGEMAKER_REGION": str(region or ""),
        }
    )
    return env
