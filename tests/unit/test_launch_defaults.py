"""The spec's `launch:` section: a project's defaults for its SageMaker jobs, under an accelerate config and the
flags; `--no-spot` and `--no-network-isolation` turn off what a config turns on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from smimg.build.bases import resolve_base
from smimg.build.plan import plan_build
from smimg.engine import Builder, BuilderKind
from smimg.spec import load_spec
from tests.conftest import smimg_cli

IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/bert:1"
SPEC = """\
name: bert
base: {image: "python:3.11"}
launch:
  role: arn:aws:iam::123456789012:role/FromSpec
  instance_type: ml.g5.2xlarge
  instances: 2
  output: s3://bucket/spec-out
  spot: true
  max_run: 3600
  max_wait: 7200
  volume_size: 100
  network_isolation: true
  tags: {team: nlp, cost: a}
"""
ACCELERATE = """\
compute_environment: AMAZON_SAGEMAKER
distributed_type: DATA_PARALLEL
ec2_instance_type: ml.p4d.24xlarge
additional_args:
  tags: [{Key: cost, Value: b}]
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "smimg.yaml").write_text(SPEC)
    (tmp_path / "accelerate.yaml").write_text(ACCELERATE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SMIMG_ROLE", raising=False)
    return tmp_path


def dry_run(*args: str) -> dict[str, Any]:
    cli = smimg_cli("launch", IMAGE, "--region", "us-east-1", "--dry-run", *args)
    assert cli.returncode == 0, cli.stderr
    request: dict[str, Any] = json.loads(cli.stdout)
    return request


def test_the_current_folders_spec_gives_the_jobs_defaults(project: Path) -> None:
    request = dry_run()
    assert request["RoleArn"] == "arn:aws:iam::123456789012:role/FromSpec"
    assert request["ResourceConfig"] == {"InstanceType": "ml.g5.2xlarge", "InstanceCount": 2, "VolumeSizeInGB": 100}
    assert request["OutputDataConfig"] == {"S3OutputPath": "s3://bucket/spec-out"}
    assert request["StoppingCondition"] == {"MaxRuntimeInSeconds": 3600, "MaxWaitTimeInSeconds": 7200}
    assert request["EnableManagedSpotTraining"] is True
    assert request["EnableNetworkIsolation"] is True
    assert request["Tags"] == [{"Key": "team", "Value": "nlp"}, {"Key": "cost", "Value": "a"}]


def test_an_accelerate_config_then_the_environment_then_flags_override_the_spec(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SMIMG_ROLE", "arn:aws:iam::123456789012:role/FromEnv")
    request = dry_run(
        "--accelerate-config", "accelerate.yaml", "-n", "4", "--no-spot", "--no-network-isolation", "--tag", "x=1"
    )
    assert request["RoleArn"] == "arn:aws:iam::123456789012:role/FromEnv"
    assert request["ResourceConfig"] == {"InstanceType": "ml.p4d.24xlarge", "InstanceCount": 4, "VolumeSizeInGB": 100}
    # --no-spot drops the spec's spot wait with its spot; isolation is off.
    assert "EnableManagedSpotTraining" not in request
    assert request["StoppingCondition"] == {"MaxRuntimeInSeconds": 3600}
    assert request["EnableNetworkIsolation"] is False
    assert request["Tags"] == [
        {"Key": "team", "Value": "nlp"},
        {"Key": "cost", "Value": "b"},
        {"Key": "x", "Value": "1"},
    ]
    assert dry_run("--role", "arn:aws:iam::123456789012:role/FromFlag")["RoleArn"].endswith("/FromFlag")
    # A config named on the command line names the role over the environment's.
    (project / "accelerate.yaml").write_text(ACCELERATE + "iam_role_name: arn:aws:iam::123456789012:role/FromConfig\n")
    assert dry_run("--accelerate-config", "accelerate.yaml")["RoleArn"].endswith("/FromConfig")
    both = smimg_cli("launch", IMAGE, "--region", "us-east-1", "--dry-run", "--no-spot", "--max-wait", "60")
    assert both.returncode == 1 and both.stderr.startswith("error: --max-wait is for spot jobs"), both.stderr


def test_a_bad_launch_section_is_named_with_its_field(project: Path) -> None:
    (project / "smimg.yaml").write_text(
        'name: bert\nbase: {image: "python:3.11"}\nlaunch: {instance_type: g5.xlarge, checkpoints: bucket/ckpt}\n'
    )
    cli = smimg_cli("launch", IMAGE, "--region", "us-east-1", "--dry-run")
    assert cli.returncode == 2
    assert "launch.instance_type: 'g5.xlarge' is not a SageMaker instance type (fix: e.g. ml.g5.2xlarge)" in cli.stderr
    assert "launch.checkpoints: 'bucket/ckpt' is not an S3 URI (fix: write s3://bucket/prefix)" in cli.stderr
    assert "Traceback" not in cli.stderr
    # Fields SageMaker refuses together are left to the merged job: a flag may settle them (`--no-spot`), and a
    # build must not fail on how jobs run.
    (project / "smimg.yaml").write_text(
        'name: bert\nbase: {image: "python:3.11"}\nlaunch: {instance_type: ml.m5.xlarge, keep_alive: 60, spot: true, '
        "role: arn:aws:iam::123456789012:role/R, output: s3://bucket/o}\n"
    )
    assert dry_run("--no-spot")["ResourceConfig"]["KeepAlivePeriodInSeconds"] == 60


def test_the_launch_section_is_not_part_of_the_image(project: Path) -> None:
    def labels(text: str) -> dict[str, str]:
        (project / "smimg.yaml").write_text(text)
        loaded = load_spec(project)
        base = resolve_base(loaded.spec.base)
        built = plan_build(
            loaded,
            base_ref=base.ref,
            base_digest=None,
            builder=Builder(BuilderKind.BUILTIN_BUILDKIT, "docker"),
            context_dir=Path("/ctx"),
        )
        return dict(built.labels)

    assert labels(SPEC) == labels(SPEC.replace("FromSpec", "Other").replace("instances: 2", "instances: 8"))


def test_the_specs_instance_groups_give_way_to_an_instance_type_named_above_them(project: Path) -> None:
    (project / "smimg.yaml").write_text(
        SPEC.replace("  instance_type: ml.g5.2xlarge\n  instances: 2\n", "")
        + "  instance_groups: [train=ml.g5.2xlarge:2, data=ml.c5.xlarge:1]\n  distribution_group: train\n"
    )
    request = dry_run()
    assert [g["InstanceGroupName"] for g in request["ResourceConfig"]["InstanceGroups"]] == ["train", "data"]
    assert request["HyperParameters"]["sagemaker_distribution_instance_groups"] == '["train"]'
    flagged = dry_run("--instance-type", "ml.m5.xlarge", "-n", "3")["ResourceConfig"]
    assert (flagged["InstanceType"], flagged["InstanceCount"], "InstanceGroups" in flagged) == (
        "ml.m5.xlarge",
        3,
        False,
    )
    assert dry_run("--accelerate-config", "accelerate.yaml")["ResourceConfig"]["InstanceType"] == "ml.p4d.24xlarge"
    both = smimg_cli("launch", IMAGE, "--region", "us-east-1", "--dry-run", "-n", "2")
    assert both.returncode == 1 and both.stderr.startswith("error: instance groups (--instance-group, or the spec's"), (
        both.stderr
    )
    (project / "smimg.yaml").write_text(SPEC + "  instance_groups: [train=g5:2]\n")
    bad = smimg_cli("launch", IMAGE, "--region", "us-east-1", "--dry-run")
    assert "launch.instance_groups: given with instance_type or instances" in bad.stderr
    assert "launch.instance_groups.0: 'train=g5:2' is not NAME=TYPE:COUNT" in bad.stderr
