"""`smimg local api`: boto3 launch code, unchanged but for AWS_ENDPOINT_URL, runs real local jobs through it."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SMIMG, local_api_env

pytestmark = pytest.mark.docker

RESUME = Path(__file__).parent.parent / "fixtures" / "resume"
JOB = Path(__file__).parent.parent / "fixtures" / "job"
ECR = "123456789012.dkr.ecr.us-east-1.amazonaws.com"


@pytest.fixture(scope="module")
def endpoint(local_api: str) -> str:
    return local_api


def client(endpoint: str, service: str) -> Any:
    import boto3

    return boto3.client(
        service, endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="a", aws_secret_access_key="b"
    )


def request(name: str, image: str, bucket: str, steps: int, **extra: Any) -> dict[str, Any]:
    repository, tag = image.split(":")
    return {
        "TrainingJobName": name,
        "AlgorithmSpecification": {"TrainingImage": f"{ECR}/{repository}:{tag}", "TrainingInputMode": "File"},
        "RoleArn": "arn:aws:iam::123456789012:role/SageMakerRole",
        # As the SDK sends them: every value JSON-encoded.
        "HyperParameters": {
            "sagemaker_program": '"resume.py"',
            "sagemaker_submit_directory": f'"s3://{bucket}/code/sourcedir.tar.gz"',
            "steps": str(steps),
        },
        "Environment": {"SMIMG_LAUNCHER": "python"},
        "OutputDataConfig": {"S3OutputPath": f"s3://{bucket}/out"},
        "ResourceConfig": {"InstanceType": "ml.m5.xlarge", "InstanceCount": 2, "VolumeSizeInGB": 10},
        "StoppingCondition": {"MaxRuntimeInSeconds": 600},
        **extra,
    }


def upload_code(s3: Any, bucket: str) -> None:
    s3.create_bucket(Bucket=bucket)
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:
        tar.add(RESUME / "resume.py", arcname="resume.py")
    s3.put_object(Bucket=bucket, Key="code/sourcedir.tar.gz", Body=archive.getvalue())


def wait(sm: Any, name: str, until: set[str], timeout: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] = sm.describe_training_job(TrainingJobName=name)
        if job["TrainingJobStatus"] in until or job["SecondaryStatus"] in until:
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.5)


def test_a_boto3_job_runs_here_with_its_lifecycle_logs_and_model_in_s3(endpoint: str, job_image: str) -> None:
    sm, s3, logs = (client(endpoint, service) for service in ("sagemaker", "s3", "logs"))
    upload_code(s3, "launch")
    arn = sm.create_training_job(**request("smimg-api-ok", job_image, "launch", 5))["TrainingJobArn"]
    assert arn == "arn:aws:sagemaker:us-east-1:123456789012:training-job/smimg-api-ok"
    job = wait(sm, "smimg-api-ok", {"Completed", "Failed", "Stopped"})

    assert job["TrainingJobStatus"] == "Completed", job.get("FailureReason")
    statuses = [t["Status"] for t in job["SecondaryStatusTransitions"]]
    assert statuses == ["Starting", "Downloading", "Training", "Uploading", "Completed"]
    assert job["TrainingTimeInSeconds"] >= 1 and job["TrainingEndTime"] >= job["TrainingStartTime"]
    model = job["ModelArtifacts"]["S3ModelArtifacts"]
    assert model == "s3://launch/out/smimg-api-ok/output/model.tar.gz"
    with tarfile.open(fileobj=io.BytesIO(s3.get_object(Bucket="launch", Key=model[12:])["Body"].read())) as tar:
        assert sorted(tar.getnames()) == ["algo-1.json", "algo-2.json"]
    streams = logs.describe_log_streams(logGroupName="/aws/sagemaker/TrainingJobs", logStreamNamePrefix="smimg-api-ok/")
    names = sorted(s["logStreamName"] for s in streams["logStreams"])
    assert [n.rsplit("-", 1)[0] for n in names] == ["smimg-api-ok/algo-1", "smimg-api-ok/algo-2"]
    events = logs.get_log_events(logGroupName="/aws/sagemaker/TrainingJobs", logStreamName=names[1])["events"]
    assert "DONE algo-2 step=5" in [e["message"] for e in events]
    listed = sm.list_training_jobs(NameContains="smimg-api-ok")["TrainingJobSummaries"]  # the server is shared
    assert [(j["TrainingJobName"], j["TrainingJobStatus"]) for j in listed] == [("smimg-api-ok", "Completed")]


def test_stop_training_job_stops_it_with_the_handlers_checkpoint_in_s3(endpoint: str, job_image: str) -> None:
    sm, s3 = client(endpoint, "sagemaker"), client(endpoint, "s3")
    upload_code(s3, "stopping")
    checkpoints = {"CheckpointConfig": {"S3Uri": "s3://stopping/ckpt"}}
    sm.create_training_job(**request("smimg-api-stop", job_image, "stopping", 100000, **checkpoints))
    wait(sm, "smimg-api-stop", {"Training"})
    time.sleep(8)  # into the script's steps
    sm.stop_training_job(TrainingJobName="smimg-api-stop")
    job = wait(sm, "smimg-api-stop", {"Stopped", "Failed", "Completed"})
    assert (job["TrainingJobStatus"], job["SecondaryStatus"]) == ("Stopped", "Stopped"), job.get("FailureReason")
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="stopping", Prefix="ckpt/")["Contents"])
    assert keys == ["ckpt/algo-1.json", "ckpt/algo-2.json"]


def test_what_the_api_refuses_it_refuses_with_sagemakers_errors(endpoint: str, job_image: str) -> None:
    from botocore.exceptions import ClientError

    sm = client(endpoint, "sagemaker")
    with pytest.raises(ClientError) as bad_name:
        sm.create_training_job(**request("bad_name", job_image, "b", 1))
    assert bad_name.value.response["Error"]["Code"] == "ValidationException"
    assert "at 'trainingJobName' failed to satisfy constraint" in bad_name.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as too_many:
        hps = {f"k{i}": "1" for i in range(101)}
        sm.create_training_job(**{**request("smimg-api-hps", job_image, "b", 1), "HyperParameters": hps})
    assert too_many.value.response["Error"]["Code"] == "ValidationException"
    with pytest.raises(ClientError) as duplicate:
        sm.create_training_job(**request("smimg-api-ok", job_image, "launch", 5))
    assert duplicate.value.response["Error"]["Code"] == "ResourceInUse"
    with pytest.raises(ClientError) as missing:
        sm.describe_training_job(TrainingJobName="smimg-api-none")
    assert "Requested resource not found" in missing.value.response["Error"]["Message"]


def test_a_failing_job_reports_its_failure_file_and_a_job_past_its_max_run_is_stopped(
    endpoint: str, job_image: str
) -> None:
    sm, s3 = client(endpoint, "sagemaker"), client(endpoint, "s3")
    upload_code(s3, "ending")
    failing = request("smimg-api-fail", job_image, "ending", 1)
    failing["HyperParameters"]["steps"] = '"ten"'  # argparse refuses it: the script exits 2
    sm.create_training_job(**failing)
    limited = request("smimg-api-limit", job_image, "ending", 100000)
    sm.create_training_job(**{**limited, "StoppingCondition": {"MaxRuntimeInSeconds": 6}})

    failed = wait(sm, "smimg-api-fail", {"Failed", "Completed", "Stopped"})
    assert (failed["TrainingJobStatus"], failed["SecondaryStatus"]) == ("Failed", "Failed")
    assert "argument --steps: invalid int value: 'ten'" in failed["FailureReason"], failed["FailureReason"]
    assert len(failed["FailureReason"]) <= 1024
    stopped = wait(sm, "smimg-api-limit", {"Stopped", "Failed", "Completed"})
    assert (stopped["TrainingJobStatus"], stopped["SecondaryStatus"]) == ("Stopped", "MaxRuntimeExceeded")
    # As SageMaker: the model saved in the stop's grace is uploaded.
    assert stopped["ModelArtifacts"]["S3ModelArtifacts"] == "s3://ending/out/smimg-api-limit/output/model.tar.gz"


SDK_V2_LAUNCH = """
from sagemaker.estimator import Estimator
estimator = Estimator(
    image_uri={image!r},
    role="arn:aws:iam::123456789012:role/SageMakerRole",
    instance_count=2,
    instance_type="ml.m5.xlarge",
    entry_point="resume.py",
    source_dir={source!r},
    hyperparameters={{"steps": 4}},
    output_path="s3://sdk-v2/out",
    code_location="s3://sdk-v2/code",
    environment={{"SMIMG_LAUNCHER": "python"}},
)
estimator.fit({{"train": "s3://sdk-v2/data"}}, job_name="smimg-api-sdk-v2", logs="All")
print("MODEL", estimator.model_data)
"""


def test_unchanged_sdk_v2_launch_code_completes_with_logs_and_the_model_in_s3(
    endpoint: str, job_image: str, tmp_path: Path
) -> None:
    s3 = client(endpoint, "s3")
    s3.create_bucket(Bucket="sdk-v2")
    s3.put_object(Bucket="sdk-v2", Key="data/part-0.txt", Body=b"x")
    env = sdk_env(endpoint, tmp_path)
    image = f"{ECR}/{job_image}"
    code = SDK_V2_LAUNCH.format(image=image, source=str(RESUME))
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # fit(logs=...) printed both hosts' lines from CloudWatch, and the job's end.
    assert "DONE algo-1 step=4" in proc.stdout and "DONE algo-2 step=4" in proc.stdout, proc.stdout[-3000:]
    assert "MODEL s3://sdk-v2/out/smimg-api-sdk-v2/output/model.tar.gz" in proc.stdout
    model = s3.get_object(Bucket="sdk-v2", Key="out/smimg-api-sdk-v2/output/model.tar.gz")["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(model)) as tar:
        assert sorted(tar.getnames()) == ["algo-1.json", "algo-2.json"]


MODEL_TRAINER_LAUNCH = """
{imports}
trainer = ModelTrainer(
    # The one change: ModelTrainer derives its default bucket from STS at its regional endpoint, which
    # AWS_ENDPOINT_URL does not redirect; named, no STS call is made.
    sagemaker_session=Session(default_bucket="model-trainer"),
    training_image={image!r},
    role="arn:aws:iam::123456789012:role/SageMakerRole",
    compute=Compute(instance_type="ml.m5.xlarge", instance_count=2),
    source_code=SourceCode(source_dir={source!r}, entry_script="train.py"),
    distributed=Torchrun(process_count_per_node=2),
    hyperparameters={{"note": "model trainer"}},
    base_job_name={name!r},
    output_data_config=OutputDataConfig(s3_output_path="s3://model-trainer/out"),
)
trainer.train(input_data_config=[InputData(channel_name="train", data_source="s3://model-trainer/data")], logs=True)
print("MODEL", trainer._latest_training_job.model_artifacts.s3_model_artifacts)
"""
MODEL_TRAINER_IMPORTS = {
    # SDK v2 ships ModelTrainer as sagemaker.modules; v3 as sagemaker.train (its own venv: they cannot share one).
    "v2": """
