from __future__ import annotations

import importlib.metadata
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

from smimg.resources import images_dir
from smimg_entrypoint.cluster import Cluster, Paths, parse_cluster
from smimg_entrypoint.hyperparameters import decode, parse, split, to_args
from smimg_entrypoint.main import image_defaults, installed_version
from smimg_entrypoint.plan import Code, Devices, LaunchPlan, choose_code, plan_launch
from smimg_entrypoint.settings import PlanError, Settings

PATHS = Paths(Path("/opt/ml"))
CODE = Code("/opt/smimg/code", "train.py")
LOG_DIR = "/tmp/smimg-logs-test"


def cluster(current: str, hosts: list[str], hps: dict[str, str] | None = None, **extra: object):  # type: ignore[no-untyped-def]
    resource = {"current_host": current, "hosts": hosts, **extra}
    return parse_cluster(resource, hps or {}, {"train": {"TrainingInputMode": "File"}})


def plan_job(
    job: Cluster, environ: Mapping[str, str], devices: Devices, code: Code, paths: Paths | None = None
) -> LaunchPlan:
    """Plan as the entrypoint does: hyperparameters decoded once, settings loaded once."""
    hyperparameters = parse(job.hyperparameters)
    settings = Settings.load(hyperparameters.reserved, environ)
    return plan_launch(job, hyperparameters, settings, environ, devices, code, LOG_DIR, paths)


def choose(reserved: Mapping[str, object], environ: Mapping[str, str], paths: Paths, code_dir_has_files: bool) -> Code:
    return choose_code(reserved, Settings.load(reserved, environ), environ, paths, code_dir_has_files)


def test_one_cpu_node_missing_optional_fields() -> None:
    plan = plan_job(cluster("algo-1", ["algo-1"]), {}, Devices(cpus=2), CODE, PATHS)
    assert plan.argv == (
        "torchrun", "--log-dir", LOG_DIR, "--redirects", "3", "--nnodes", "1", "--nproc_per_node", "1",
        "--node_rank", "0", "--master_addr", "algo-1", "--master_port", "7777", "train.py",
    )  # fmt: skip
    assert plan.cwd == "/opt/smimg/code"
    assert plan.env["SM_HOSTS"] == '["algo-1"]'
    assert plan.env["SM_CURRENT_INSTANCE_TYPE"] == "local"
    assert plan.env["SM_NETWORK_INTERFACE_NAME"] == "eth0"
    assert plan.env["SM_CHANNEL_TRAIN"] == "/opt/ml/input/data/train"
    assert plan.env["SM_CHANNELS"] == '["train"]'
    assert plan.env["SM_NUM_GPUS"] == "0"
    assert plan.env["SM_MODULE_NAME"] == "train"
    assert (plan.env["MASTER_ADDR"], plan.env["MASTER_PORT"]) == ("algo-1", "7777")
    assert "NCCL_SOCKET_IFNAME" not in plan.env


def test_two_nodes_of_eight_gpus() -> None:
    devices = Devices(gpus=8, cpus=96, interfaces=("eth0", "lo"))
    plan = plan_job(cluster("algo-2", ["algo-2", "algo-1"]), {}, devices, CODE, PATHS)
    assert plan.argv[:15] == (
        "torchrun", "--log-dir", LOG_DIR, "--redirects", "3", "--nnodes", "2", "--nproc_per_node", "8",
        "--node_rank", "1",
        "--master_addr", "algo-1", "--master_port", "7777",
    )  # fmt: skip
    assert plan.env["NCCL_SOCKET_IFNAME"] == "eth0"
    assert plan.env["SM_CURRENT_HOST_RANK"] == "1"
    # A variable the user set is never overwritten.
    assert (
        "NCCL_SOCKET_IFNAME"
        not in plan_job(
            cluster("algo-2", ["algo-1", "algo-2"]), {"NCCL_SOCKET_IFNAME": "ens5"}, devices, CODE, PATHS
        ).env
    )


def test_twelve_hosts_sort_lexicographically_and_agree_on_ranks() -> None:
    hosts = [f"algo-{i}" for i in range(1, 13)]
    ranks = {h: plan_job(cluster(h, list(reversed(hosts))), {}, Devices(), CODE, PATHS).node_rank for h in hosts}
    order = sorted(hosts)
    assert order[:4] == ["algo-1", "algo-10", "algo-11", "algo-12"]
    assert ranks == {h: order.index(h) for h in hosts}
    assert sorted(ranks.values()) == list(range(12))


