from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import pytest

from smimg_entrypoint.cluster import Paths, parse_cluster
from smimg_entrypoint.hyperparameters import parse
from smimg_entrypoint.plan import Code, Devices, LaunchPlan, Timeouts, plan_launch
from smimg_entrypoint.settings import PlanError, Settings

DEFAULTS = Settings(
    launcher="torchrun",
    bool_style="value",
    master_port=7777,
    nproc_per_node=None,
    nproc_source="the devices",
    distributes=True,
    code_dir=None,
    entry_point=None,
    watch_port=7778,
    stop_grace=110.0,
    abort_grace=15.0,
    rendezvous_timeout=600.0,
    peer_timeout=120.0,
    dns_timeout=900.0,
    host_addresses=None,
)
ENVIRON = {
    "SMIMG_LAUNCHER": "python",
    "SMIMG_BOOL_STYLE": "flag",
    "SMIMG_MASTER_PORT": "8000",
    "SMIMG_NPROC_PER_NODE": "4",
    "SMIMG_CODE_DIR": "/opt/smimg/code",
    "SMIMG_ENTRY_POINT": "-m pkg.train",
    "SMIMG_WATCH_PORT": "8100",
    "SMIMG_STOP_GRACE": "100",
    "SMIMG_ABORT_GRACE": "5",
    "SMIMG_RENDEZVOUS_TIMEOUT": "60",
    "SMIMG_PEER_TIMEOUT": "30.5",
    "SMIMG_DNS_TIMEOUT": "90",
    "SMIMG_HOST_ADDRESSES": json.dumps({"algo-1": "127.0.0.1"}),
}


def test_defaults_when_nothing_is_set() -> None:
    assert Settings.load({}, {}) == DEFAULTS


def test_variables_over_defaults() -> None:
    assert Settings.load({}, ENVIRON) == Settings(
        launcher="python",
        bool_style="flag",
        master_port=8000,
        nproc_per_node=4,
        nproc_source="SMIMG_NPROC_PER_NODE",
        distributes=False,
        code_dir="/opt/smimg/code",
        entry_point="-m pkg.train",
        watch_port=8100,
        stop_grace=100.0,
        abort_grace=5.0,
        rendezvous_timeout=60.0,
        peer_timeout=30.5,
        dns_timeout=90.0,
        host_addresses={"algo-1": "127.0.0.1"},
    )


def test_hyperparameters_over_variables() -> None:
    # Decoded as the SDK encodes them: numbers arrive as numbers.
    reserved = {"smimg_launcher": "accelerate", "smimg_bool_style": "value", "smimg_master_port": 9000}
    environ = {k: v for k, v in ENVIRON.items() if k != "SMIMG_WATCH_PORT"}
    loaded = Settings.load({**reserved, "smimg_nproc_per_node": 2}, environ)
    assert loaded == replace(
        Settings.load({}, environ),
        launcher="accelerate",
        bool_style="value",
        master_port=9000,
        nproc_per_node=2,
        nproc_source="smimg_nproc_per_node",
        distributes=True,
        watch_port=9001,  # follows the master port that won
    )


def test_empty_values_count_as_unset() -> None:
    environ = {"SMIMG_MASTER_PORT": "", "SMIMG_STOP_GRACE": "", "SMIMG_HOST_ADDRESSES": "", "SMIMG_LAUNCHER": "python"}
    assert Settings.load({"smimg_launcher": ""}, environ) == replace(DEFAULTS, launcher="python", distributes=False)


@pytest.mark.parametrize("enabled", [True, "true"])
def test_torch_distributed_forces_torchrun(enabled: object) -> None:
    reserved = {"sagemaker_torch_distributed_enabled": enabled, "smimg_launcher": "accelerate"}
    assert Settings.load(reserved, {"SMIMG_LAUNCHER": "python"}).launcher == "torchrun"


def test_unsupported_distribution_is_refused() -> None:
    with pytest.raises(PlanError, match=re.escape("MPI (mpirun) (sagemaker_mpi_enabled)")):
        Settings.load({"sagemaker_mpi_enabled": True, "sagemaker_torch_distributed_enabled": True}, {})


def test_mixed_distribution_flags_choose_as_the_pytorch_toolkit_does() -> None:
    # SDK v2 sends both for distribution={"torch_distributed": ..., "smdistributed": {"dataparallel": ...}}:
    # sagemaker-pytorch-training tests torch_distributed first and runs torchrun.
    both = {"sagemaker_torch_distributed_enabled": True, "sagemaker_distributed_dataparallel_enabled": True}
    assert Settings.load(both, {"SMIMG_LAUNCHER": "python"}).launcher == "torchrun"
    with pytest.raises(PlanError, match="pytorchddp"):
        Settings.load({**both, "sagemaker_pytorch_ddp_enabled": True}, {})


@pytest.mark.parametrize(
    ("reserved", "environ", "sdk", "expected"),
    [
        # The job's own settings before the image's default, smimg's before the SDK's; the devices last.
        ({"smimg_nproc_per_node": 3, "sagemaker_mpi_num_of_processes_per_host": 2}, {"SMIMG_NPROC_PER_NODE": "4"}, 5,
         (3, "smimg_nproc_per_node")),
        ({"sagemaker_mpi_num_of_processes_per_host": 2}, {"SMIMG_NPROC_PER_NODE": "4"}, 5,
         (2, "sagemaker_mpi_num_of_processes_per_host")),
        ({}, {"SMIMG_NPROC_PER_NODE": "4"}, 5, (5, "input/data/sm_drivers/distributed.json")),
        ({}, {"SMIMG_NPROC_PER_NODE": "4"}, None, (4, "SMIMG_NPROC_PER_NODE")),
        ({}, {}, None, (None, "the devices")),
    ],
)  # fmt: skip
def test_processes_per_host_precedence(
    reserved: dict[str, object], environ: dict[str, str], sdk: int | None, expected: tuple[int | None, str]
) -> None:
    settings = Settings.load(reserved, environ, sdk)
    assert (settings.nproc_per_node, settings.nproc_source) == expected


