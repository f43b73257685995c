"""--accelerate-config: accelerate's SageMaker config read as a launch, its values under the command's flags."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from smimg import cloud
from smimg.errors import LaunchError
from tests.conftest import smimg_cli

ECR = "123456789012.dkr.ecr.us-east-1.amazonaws.com"
ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"
CONFIG = f"""\
base_job_name: bert-ft
compute_environment: AMAZON_SAGEMAKER
debug: false
distributed_type: DATA_PARALLEL
ec2_instance_type: ml.p4d.24xlarge
enable_cpu_affinity: false
gpu_ids: all
iam_role_name: {ROLE}
mixed_precision: bf16
num_machines: 2
py_version: py38
pytorch_version: 1.10.2
region: us-east-1
sagemaker_inputs_file: inputs.tsv
transformers_version: 4.17.0
use_cpu: false
additional_args:
  use_spot_instances: true
  max_run: 3600
  max_wait: 7200
  output_path: s3://bucket/out
  checkpoint_s3_uri: s3://bucket/ckpt
  environment: {{WANDB_MODE: offline}}
  tags: [{{Key: team, Value: nlp}}]
"""


def test_the_config_becomes_the_job_under_the_commands_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "accelerate.yaml").write_text(CONFIG)
    (tmp_path / "inputs.tsv").write_text("channel_name\tdata_location\ntrain\ts3://bucket/train\n")
    (tmp_path / "train.py").write_text("")
    monkeypatch.chdir(tmp_path)  # accelerate opens the inputs file from the current folder
    cli = smimg_cli(
        "launch", f"{ECR}/bert:1", "--accelerate-config", "accelerate.yaml", "--source-dir", ".",
        "--entry-point", "train.py", "--hp", "lr=3e-5", "-n", "3", "--env", "WANDB_MODE=disabled", "--dry-run",
        "--input", "train=s3://bucket/other", "--role", ROLE,
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    request = json.loads(cli.stdout)
    assert request["TrainingJobName"].startswith("bert-ft-")
    assert request["RoleArn"] == ROLE
    assert request["ResourceConfig"] == {"InstanceType": "ml.p4d.24xlarge", "InstanceCount": 3, "VolumeSizeInGB": 30}
    assert request["Environment"] == {
        "SMIMG_LAUNCHER": "accelerate", "ACCELERATE_MIXED_PRECISION": "bf16", "WANDB_MODE": "disabled",
    }  # fmt: skip
    assert request["StoppingCondition"] == {"MaxRuntimeInSeconds": 3600, "MaxWaitTimeInSeconds": 7200}
    assert request["EnableManagedSpotTraining"] is True
    assert request["CheckpointConfig"]["S3Uri"] == "s3://bucket/ckpt"
    assert request["OutputDataConfig"] == {"S3OutputPath": "s3://bucket/out"}
    # A flag's channel replaces the inputs file's of the same name.
    assert [(c["ChannelName"], c["DataSource"]["S3DataSource"]["S3Uri"]) for c in request["InputDataConfig"]] == [
        ("train", "s3://bucket/other")
    ]
    assert request["Tags"] == [{"Key": "team", "Value": "nlp"}]
    assert request["HyperParameters"]["lr"] == '"3e-5"'  # as typed, as --hp keeps it


def test_distributed_type_no_runs_one_process_per_instance_as_accelerate_does(tmp_path: Path) -> None:
    path = tmp_path / "accelerate.yaml"
    path.write_text(
        "compute_environment: AMAZON_SAGEMAKER\ndistributed_type: 'NO'\nec2_instance_type: ml.g5.12xlarge\n"
    )
    assert ("SMIMG_NPROC_PER_NODE", "1") in cloud.read_accelerate_config(path).env


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("compute_environment: LOCAL_MACHINE", "is not a SageMaker config (compute_environment: LOCAL_MACHINE)"),
        ("distributed_type: MODEL_PARALLEL", "distributed_type MODEL_PARALLEL is not run by accelerate on SageMaker"),
        ("mixed_precision: fp4", "mixed_precision fp4 is not one of no, fp16, bf16, fp8"),
        ("num_gpus: 8", "unknown field num_gpus"),
        ("additional_args: {instance_groups: []}", "additional_args.instance_groups has no `smimg launch` equivalent"),
        ("sagemaker_inputs_file: missing.tsv", "sagemaker_inputs_file missing.tsv: No such file or directory"),
        ("- a list", "holds no fields"),
        ("a: [", "is not YAML or JSON"),
    ],
)
def test_a_config_smimg_cannot_honour_is_named_with_the_field(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: str, message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    base = {"compute_environment": "AMAZON_SAGEMAKER", "distributed_type": "NO", "ec2_instance_type": "ml.g5.xlarge"}
    key = change.split(":")[0]
    lines = [f"{k}: {v}" for k, v in base.items() if k != key]
    path = tmp_path / "accelerate.yaml"
    path.write_text(change if change.startswith(("-", "a:")) else "\n".join([*lines, change]))
    with pytest.raises(LaunchError, match=re.escape(message)):
        cloud.read_accelerate_config(path)
    with pytest.raises(LaunchError, match=r"cannot read --accelerate-config .*absent.yaml: No such file"):
        cloud.read_accelerate_config(tmp_path / "absent.yaml")