def test_heterogeneous_groups_pick_the_distribution_group() -> None:
    groups = [
        {"instance_group_name": "cpu", "instance_type": "ml.c5.xlarge", "hosts": ["algo-1"]},
        {"instance_group_name": "gpu", "instance_type": "ml.p4d.24xlarge", "hosts": ["algo-3", "algo-2"]},
    ]
    hps = {"sagemaker_distribution_instance_groups": json.dumps(["gpu"])}
    gpu = plan_job(
        cluster("algo-3", ["algo-1", "algo-2", "algo-3"], hps, instance_groups=groups, current_group_name="gpu"),
        {}, Devices(gpus=8), CODE, PATHS,
    )  # fmt: skip
    assert gpu.hosts == ("algo-2", "algo-3")
    assert (gpu.master_host, gpu.node_rank, gpu.launcher) == ("algo-2", 1, "torchrun")
    cpu = plan_job(
        cluster("algo-1", ["algo-1", "algo-2", "algo-3"], hps, instance_groups=groups, current_group_name="cpu"),
        {}, Devices(), CODE, PATHS,
    )  # fmt: skip
    assert cpu.launcher == "python"
    assert cpu.argv == ("python", "train.py")


def test_hyperparameters_arrive_verbatim_without_a_shell() -> None:
    raw = {
        "model": '"gpt2"',
        "epochs": "3",
        "note": "two words; rm -rf / 'quoted' \"double\"",
        "do_train": "true",
        "skip": "false",
        "layers": "[1, 2]",
        "sagemaker_program": '"train.py"',
        "smimg_launcher": '"torchrun"',
        "_tuning_objective_metric": "loss",
    }
    user, reserved = split(decode(raw))
    assert set(reserved) == {"sagemaker_program", "smimg_launcher", "_tuning_objective_metric"}
    assert to_args(user) == [
        "--do_train", "True", "--epochs", "3", "--layers", "[1, 2]", "--model", "gpt2",
        "--note", "two words; rm -rf / 'quoted' \"double\"", "--skip", "False",
    ]  # fmt: skip
    # As sagemaker-training's mapping.to_cmd_args spells them: one-letter keys, mappings, lists, None.
    odd = {"k": 3, "cfg": {"b": "x", "a": 1}, "names": ["a", "b"], "empty": None}
    assert to_args(odd) == ["--cfg", "a=1,b=x", "--empty", "", "-k", "3", "--names", "['a', 'b']"]
    assert to_args(user, "flag") == [
        "--do_train", "--epochs", "3", "--layers", "[1, 2]", "--model", "gpt2",
        "--note", "two words; rm -rf / 'quoted' \"double\"",
    ]  # fmt: skip


def test_bool_style_and_launcher_are_chosen_per_job() -> None:
    hps = {"fp16": "true", "smimg_bool_style": '"flag"', "smimg_launcher": '"accelerate"', "smimg_nproc_per_node": "2"}
    plan = plan_job(cluster("algo-1", ["algo-1", "algo-2"], hps), {}, Devices(gpus=2), CODE, PATHS)
    assert plan.argv == (
        "accelerate", "launch", "--num_machines", "2", "--num_processes", "4", "--machine_rank", "0",
        "--main_process_ip", "algo-1", "--main_process_port", "7777", "--multi_gpu", "train.py", "--fp16",
    )  # fmt: skip
    # accelerate's launcher sets ACCELERATE_MIXED_PRECISION from its flag (to "no" without one): the job's value
    # goes to it as the flag.
    mixed = plan_job(cluster("algo-1", ["algo-1"], hps), {"ACCELERATE_MIXED_PRECISION": "bf16"}, Devices(gpus=1), CODE)
    assert mixed.argv[-4:] == ("--mixed_precision", "bf16", "train.py", "--fp16")
    # Without GPUs, accelerate's launcher would start one process per host, each alone: torchrun joins them.
    on_cpu = plan_job(cluster("algo-1", ["algo-1", "algo-2"], hps), {}, Devices(), CODE)
    assert on_cpu.launcher == "torchrun" and on_cpu.env["ACCELERATE_USE_CPU"] == "true"  # as accelerate's --cpu
    neuron = plan_job(cluster("algo-1", ["algo-1", "algo-2"], hps), {}, Devices(neuron_cores=2), CODE)
    assert neuron.launcher == "accelerate" and "ACCELERATE_USE_CPU" not in neuron.env


