"""plan_training: a CreateTrainingJob request checked as the API checks it, and planned for a local run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from smimg import local
from smimg.local.job import Verbatim
from smimg.training_api.plan import ApiError, TrainingPlan, plan_training

REQUEST: dict[str, Any] = {
    "TrainingJobName": "bert-1",
    "AlgorithmSpecification": {
        "TrainingImage": "1.dkr.ecr.us-east-1.amazonaws.com/bert:1",
        "TrainingInputMode": "File",
    },
    "RoleArn": "arn:aws:iam::1:role/r",
    "HyperParameters": {
        "sagemaker_program": '"train.py"',
        "sagemaker_submit_directory": '"s3://b/c.tar.gz"',
        "lr": "0.1",
        "name": "plain text",
        "layers": "[1,2]",
    },
    "Environment": {"WANDB_MODE": "offline"},
    "InputDataConfig": [{"ChannelName": "train", "DataSource": {"S3DataSource": {"S3Uri": "s3://b/train"}}}],
    "OutputDataConfig": {"S3OutputPath": "s3://b/out/"},
    "ResourceConfig": {"InstanceType": "ml.g5.2xlarge", "InstanceCount": 2, "VolumeSizeInGB": 50},
    "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
    "CheckpointConfig": {"S3Uri": "s3://b/ckpt"},
}


def test_a_request_becomes_its_plan_with_hyperparameters_verbatim() -> None:
    assert plan_training(REQUEST) == TrainingPlan(
        name="bert-1",
        image="1.dkr.ecr.us-east-1.amazonaws.com/bert:1",
        instances=2,
        instance_type="ml.g5.2xlarge",
        channels=(("train", "s3://b/train"),),
        hyperparameters=(("layers", "[1,2]"), ("lr", "0.1"), ("name", "plain text")),
        program="train.py",
        submit_directory="s3://b/c.tar.gz",
        reserved=(("sagemaker_program", '"train.py"'), ("sagemaker_submit_directory", '"s3://b/c.tar.gz"')),
        env=(("WANDB_MODE", "offline"),),
        output_path="s3://b/out",
        max_run=3600,
        network_isolation=False,
        checkpoint_s3="s3://b/ckpt",
    )


def test_verbatim_values_reach_hyperparameters_json_unchanged() -> None:
    job = local.LocalJob(image="i", hyperparameters=(("layers", Verbatim("[1,2]")), ("name", Verbatim("plain text"))))
    files = dict(local.plan_job(job, Path("/run")).hosts[0].files)
    assert json.loads(files["input/config/hyperparameters.json"]) == {"layers": "[1,2]", "name": "plain text"}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"TrainingJobName": "a_b"}, "Value 'a_b' at 'trainingJobName' failed to satisfy constraint"),
        ({"TrainingJobName": "a" * 64}, "at 'trainingJobName' failed to satisfy constraint"),
        ({"Environment": {"1BAD": "x"}}, "Value '1BAD' at 'environment' failed to satisfy constraint"),
        ({"HyperParameters": {"k": "v" * 2501}}, "Map values must have length less than or equal to 2500"),
        ({"ResourceConfig": {"InstanceType": "ml.m5.xlarge", "InstanceCount": 0}}, "at 'resourceConfig.instanceCount'"),
        ({"StoppingCondition": {"MaxRuntimeInSeconds": 30 * 24 * 3600}}, "stoppingCondition.maxRuntimeInSeconds"),
        ({"AlgorithmSpecification": {"AlgorithmName": "xgboost"}}, "AlgorithmSpecification.TrainingImage is required"),
    ],
)
def test_what_sagemaker_refuses_is_refused_with_its_exception_and_wording(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ApiError) as caught:
        plan_training({**REQUEST, **change})
    assert caught.value.code == "ValidationException" and message in caught.value.message
