from __future__ import annotations

import json
from pathlib import Path

import pytest

from smimg_entrypoint.cluster import Paths, parse_cluster
from smimg_entrypoint.hyperparameters import decode, split, to_args
from smimg_entrypoint.plan import Code, Devices, PlanError, choose_code, plan_launch

PATHS = Paths(Path("/opt/ml"))
CODE = Code("/opt/smimg/code", "train.py")


def cluster(current: str, hosts: list[str], hps: dict[str, str] | None = None, **extra: object):  # type: ignore[no-untyped-def]
    resource = {"current_host": current, "hosts": hosts, **extra}
    return parse_cluster(resource, hps or {}, {"train": {"TrainingInputMode": "File"}})


def test_one_cpu_node_missing_optional_fields() -> None:
    plan = plan_launch(cluster("algo-1", ["algo-1"]), {}, Devices(cpus=2), CODE, PATHS)
    assert plan.argv == (
        "torchrun", "--nnodes", "1", "--nproc_per_node", "1", "--node_rank", "0",
        "--master_addr", "algo-1", "--master_port", "7777", "train.py",
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
    plan = plan_launch(cluster("algo-2", ["algo-2", "algo-1"]), {}, devices, CODE, PATHS)
    assert plan.argv[:11] == (
        "torchrun", "--nnodes", "2", "--nproc_per_node", "8", "--node_rank", "1",
        "--master_addr", "algo-1", "--master_port", "7777",
    )  # fmt: skip
    assert plan.env["NCCL_SOCKET_IFNAME"] == "eth0"
    assert plan.env["SM_CURRENT_HOST_RANK"] == "1"
    # A variable the user set is never overwritten.
    assert (
        "NCCL_SOCKET_IFNAME"
        not in plan_launch(
            cluster("algo-2", ["algo-1", "algo-2"]), {"NCCL_SOCKET_IFNAME": "ens5"}, devices, CODE, PATHS
        ).env
    )


def test_twelve_hosts_sort_lexicographically_and_agree_on_ranks() -> None:
    hosts = [f"algo-{i}" for i in range(1, 13)]
    ranks = {h: plan_launch(cluster(h, list(reversed(hosts))), {}, Devices(), CODE, PATHS).node_rank for h in hosts}
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
    gpu = plan_launch(
        cluster("algo-3", ["algo-1", "algo-2", "algo-3"], hps, instance_groups=groups, current_group_name="gpu"),
        {}, Devices(gpus=8), CODE, PATHS,
    )  # fmt: skip
    assert gpu.hosts == ("algo-2", "algo-3")
    assert (gpu.master_host, gpu.node_rank, gpu.launcher) == ("algo-2", 1, "torchrun")
    cpu = plan_launch(
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
    assert to_args(user, "flag") == [
        "--do_train", "--epochs", "3", "--layers", "[1, 2]", "--model", "gpt2",
        "--note", "two words; rm -rf / 'quoted' \"double\"",
    ]  # fmt: skip


def test_bool_style_and_launcher_are_chosen_per_job() -> None:
    hps = {"fp16": "true", "smimg_bool_style": '"flag"', "smimg_launcher": '"accelerate"', "smimg_nproc_per_node": "2"}
    plan = plan_launch(cluster("algo-1", ["algo-1", "algo-2"], hps), {}, Devices(), CODE, PATHS)
    assert plan.argv == (
        "accelerate", "launch", "--num_machines", "2", "--num_processes", "4", "--machine_rank", "0",
        "--main_process_ip", "algo-1", "--main_process_port", "7777", "--cpu", "train.py", "--fp16",
    )  # fmt: skip


def test_sdk_torch_distributed_and_unsupported_modes() -> None:
    sdk = {"sagemaker_torch_distributed_enabled": "true"}
    assert plan_launch(cluster("algo-1", ["algo-1"], sdk), {"SMIMG_LAUNCHER": "python"}, Devices(), CODE).launcher == (
        "torchrun"
    )
    with pytest.raises(PlanError, match="MPI"):
        plan_launch(cluster("algo-1", ["algo-1"], {"sagemaker_mpi_enabled": "true"}), {}, Devices(), CODE)


def test_efa_variables_only_with_efa_devices() -> None:
    with_efa = plan_launch(cluster("algo-1", ["algo-1"]), {"FI_PROVIDER": "tcp"}, Devices(efa=True), CODE)
    assert with_efa.env["FI_EFA_USE_DEVICE_RDMA"] == "1"
    assert "FI_PROVIDER" not in with_efa.env
    assert "FI_EFA_USE_DEVICE_RDMA" not in plan_launch(cluster("algo-1", ["algo-1"]), {}, Devices(), CODE).env


def test_code_comes_from_script_mode_opt_ml_code_or_the_image() -> None:
    env = {"SMIMG_CODE_DIR": "/opt/smimg/code", "SMIMG_ENTRY_POINT": "train.py"}
    assert choose_code({}, env, PATHS, False) == Code("/opt/smimg/code", "train.py")
    s3 = {"sagemaker_program": "t.py", "sagemaker_submit_directory": "s3://b/k/sourcedir.tar.gz"}
    assert choose_code(s3, env, PATHS, False) == Code("/opt/ml/code", "t.py", "s3://b/k/sourcedir.tar.gz")
    # Code already in /opt/ml/code (SDK local mode mounts it there) wins over a download.
    assert choose_code(s3, env, PATHS, True) == Code("/opt/ml/code", "t.py")
    with pytest.raises(PlanError, match="no training code"):
        choose_code({}, {}, PATHS, False)