def test_sdk_torch_distributed_and_unsupported_modes() -> None:
    sdk = {"sagemaker_torch_distributed_enabled": "true"}
    assert plan_job(cluster("algo-1", ["algo-1"], sdk), {"SMIMG_LAUNCHER": "python"}, Devices(), CODE).launcher == (
        "torchrun"
    )
    with pytest.raises(PlanError, match="MPI"):
        plan_job(cluster("algo-1", ["algo-1"], {"sagemaker_mpi_enabled": "true"}), {}, Devices(), CODE)


@pytest.mark.parametrize(
    ("instance_type", "efa", "expected"),
    [
        # RDMA read: the device's RDMA is switched on, as sagemaker-training and SDK v3 do.
        ("ml.p4d.24xlarge", True, {"FI_PROVIDER": "efa", "FI_EFA_USE_DEVICE_RDMA": "1", "RDMAV_FORK_SAFE": "1"}),
        # EFA without RDMA read: FI_EFA_USE_DEVICE_RDMA=1 would make libfabric abort.
        ("ml.g5.48xlarge", True, {"FI_PROVIDER": "efa", "RDMAV_FORK_SAFE": "1"}),
        ("ml.g5.12xlarge", False, {}),
    ],
)
def test_efa_variables_follow_the_instance_type(instance_type: str, efa: bool, expected: dict[str, str]) -> None:
    job = cluster("algo-1", ["algo-1"], current_instance_type=instance_type)
    env = plan_job(job, {}, Devices(gpus=8, efa=efa), CODE).env
    assert {k: v for k, v in env.items() if k.startswith(("FI_", "RDMAV_"))} == expected


def test_a_variable_the_user_set_is_never_overwritten() -> None:
    job = cluster("algo-1", ["algo-1"], current_instance_type="ml.p4d.24xlarge")
    environ = {"FI_PROVIDER": "tcp", "NCCL_DEBUG": "INFO", "GLOO_SOCKET_IFNAME": "eth1"}
    env = plan_job(job, environ, Devices(efa=True, interfaces=("eth0", "eth1")), CODE).env
    assert not set(environ) & set(env)
    assert (env["NCCL_SOCKET_IFNAME"], env["FI_EFA_USE_DEVICE_RDMA"]) == ("eth0", "1")


def test_nccl_and_gloo_use_the_interface_sagemaker_names_and_nccl_warns_only() -> None:
    job = cluster("algo-1", ["algo-1", "algo-2"], network_interface_name="eth1")
    env = plan_job(job, {}, Devices(interfaces=("eth0", "eth1", "lo")), CODE).env
    assert (env["NCCL_SOCKET_IFNAME"], env["GLOO_SOCKET_IFNAME"]) == ("eth1", "eth1")
    # The DLCs' /etc/nccl.conf says NCCL_DEBUG=INFO; the variable wins over it, as in the PyTorch toolkit.
    assert (env["NCCL_DEBUG"], env["NCCL_IB_DISABLE"]) == ("WARN", "1")
    missing = plan_job(job, {}, Devices(interfaces=("ens5", "lo")), CODE).env
    assert "NCCL_SOCKET_IFNAME" not in missing and "GLOO_SOCKET_IFNAME" not in missing