from sagemaker.modules import Session
from sagemaker.modules.configs import Compute, InputData, OutputDataConfig, SourceCode
from sagemaker.modules.distributed import Torchrun
from sagemaker.modules.train import ModelTrainer
""",
    "v3": """
from sagemaker.core.helper.session_helper import Session
from sagemaker.train import ModelTrainer
from sagemaker.train.configs import Compute, InputData, OutputDataConfig, SourceCode
from sagemaker.train.distributed import Torchrun
""",
}


def sdk_env(endpoint: str, folder: Path) -> dict[str, str]:
    """local_api_env, with the SDK's telemetry and SDK v3's IAM role check off (neither is served here)."""
    config = folder / "sagemaker-config.yaml"
    config.write_text("SchemaVersion: '1.0'\nSageMaker:\n  PythonSDK:\n    Modules:\n      TelemetryOptOut: true\n")
    return local_api_env(endpoint) | {
        "SAGEMAKER_USER_CONFIG_OVERRIDE": str(config),
        "SAGEMAKER_SUPPRESS_V2_WARNING": "1",
        # SDK v3 checks the role through IAM (SimulatePrincipalPolicy, GetRole), which the local API does not serve.
        "SAGEMAKER_VALIDATE_ROLE": "false",
        "COLUMNS": "200",  # sagemaker-core logs through rich: wide enough that a log line stays whole
    }


@pytest.mark.parametrize("sdk", ["v2", "v3"])
def test_model_trainer_launch_code_runs_its_driver_as_a_job_here(
    endpoint: str, job_image: str, tmp_path: Path, sdk: str, request: pytest.FixtureRequest
) -> None:
    # ModelTrainer replaces the image's entrypoint with ContainerEntrypoint/ContainerArguments that run its driver
    # from the sm_drivers channel, and mounts the code as the channel "code".
    python = sys.executable if sdk == "v2" else request.getfixturevalue("sdk_v3_python")
    s3 = client(endpoint, "s3")
    s3.create_bucket(Bucket="model-trainer")
    s3.put_object(Bucket="model-trainer", Key="data/data.txt", Body=b"hello local mode\n")
    name = f"smimg-api-trainer-{sdk}"
    code = MODEL_TRAINER_LAUNCH.format(
        imports=MODEL_TRAINER_IMPORTS[sdk], image=f"{ECR}/{job_image}", source=str(JOB / "src"), name=name
    )
    proc = subprocess.run(
        [python, "-c", code], env=sdk_env(endpoint, tmp_path), capture_output=True, text=True, timeout=300
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    if sdk == "v2":  # v3 logs the job's lines only at INFO, which a script's default logging does not show
        # Its driver's torchrun formed one world of 4 over both hosts; the lines came back through CloudWatch.
        assert output.count("sum=10.0 data=['hello', 'local', 'mode']") == 4, output[-4000:]
    [model] = [line.split()[1] for line in proc.stdout.splitlines() if line.startswith("MODEL ")]
    assert model.startswith(f"s3://model-trainer/out/{name}-") and model.endswith("/output/model.tar.gz")
    body = s3.get_object(Bucket="model-trainer", Key=model.removeprefix("s3://model-trainer/"))["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        assert json.load(tar.extractfile("model.json")) == {  # type: ignore[arg-type]
            "sum": 10.0, "world": 4, "data": ["hello", "local", "mode"], "note": "model trainer"
        }  # fmt: skip


def test_a_server_whose_stderr_nobody_reads_keeps_answering(tmp_path: Path) -> None:
    # werkzeug logged each request; once a pipe nobody drained was full, every request hung behind its log lock.
    from botocore.config import Config

    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    server = subprocess.Popen(
        [*SMIMG, "local", "api", "--port", "0", "--state", str(tmp_path / "api")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        assert server.stdout is not None
        endpoint = server.stdout.readline().strip().split("=", 1)[1]
        import boto3

        sm = boto3.client(
            "sagemaker", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="a",
            aws_secret_access_key="b", config=Config(read_timeout=10, retries={"max_attempts": 1}),
        )  # fmt: skip
        for _ in range(1500):  # ~140 KB of request log lines: more than a pipe holds
            assert sm.list_training_jobs()["TrainingJobSummaries"] == []
    finally:
        server.terminate()
        server.communicate(timeout=60)