def test_a_bad_value_names_the_setting_and_the_fix() -> None:
    with pytest.raises(PlanError) as raised:
        Settings.load({}, {"SMIMG_MASTER_PORT": "77x"})
    assert str(raised.value) == (
        "SMIMG_MASTER_PORT must be a whole number, not '77x': set one, or remove it to use the default"
    )


@pytest.mark.parametrize(
    ("reserved", "environ", "message"),
    [
        ({"smimg_master_port": "http"}, {"SMIMG_MASTER_PORT": "8000"}, "smimg_master_port must be a whole number"),
        ({"smimg_nproc_per_node": [2]}, {}, "smimg_nproc_per_node must be a whole number, not [2]"),
        ({}, {"SMIMG_NPROC_PER_NODE": "0"}, "SMIMG_NPROC_PER_NODE must be at least 1, not 0"),
        ({"sagemaker_mpi_num_of_processes_per_host": "two"}, {}, "sagemaker_mpi_num_of_processes_per_host must be a"),
        ({"smimg_launcher": "deepspeed"}, {}, "smimg_launcher must be one of torchrun, accelerate, python"),
        ({}, {"SMIMG_BOOL_STYLE": "store_true"}, "SMIMG_BOOL_STYLE must be one of value, flag, not 'store_true'"),
        ({}, {"SMIMG_WATCH_PORT": "x"}, "SMIMG_WATCH_PORT must be a whole number"),
        ({}, {"SMIMG_STOP_GRACE": "2m"}, "SMIMG_STOP_GRACE must be a number of seconds above 0, not '2m'"),
        ({}, {"SMIMG_PEER_TIMEOUT": "0"}, "SMIMG_PEER_TIMEOUT must be a number of seconds above 0, not '0'"),
        ({}, {"SMIMG_PEER_TIMEOUT": "nan"}, "SMIMG_PEER_TIMEOUT must be a number of seconds above 0, not 'nan'"),
        ({"smimg_master_port": 65535}, {}, "SMIMG_WATCH_PORT must be a TCP port (1 to 65535), not 65536"),
        ({}, {"SMIMG_WATCH_PORT": "7777"}, "SMIMG_WATCH_PORT is 7777, the master port"),
        ({"smimg_nproc_per_node": 2.5}, {}, "smimg_nproc_per_node must be a whole number, not 2.5"),
        ({}, {"SMIMG_HOST_ADDRESSES": "algo-1=127.0.0.1"}, "SMIMG_HOST_ADDRESSES must be a JSON object"),
        ({}, {"SMIMG_HOST_ADDRESSES": '["algo-1"]'}, "SMIMG_HOST_ADDRESSES must be a JSON object"),
    ],
)
def test_bad_values_are_plan_errors(reserved: dict[str, object], environ: dict[str, str], message: str) -> None:
    with pytest.raises(PlanError, match=re.escape(message)):
        Settings.load(reserved, environ)


def test_the_plan_carries_the_log_dir_the_watch_port_and_the_timeouts() -> None:
    job = parse_cluster({"current_host": "algo-2", "hosts": ["algo-2", "algo-1"]}, {"epochs": "3"}, {})
    hyperparameters = parse(job.hyperparameters)
    environ = {"SMIMG_ABORT_GRACE": "5", "SMIMG_HOST_ADDRESSES": json.dumps({"algo-1": "10.0.0.1"})}
    settings = Settings.load(hyperparameters.reserved, environ)
    code = Code("/opt/smimg/code", "train.py")
    plan = plan_launch(job, hyperparameters, settings, environ, Devices(gpus=2), code, "/tmp/logs", Paths(Path("/ml")))
    argv = (
        "torchrun", "--log-dir", "/tmp/logs", "--redirects", "3",
        "--nnodes", "2", "--nproc_per_node", "2", "--node_rank", "1",
        "--master_addr", "10.0.0.1", "--master_port", "7777", "train.py", "--epochs", "3",
    )  # fmt: skip
    assert replace(plan, env={}) == LaunchPlan(
        launcher="torchrun",
        argv=argv,
        env={},
        cwd="/opt/smimg/code",
        hosts=("algo-1", "algo-2"),
        node_rank=1,
        nproc_per_node=2,
        nproc_source="the devices",
        master_host="algo-1",
        master_addr="10.0.0.1",
        master_port=7777,
        code=code,
        script_args=("--epochs", "3"),
        log_dir="/tmp/logs",
        watch_port=7778,
        timeouts=Timeouts(rendezvous=600.0, peer=120.0, stop_grace=110.0, abort_grace=5.0),
    )


@pytest.mark.parametrize("launcher", ["accelerate", "python"])
def test_only_torchrun_writes_per_rank_logs(launcher: str) -> None:
    job = parse_cluster({"current_host": "algo-1", "hosts": ["algo-1"]}, {}, {})
    settings = replace(DEFAULTS, launcher=launcher)
    plan = plan_launch(
        job, parse({}), settings, {}, Devices(gpus=1), Code("/c", "t.py"), "/tmp/logs", Paths(Path("/ml"))
    )
    assert "--log-dir" not in plan.argv and "--redirects" not in plan.argv
