"""plan_launch: a job becomes its CreateTrainingJob request, compared whole; what SageMaker would refuse is refused
before anything is uploaded."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from smimg import cloud
from smimg.errors import LaunchError
from tests.conftest import smimg_cli

ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"
JOB = cloud.CloudJob(
    image="123456789012.dkr.ecr.us-east-1.amazonaws.com/team/bert@sha256:" + "a" * 64,
    role=ROLE,
    output="s3://bucket/out/",
    instance_type="ml.g5.2xlarge",
    name="bert-1",
    instances=2,
    channels=(("train", "s3://bucket/train"),),
    hyperparameters=(("epochs", 3), ("note", "it's $HOME")),
    source_dir=Path("/src"),
    entry_point="train.py",
    env=(("WANDB_MODE", "offline"),),
    max_run=3600,
    checkpoints="s3://bucket/ckpt",
    spot=True,
    tags=(("team", "nlp"),),
)


def test_a_job_becomes_its_create_training_job_request() -> None:
    plan = cloud.plan_launch(JOB)
    assert plan.code_uri == "s3://bucket/out/bert-1/source/sourcedir.tar.gz"
    assert plan.request == {
        "TrainingJobName": "bert-1",
        "AlgorithmSpecification": {"TrainingImage": JOB.image, "TrainingInputMode": "File"},
        "RoleArn": ROLE,
        # JSON-encoded as the SageMaker SDK sends them; script mode's keys point at the uploaded code.
        "HyperParameters": {
            "epochs": "3",
            "note": '"it\'s $HOME"',
            "sagemaker_program": '"train.py"',
            "sagemaker_submit_directory": '"s3://bucket/out/bert-1/source/sourcedir.tar.gz"',
        },
        "OutputDataConfig": {"S3OutputPath": "s3://bucket/out"},
        "ResourceConfig": {"InstanceType": "ml.g5.2xlarge", "InstanceCount": 2, "VolumeSizeInGB": 30},
        # Spot's wait defaults to twice the run: room to wait for capacity and to be interrupted.
        "StoppingCondition": {"MaxRuntimeInSeconds": 3600, "MaxWaitTimeInSeconds": 7200},
        "EnableNetworkIsolation": False,
        "InputDataConfig": [
            {
                "ChannelName": "train",
                "DataSource": {
                    "S3DataSource": {
                        "S3DataType": "S3Prefix",
                        "S3Uri": "s3://bucket/train",
                        "S3DataDistributionType": "FullyReplicated",
                    }
                },
                "InputMode": "File",
            }
        ],
        "Environment": {"WANDB_MODE": "offline"},
        "CheckpointConfig": {"S3Uri": "s3://bucket/ckpt", "LocalPath": "/opt/ml/checkpoints"},
        "EnableManagedSpotTraining": True,
        "Tags": [{"Key": "team", "Value": "nlp"}],
    }


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"role": "SageMakerRole"}, "--role 'SageMakerRole' is not an IAM role ARN"),
        ({"channels": (("train", "/data/train"),)}, "--input train=/data/train is not an S3 URI"),
        ({"output": "bucket/out"}, "--output bucket/out is not an S3 URI"),
        ({"name": "bert_1"}, "SageMaker would refuse this job: 1 validation error detected: Value 'bert_1' at"),
        ({"instances": 0}, "SageMaker would refuse this job"),
        ({"max_wait": 60}, "--max-wait 60 is below --max-run 3600"),
        ({"spot": False, "max_wait": 7200}, "--max-wait is for spot jobs"),
        ({"hyperparameters": tuple((f"k{i}", i) for i in range(101))}, "SageMaker would refuse this job: 1 validation"),
        ({"entry_point": None}, "--source-dir needs --entry-point"),
        ({"image": "team/bert:1"}, "team/bert:1 is not an image in ECR"),
        ({"instance_type": "g5.2xlarge"}, "--instance-type g5.2xlarge is not a SageMaker instance type"),
        ({"network_isolation": True, "channels": (("code", "s3://b/c"),)}, "--input code= is taken"),
        ({"subnets": ("subnet-1a",)}, "--subnets and --security-groups go together"),
        ({"subnets": ("net-1",), "security_groups": ("sg-1",)}, "--subnets 'net-1' is not a subnet-... ID"),
        (
            {"subnets": ("subnet-1",), "security_groups": tuple(f"sg-{i}" for i in range(6))},
            "--security-groups names 6",
        ),
        ({"keep_alive": 600}, "--keep-alive and --spot do not go together"),
        ({"spot": False, "max_wait": None, "keep_alive": 21601}, "SageMaker would refuse this job: 1 validation"),
    ],
)
def test_what_sagemaker_or_smimg_cannot_run_is_refused_before_anything_is_uploaded(
    change: dict[str, object], message: str
) -> None:
    with pytest.raises(LaunchError, match="^" + message.replace("(", r"\(").replace("$", r"\$")):
        cloud.plan_launch(replace(JOB, **change))  # type: ignore[arg-type]


def test_instance_groups_replace_the_instance_type_and_count_and_the_distribution_group_is_the_sdks_hyperparameter(
    tmp_path: Path,
) -> None:
    (tmp_path / "train.py").write_text("")
    common = [
        "launch", JOB.image, "--role", ROLE, "--output", "s3://bucket/out", "--source-dir", str(tmp_path),
        "--entry-point", "train.py", "--job-name", "hetero-1", "--dry-run",
    ]  # fmt: skip
    groups = ["--instance-group", "train=ml.g5.2xlarge:2", "--instance-group", "data=ml.c5.xlarge:1"]
    cli = smimg_cli(*common, *groups, "--distribution-group", "train")
    assert cli.returncode == 0, cli.stderr
    request = json.loads(cli.stdout)
    assert request["ResourceConfig"] == {
        "InstanceGroups": [
            {"InstanceGroupName": "train", "InstanceType": "ml.g5.2xlarge", "InstanceCount": 2},
            {"InstanceGroupName": "data", "InstanceType": "ml.c5.xlarge", "InstanceCount": 1},
        ],
        "VolumeSizeInGB": 30,
    }
    assert request["HyperParameters"]["sagemaker_distribution_instance_groups"] == '["train"]'
    # A channel for one group; under isolation the code channel reaches every group.
    isolated = smimg_cli(
        *common, *groups, "--input", "raw=s3://bucket/raw", "--input-group", "raw=data", "--network-isolation"
    )
    assert isolated.returncode == 0, isolated.stderr
    assert [
        (c["ChannelName"], c["DataSource"]["S3DataSource"]["InstanceGroupNames"])
        for c in json.loads(isolated.stdout)["InputDataConfig"]
    ] == [("raw", ["data"]), ("code", ["train", "data"])]
    for extra, message in (
        (["-n", "2"], "error: instance groups (--instance-group, or the spec's launch.instance_groups) replace"),
        (["--keep-alive", "60"], "error: --keep-alive and --instance-group do not go together"),
        (["--distribution-group", "gpu"], "error: --distribution-group (or launch.distribution_group) gpu is not"),
        (["--instance-group", "eval=c5.xlarge:1"], "error: --instance-group eval=c5.xlarge is not a SageMaker"),
    ):
        refused = smimg_cli(*common, *groups, *extra)
        assert refused.returncode == 1 and refused.stderr.startswith(message), refused.stderr


def test_an_isolated_jobs_code_comes_in_as_a_channel_and_the_cloud_takes_more_hosts_than_this_machine() -> None:
    # No S3 from an isolated container: as the SageMaker SDK does, the code archive is the channel "code".
    request = cloud.plan_launch(replace(JOB, network_isolation=True, instances=40)).request
    assert request["InputDataConfig"][-1]["ChannelName"] == "code"
    assert request["InputDataConfig"][-1]["DataSource"]["S3DataSource"]["S3Uri"] == "s3://bucket/out/bert-1/source/"
    submit = request["HyperParameters"]["sagemaker_submit_directory"]
    assert submit == '"/opt/ml/input/data/code/sourcedir.tar.gz"'
    assert request["EnableNetworkIsolation"] and request["ResourceConfig"]["InstanceCount"] == 40
    warm = cloud.plan_launch(replace(JOB, spot=False, max_wait=None, keep_alive=1800)).request
    assert warm["ResourceConfig"]["KeepAlivePeriodInSeconds"] == 1800
    vpc = cloud.plan_launch(replace(JOB, subnets=("subnet-0a", "subnet-0b"), security_groups=("sg-01",))).request
    assert vpc["VpcConfig"] == {"Subnets": ["subnet-0a", "subnet-0b"], "SecurityGroupIds": ["sg-01"]}


def test_dry_run_prints_the_request_and_calls_no_aws(tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text("print('hi')\n")
    cli = smimg_cli(
        "launch", JOB.image, "--instance-type", "ml.g5.2xlarge", "--role", ROLE, "--output", "s3://bucket/out",
        "--source-dir", str(tmp_path), "--entry-point", "train.py", "--job-name", "bert-1", "--dry-run",
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    request = json.loads(cli.stdout)
    assert (
        request["HyperParameters"]["sagemaker_submit_directory"] == '"s3://bucket/out/bert-1/source/sourcedir.tar.gz"'
    )
    as_option = smimg_cli(
        "launch", "--image", JOB.image, "--instance-type", "ml.g5.2xlarge", "--role", ROLE, "--output", "s3://bucket/o",
        "--dry-run",
    )  # fmt: skip
    assert json.loads(as_option.stdout)["AlgorithmSpecification"]["TrainingImage"] == JOB.image, as_option.stderr
    # Every limit in botocore's service model, before anything is uploaded: the service's words, one line.
    unknown = smimg_cli(
        "launch", JOB.image, "--instance-type", "ml.g5.2xlarge", "--role", ROLE, "--output", "s3://bucket/o",
        "--tag", "cost#center=1", "--tag", f"note={'n' * 257}", "--dry-run",
    )  # fmt: skip
    assert unknown.returncode == 1, unknown.stderr
    assert unknown.stderr.startswith(
        "error: SageMaker would refuse this job: 2 validation errors detected: Value 'cost#center' at "
        "'tags.1.member.key' failed to satisfy constraint: Member must satisfy regular expression pattern: "
    ), unknown.stderr
    assert (
        "at 'tags.2.member.value' failed to satisfy constraint: Member must have length less than or equal to 256"
        in (unknown.stderr)
    )
    two = smimg_cli("launch", JOB.image, "--image", f"{JOB.image}x", "--dry-run")
    assert two.returncode == 1 and "name two images" in two.stderr, two.stderr
    missing = smimg_cli("launch", JOB.image, "--instance-type", "ml.g5.2xlarge", "--output", "s3://b/o", "--dry-run")
    assert missing.returncode == 1 and missing.stderr.startswith("error: no IAM role for the job"), missing.stderr


def test_an_image_in_another_region_is_refused_before_any_aws_call() -> None:
    plan = cloud.plan_launch(JOB)  # the image is in us-east-1
    with pytest.raises(LaunchError, match=r"^the image is in ECR in us-east-1 and the job would run in eu-west-1"):
        cloud.launch(plan, print, region="eu-west-1")
