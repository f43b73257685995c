"""The host↔image contract, walked end to end with no Docker: the files ``local.plan_job`` writes for a host are
what the entrypoint parses and plans from; hyperparameters and channels arrive exactly."""

from __future__ import annotations

import json
from pathlib import Path

import tomllib

from smimg import local
from smimg_entrypoint import contract
from smimg_entrypoint.cluster import Paths, read_cluster
from smimg_entrypoint.hyperparameters import parse
from smimg_entrypoint.plan import Devices, choose_code, plan_launch
from smimg_entrypoint.settings import Settings

HYPERPARAMETERS = (
    ("epochs", 3),
    ("lr", 0.001),
    ("fp16", True),
    ("note", 'it\'s a "quoted" value; rm -rf / $HOME'),
    ("layers", [1, 2]),
    ("smimg_nproc_per_node", 2),
)


def materialise(plan: local.LocalPlan, host: str, root: Path) -> Paths:
    """What the container sees at /opt/ml: the plan's files and folders for one host."""
    for folder in next(h for h in plan.hosts if h.name == host).dirs:
        (root / folder).mkdir(parents=True, exist_ok=True)
    for relative, content in next(h for h in plan.hosts if h.name == host).files:
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(content)
    return Paths(root)


def test_a_local_job_round_trips_into_the_entrypoints_launch_plan(tmp_path: Path) -> None:
    code = tmp_path / "src"
    code.mkdir()
    (code / "train.py").write_text("")
    job = local.LocalJob(
        image="job:1",
        instances=2,
        channels=(("train", tmp_path / "data"), ("eval", tmp_path / "eval")),
        hyperparameters=HYPERPARAMETERS,
        source_dir=code,
        entry_point="train.py",
        name="round-trip",
    )
    plan = local.plan_job(job, tmp_path / "run")
    paths = materialise(plan, "algo-2", tmp_path / "algo-2")
    cluster = read_cluster(paths)
    hyperparameters = parse(cluster.hyperparameters)
    settings = Settings.load(hyperparameters.reserved, {})
    code_choice = choose_code(hyperparameters.reserved, settings, {}, paths, code_dir_has_files=True)
    launch = plan_launch(cluster, hyperparameters, settings, {}, Devices(cpus=4), code_choice, "/logs", paths)

    assert cluster.hosts == ("algo-1", "algo-2") and cluster.current_host == "algo-2"
    assert hyperparameters.user == {k: v for k, v in HYPERPARAMETERS if not k.startswith("smimg_")}
    assert launch.script_args == (
        "--epochs", "3", "--fp16", "True", "--layers", "[1, 2]", "--lr", "0.001",
        "--note", "it's a \"quoted\" value; rm -rf / $HOME",
    )  # fmt: skip
    assert (launch.node_rank, launch.nproc_per_node, launch.master_host) == (1, 2, "algo-1")
    # Script mode: the SDK's keys point at the mounted /opt/ml/code (here the host's materialised tree).
    assert hyperparameters.reserved[contract.HP_SUBMIT_DIRECTORY] == contract.opt_ml(contract.CODE_DIR)
    assert (code_choice.directory, code_choice.entry_point) == (str(paths.code), "train.py")
    assert json.loads(launch.env["SM_CHANNELS"]) == ["eval", "train"]
    assert launch.env["SM_CHANNEL_TRAIN"] == str(paths.data / "train")
    container = plan.containers[1]
    mounts = {mount.target for mount in container.mounts}
    assert {str(Path(contract.OPT_ML) / contract.DATA_DIR / name) for name in ("train", "eval")} <= mounts
    assert container.command == (contract.TRAIN_COMMAND,)


def test_the_dev_install_and_the_image_agree_on_console_scripts() -> None:
    pyproject = Path(__file__).parents[2] / "entrypoints" / "pyproject.toml"
    assert tomllib.loads(pyproject.read_text())["project"]["scripts"] == contract.CONSOLE_SCRIPTS