def test_the_base_images_defaults_apply_below_everything_else() -> None:
    defaults = {"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True", "OMP_NUM_THREADS": "1", "NCCL_DEBUG": "INFO"}
    job = cluster("algo-1", ["algo-1"])
    hyperparameters = parse(job.hyperparameters)
    environ = {"OMP_NUM_THREADS": "4"}
    settings = Settings.load(hyperparameters.reserved, environ)
    plan = plan_launch(job, hyperparameters, settings, environ, Devices(), CODE, LOG_DIR, PATHS, defaults)
    assert plan.env["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:True"
    assert "OMP_NUM_THREADS" not in plan.env  # the user's 4 stands
    assert plan.env["NCCL_DEBUG"] == "WARN"  # smimg's own setting wins over a default


def test_the_hf_dlcs_defaults_come_from_its_own_script() -> None:
    script = str(images_dir() / "standin-venv" / "hf_optimizations.sh")  # verbatim from the DLC
    path = {"PATH": os.environ["PATH"]}
    assert image_defaults({**path, "TOKENIZERS_PARALLELISM": "true", "OMP_NUM_THREADS": ""}, script) == {
        "PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True",
        "HF_HUB_ENABLE_HF_TRANSFER": "1",
        "OMP_NUM_THREADS": "1",  # empty counts as unset, as in the script
    }
    assert image_defaults({**path, "HF_ENABLE_OPTIMIZATIONS": "0"}, script) == {}
    assert image_defaults(path, "/nonexistent/hf_optimizations.sh") == {}


def test_a_shell_script_entry_point_runs_once_per_host_as_the_toolkit_runs_it() -> None:
    hps = {"epochs": "3", "sagemaker_torch_distributed_enabled": "true"}
    code = Code("/opt/ml/code", "run.sh")
    plan = plan_job(cluster("algo-2", ["algo-1", "algo-2"], hps), {"SMIMG_NPROC_PER_NODE": "4"}, Devices(gpus=8), code)
    assert (plan.launcher, plan.nproc_per_node) == ("command", 1)
    assert plan.nproc_source == "the command launcher, which runs one per host"
    assert plan.argv == ("/bin/sh", "-c", 'exec "./$0" "$@"', "run.sh", "--epochs", "3")
    assert (plan.env["MASTER_ADDR"], plan.env["SM_CURRENT_HOST_RANK"], plan.hosts) == (
        "algo-1",
        "1",
        ("algo-1", "algo-2"),
    )
    assert Code("/c", "train").is_command and not Code("/c", "-m pkg.train").is_command


def test_heterogeneous_groups_without_named_groups_train_in_their_own_group() -> None:
    groups = [
        {"instance_group_name": "cpu", "instance_type": "ml.c5.xlarge", "hosts": ["algo-1"]},
        {"instance_group_name": "gpu", "instance_type": "ml.p4d.24xlarge", "hosts": ["algo-3", "algo-2"]},
    ]
    hosts = ["algo-1", "algo-2", "algo-3"]
    hps = {"sagemaker_torch_distributed_enabled": "true"}
    gpu = plan_job(
        cluster("algo-3", hosts, hps, instance_groups=groups, current_group_name="gpu"), {}, Devices(gpus=8), CODE
    )
    # As sagemaker-training: the world is this host's group, so the CPU host never joins the GPU hosts' NCCL world.
    assert (gpu.hosts, gpu.node_rank, gpu.nproc_per_node) == (("algo-2", "algo-3"), 1, 8)
    env = json.loads(gpu.env["SM_TRAINING_ENV"])
    assert (env["distribution_instance_groups"], env["distribution_hosts"]) == (["gpu"], ["algo-2", "algo-3"])
    assert (env["is_hetero"], env["current_instance_group_hosts"], env["master_hostname"]) == (
        True,
        ["algo-3", "algo-2"],
        "algo-2",
    )
    assert gpu.env["SM_INSTANCE_GROUPS"] == '["cpu","gpu"]'
    cpu = plan_job(cluster("algo-1", hosts, hps, instance_groups=groups, current_group_name="cpu"), {}, Devices(), CODE)
    assert (cpu.hosts, cpu.launcher) == (("algo-1",), "torchrun")


def test_sm_variables_in_the_toolkits_encoding() -> None:
    hps = {
        "lr": "0.1", "name": '"x y"', "flag": "true", "sagemaker_program": '"train.py"',
        "sagemaker_container_log_level": "10", "sagemaker_job_name": '"job-1"', "sagemaker_region": '"eu-west-1"',
        "sagemaker_torch_distributed_enabled": "true", "smimg_bool_style": '"value"',
    }  # fmt: skip
    environ = {"SAGEMAKER_TRAINING_MODULE": "sagemaker_pytorch_container.training:main", "TRAINING_JOB_NAME": "job-1"}
    plan = plan_job(cluster("algo-1", ["algo-1"], hps), environ, Devices(torch_version="2.13.0+cpu"), CODE)
    env = plan.env
    # Only the framework's parameters: the SDK's own (program, region, ...) and smimg's settings are left out.
    assert env["SM_FRAMEWORK_PARAMS"] == '{"sagemaker_torch_distributed_enabled":true}'
    assert (env["SM_HP_FLAG"], env["SM_HP_NAME"], env["SM_HPS"]) == (
        "true",
        "x y",
        '{"flag":true,"lr":0.1,"name":"x y"}',
    )
    assert (env["SM_LOG_LEVEL"], env["SM_IS_HETERO"], env["SM_INSTANCE_GROUPS"]) == ("10", "false", "[]")
    assert env["SM_FRAMEWORK_MODULE"] == "sagemaker_pytorch_container.training:main"
    assert (env["SAGEMAKER_JOB_NAME"], env["SAGEMAKER_REGION"], env["CURRENT_HOST"]) == ("job-1", "eu-west-1", "algo-1")
    assert env["SM_DLC_TORCH_VERSION"] == "2.13.0+cpu"
    training = json.loads(env["SM_TRAINING_ENV"])
    assert len(training) == 37 and training["job_name"] == "job-1" and training["distribution_hosts"] == ["algo-1"]
    # The toolkit's encodings: None as an empty value; the region from boto3's own variable only.
    bare = plan_job(cluster("algo-1", ["algo-1"]), {"AWS_REGION": "eu-west-1"}, Devices(), Code("/c", "sub/t.py")).env
    assert (bare["SM_FRAMEWORK_MODULE"], bare["SM_FRAMEWORK_PARAMS"], bare["SAGEMAKER_REGION"]) == ("", "{}", "")
    assert (bare["SM_MODULE_NAME"], bare["SM_USER_ENTRY_POINT"]) == ("sub/t", "sub/t.py")


def test_code_comes_from_script_mode_opt_ml_code_or_the_image() -> None:
    env = {"SMIMG_CODE_DIR": "/opt/smimg/code", "SMIMG_ENTRY_POINT": "train.py"}
    assert choose({}, env, PATHS, False) == Code("/opt/smimg/code", "train.py")
    s3 = {"sagemaker_program": "t.py", "sagemaker_submit_directory": "s3://b/k/sourcedir.tar.gz"}
    assert choose(s3, env, PATHS, False) == Code("/opt/ml/code", "t.py", "s3://b/k/sourcedir.tar.gz")
    # Code already in /opt/ml/code (SDK local mode mounts it there) wins over a download.
    assert choose(s3, env, PATHS, True) == Code("/opt/ml/code", "t.py")
    with pytest.raises(PlanError, match="no training code"):
        choose({}, {}, PATHS, False)


def test_paths_follow_the_contract() -> None:
    paths = Paths(Path("/ml"))
    assert {
        name: str(getattr(paths, name))
        for name in ("config", "data", "model", "output", "output_data", "failure", "success", "checkpoints", "code")
    } == {
        "config": "/ml/input/config",
        "data": "/ml/input/data",
        "model": "/ml/model",
        "output": "/ml/output",
        "output_data": "/ml/output/data",
        "failure": "/ml/output/failure",
        "success": "/ml/output/success",
        "checkpoints": "/ml/checkpoints",
        "code": "/ml/code",
    }
    assert paths.resource_config == Path("/ml/input/config/resourceconfig.json")


def test_a_packages_version_is_read_from_its_metadata_folder_first_on_the_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert installed_version("torch") == importlib.metadata.version("torch")  # this venv's
    first, second = tmp_path / "a", tmp_path / "b"
    for folder in ("a/torch_tb_profiler-0.4.3.dist-info", "a/torch-2.13.0+cpu.dist-info", "b/torch-1.0.dist-info"):
        (tmp_path / folder).mkdir(parents=True)
    (second / "numpy-1.26.4-py3.10.egg-info").mkdir()
    monkeypatch.setattr(sys, "path", [str(tmp_path / "missing"), str(first), str(second)])
    assert installed_version("torch") == "2.13.0+cpu"
    assert installed_version("numpy") == "1.26.4"
    assert installed_version("transformers") is None
