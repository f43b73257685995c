"""The stand-in's own toolkit (sagemaker-training's `train`) and smimg's entrypoint on the same /opt/ml trees.

Every SM_* variable and every SM_TRAINING_ENV key is compared: equal, or different for a reason given here (and in
README's entrypoint table). The toolkit runs the job for real; smimg prints its plan (`train --dry-run`), and runs
one tree for real to show the script sees what the plan says.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.docker

DUMP = r"""
import json, os, sys
json.dump({"argv": sys.argv[1:], "env": dict(os.environ)}, open(os.environ["DUMP"], "w"))
"""
SCRIPT_MODE = {
    "sagemaker_program": '"dump.py"',
    "sagemaker_submit_directory": '"/opt/ml/code"',
    "sagemaker_container_log_level": "20",
    "sagemaker_job_name": '"job-1"',
    "sagemaker_region": '"us-east-1"',
    "lr": "0.1",
    "epochs": "3",
    "name": '"x y"',
    "flag": "true",
}
TORCH_DISTRIBUTED = {"sagemaker_torch_distributed_enabled": "true"}
GROUPS = [
    {"instance_group_name": "cpu", "instance_type": "ml.c5.xlarge", "hosts": ["algo-1"]},
    {"instance_group_name": "gpu", "instance_type": "ml.g5.12xlarge", "hosts": ["algo-2", "algo-3"]},
]
# Keys (variables, and SM_TRAINING_ENV.<key>) smimg adds, with the reason.
SMIMG_ONLY = {
    "SM_MASTER_ADDR": "the rendezvous of the world smimg launches (SDK v3's drivers export the same names)",
    "SM_MASTER_PORT": "as SM_MASTER_ADDR",
    "SM_HOST_COUNT": "as SM_MASTER_ADDR",
    "SM_CURRENT_HOST_RANK": "as SM_MASTER_ADDR",
}
# Keys whose values differ on purpose, with the reason.
DISTRIBUTES_BY_DEFAULT = (
    "smimg's image launcher (torchrun) distributes without an SDK flag; the toolkit runs one python per host and "
    "reports no distribution group"
)


def scenario(
    hosts: list[str], current: str, hps: dict[str, str], groups: list[dict[str, Any]] | None = None, **extra: Any
) -> dict[str, Any]:
    resource: dict[str, Any] = {"current_host": current, "hosts": hosts, **extra}
    if groups is not None:
        resource["instance_groups"] = groups
        resource["current_group_name"] = next(g["instance_group_name"] for g in groups if current in g["hosts"])
        resource["current_instance_type"] = next(g["instance_type"] for g in groups if current in g["hosts"])
    return {"resource": resource, "hyperparameters": {**SCRIPT_MODE, **hps}}


SCENARIOS: dict[str, tuple[dict[str, Any], dict[str, str], dict[str, str]]] = {
    # name: (tree, container variables, {key that differs: why})
    "one host, SDK local mode's tree, the image's torchrun": (
        scenario(["algo-1"], "algo-1", {}),
        {},
        dict.fromkeys(("SM_DISTRIBUTION_INSTANCE_GROUPS", "distribution_instance_groups"), DISTRIBUTES_BY_DEFAULT),
    ),
    "second of two hosts, SageMaker's tree, one python per host": (
        scenario(["algo-1", "algo-2"], "algo-2", {}, [{**GROUPS[1], "instance_group_name": "homogeneousCluster",
                                                       "hosts": ["algo-1", "algo-2"]}], network_interface_name="eth0"),
        {"SMIMG_LAUNCHER": "python"},
        {},
    ),
    "torch_distributed on one host": (scenario(["algo-1"], "algo-1", TORCH_DISTRIBUTED), {}, {}),
    "heterogeneous, no groups named: the CPU host's own group": (
        scenario(["algo-1", "algo-2", "algo-3"], "algo-1", TORCH_DISTRIBUTED, GROUPS), {}, {}
    ),
    "heterogeneous, the GPU group named: the CPU host runs alone": (
        scenario(
            ["algo-1", "algo-2", "algo-3"], "algo-1",
            {**TORCH_DISTRIBUTED, "sagemaker_distribution_instance_groups": '["gpu"]'}, GROUPS,
        ),
        {},
        {},
    ),
    "odd hyperparameters, a script in a sub-folder, the region from the environment": (
        {
            "resource": {"current_host": "algo-1", "hosts": ["algo-1"]},
            "hyperparameters": {
                **{k: v for k, v in SCRIPT_MODE.items() if k != "sagemaker_region"},
                "sagemaker_program": '"sub/dump.py"',
                "k": "3", "cfg": '{"b": "x", "a": [1]}', "names": '["a", "b"]', "none": "null",
            },
        },
        {"SMIMG_LAUNCHER": "python", "AWS_DEFAULT_REGION": "eu-west-1", "AWS_REGION": "eu-central-1"},
        {},
    ),
}  # fmt: skip


@pytest.fixture(scope="module")
def image(job_image: str) -> str:
    return job_image


def write_tree(root: Path, tree: dict[str, Any]) -> Path:
    config = root / "input" / "config"
    config.mkdir(parents=True)
    (config / "resourceconfig.json").write_text(json.dumps(tree["resource"]))
    (config / "hyperparameters.json").write_text(json.dumps(tree["hyperparameters"]))
    channels = {
        "train": {"ContentType": "text/csv", "TrainingInputMode": "File", "S3DistributionType": "FullyReplicated"}
    }
    (config / "inputdataconfig.json").write_text(json.dumps(channels))
    (root / "input" / "data" / "train").mkdir(parents=True)
    (root / "code" / "sub").mkdir(parents=True)
    (root / "code" / "dump.py").write_text(DUMP)
    (root / "code" / "sub" / "dump.py").write_text(DUMP)
    for folder in ("model", "output/data"):
        (root / folder).mkdir(parents=True)
    return root


def run_both(image: str, root: Path, tree: dict[str, Any], variables: dict[str, str], real: bool) -> dict[str, Any]:
    """The toolkit's job for real, then smimg's plan (and, if ``real``, smimg's job) in one container."""
    hosts = tree["resource"]["hosts"]
    argv = ["docker", "run", "--rm", "--hostname", tree["resource"]["current_host"], "-v", f"{root}:/opt/ml"]
    argv += [f"--add-host={host}:127.0.0.1" for host in hosts]
    for key, value in {"TRAINING_JOB_NAME": "job-1", "SMIMG_NPROC_PER_NODE": "", **variables}.items():
        argv += ["-e", f"{key}={value}"]
    script = (
        "DUMP=/opt/ml/output/data/toolkit.json train >/tmp/toolkit.log 2>&1 || { cat /tmp/toolkit.log; exit 3; }; "
        "rm -f /opt/ml/output/success; "
        "smimg-train train --dry-run >/opt/ml/output/data/plan.json || exit 4; "
        + ("DUMP=/opt/ml/output/data/smimg.json smimg-train train" if real else "true")
    )
    proc = subprocess.run(
        [*argv, "--entrypoint", "bash", image, "-c", script], capture_output=True, text=True, timeout=180
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = root / "output" / "data"
    toolkit = json.loads((data / "toolkit.json").read_text())
    plan = json.loads((data / "plan.json").read_text())
    smimg = json.loads((data / "smimg.json").read_text()) if real else None
    return {"toolkit": toolkit, "plan": plan, "smimg": smimg, "success": (root / "output" / "success").exists()}


def differences(toolkit_env: dict[str, str], smimg_env: dict[str, str]) -> dict[str, tuple[Any, Any]]:
    keys = {k for k in (*toolkit_env, *smimg_env) if k.startswith("SM_") and k != "SM_TRAINING_ENV"}
    found = {k: (toolkit_env.get(k), smimg_env.get(k)) for k in keys if toolkit_env.get(k) != smimg_env.get(k)}
    theirs, ours = json.loads(toolkit_env["SM_TRAINING_ENV"]), json.loads(smimg_env["SM_TRAINING_ENV"])
    found.update({k: (theirs.get(k), ours.get(k)) for k in {*theirs, *ours} if theirs.get(k) != ours.get(k)})
    return found


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_smimg_gives_the_script_what_the_toolkit_gives_it(image: str, tmp_path: Path, name: str) -> None:
    tree, variables, allowed = SCENARIOS[name]
    real = name == next(iter(SCENARIOS))
    result = run_both(image, write_tree(tmp_path / "ml", tree), tree, variables, real)
    toolkit_env = result["toolkit"]["env"]
    smimg_env = {**{k: v for k, v in toolkit_env.items() if not k.startswith("SM_")}, **result["plan"]["env"]}
    found = differences(toolkit_env, smimg_env)
    unexplained = {k: v for k, v in found.items() if k not in allowed and k not in SMIMG_ONLY}
    assert unexplained == {}, json.dumps(unexplained, indent=1)
    assert set(found) >= set(allowed), "a difference listed here no longer exists: remove it"
    assert result["plan"]["script_args"] == result["toolkit"]["argv"]
    for key in ("CURRENT_HOST", "SAGEMAKER_JOB_NAME", "SAGEMAKER_REGION"):
        assert smimg_env[key] == toolkit_env[key], key
    if real:
        ran = result["smimg"]
        assert {k: v for k, v in ran["env"].items() if k.startswith("SM_")} == {
            k: v for k, v in result["plan"]["env"].items() if k.startswith("SM_")
        }
        assert ran["argv"] == result["toolkit"]["argv"] and result["success"]
