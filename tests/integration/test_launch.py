"""`smimg launch` and `smimg jobs` end to end against the local SageMaker API, with real containers."""

from __future__ import annotations

import json
import signal
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SMIMG, api_server, local_api_env

pytestmark = pytest.mark.docker

RESUME = Path(__file__).parent.parent / "fixtures" / "resume"
JOB_SPEC = Path(__file__).parent.parent / "fixtures" / "job"
ACCELERATE = Path(__file__).parent.parent / "fixtures" / "accelerate"
HETERO = Path(__file__).parent.parent / "fixtures" / "hetero"
ECR = "123456789012.dkr.ecr.us-east-1.amazonaws.com"
ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"


def aws_env(endpoint: str) -> dict[str, str]:
    return local_api_env(endpoint) | {"SMIMG_ROLE": ROLE}


def s3(endpoint: str) -> Any:
    import boto3

    return boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="a", aws_secret_access_key="b"
    )


def launch_args(job_image: str | None, name: str, steps: str) -> list[str]:
    image = [f"{ECR}/{job_image}"] if job_image else ["-f", str(JOB_SPEC)]  # no image: the spec's, pushed first
    return [
        "launch", *image, "-n", "2", "--instance-type", "ml.m5.xlarge",
        "--input", "train=s3://launching/data", "--source-dir", str(RESUME), "--entry-point", "resume.py",
        "--hp", f"steps={steps}", "--env", "SMIMG_LAUNCHER=python", "--output", "s3://launching/out",
        "--job-name", name,
    ]  # fmt: skip


def in_ecr(endpoint: str, job_image: str) -> None:
    """The local image as `smimg push` leaves it in ECR (the local API's): its manifest, with the image as config."""
    import boto3

    from smimg.adapters import registry
    from smimg.adapters.docker_engine import default_engine

    image = default_engine().image(job_image)
    assert image is not None
    repository, tag = job_image.rsplit(":", 1)
    ecr = boto3.client(
        "ecr", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="a", aws_secret_access_key="b"
    )
    ecr.create_repository(repositoryName=repository)
    config = {"mediaType": "application/vnd.docker.container.image.v1+json", "size": 2, "digest": image.id}
    manifest = {"schemaVersion": 2, "mediaType": registry.DOCKER_MANIFEST, "config": config, "layers": []}
    ecr.put_image(repositoryName=repository, imageManifest=json.dumps(manifest), imageTag=tag)


@pytest.fixture(scope="module")
def bucket(local_api: str, job_image: str) -> str:
    """The launch tests' bucket with one input object, and their image in ECR."""
    client = s3(local_api)
    client.create_bucket(Bucket="launching")
    client.put_object(Bucket="launching", Key="data/part-0", Body=b"x")
    in_ecr(local_api, job_image)
    return "launching"


def test_a_launched_job_is_watched_to_its_end_with_every_hosts_lines_and_its_model(
    local_api: str, bucket: str, job_image: str, tmp_path: Path
) -> None:
    proc = subprocess.run(
        [*SMIMG, *launch_args(None, "smimg-api-launch", "4"), "--download", str(tmp_path / "model")],
        env=aws_env(local_api), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    # The spec's image: ECR holds its content tag already, so nothing is uploaded, and the job runs it by digest.
    assert "is already in the registry" in proc.stderr, proc.stderr[-4000:]
    for line in ("smimg: Starting", "smimg: Training", "algo-1 | DONE algo-1 step=4", "algo-2 | DONE algo-2 step=4"):
        assert line in proc.stderr, proc.stderr[-4000:]
    assert "job smimg-api-launch completed" in proc.stderr
    assert proc.stdout.strip() == "s3://launching/out/smimg-api-launch/output/model.tar.gz"
    with tarfile.open(tmp_path / "model" / "model.tar.gz") as tar:
        assert sorted(tar.getnames()) == ["algo-1.json", "algo-2.json"]
    # The job, found again: listed, described, its lines.
    env = aws_env(local_api)
    listed = subprocess.run([*SMIMG, "jobs", "list", "--json"], env=env, capture_output=True, text=True)
    assert [
        j["TrainingJobStatus"] for j in json.loads(listed.stdout) if j["TrainingJobName"] == "smimg-api-launch"
    ] == ["Completed"]
    described = subprocess.run(
        [*SMIMG, "jobs", "describe", "smimg-api-launch"], env=env, capture_output=True, text=True
    )
    description = json.loads(described.stdout)
    assert description["ModelArtifacts"]["S3ModelArtifacts"] == proc.stdout.strip()
    assert description["AlgorithmSpecification"]["TrainingImage"].startswith(f"{ECR}/{job_image.split(':')[0]}@sha256:")
    logs = subprocess.run([*SMIMG, "jobs", "logs", "smimg-api-launch"], env=env, capture_output=True, text=True)
    assert "algo-1 | DONE algo-1 step=4" in logs.stdout and "algo-2 | START algo-2 step=0" in logs.stdout


def test_a_failing_job_exits_non_zero_with_its_failure_reason(local_api: str, bucket: str, job_image: str) -> None:
    proc = subprocess.run(
        [*SMIMG, *launch_args(job_image, "smimg-api-launch-fail", "ten")],
        env=aws_env(local_api), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr[-4000:]
    assert "job smimg-api-launch-fail failed: Failed" in proc.stderr
    assert "failure reason: ExitCode 2 on algo-" in proc.stderr and "invalid int value: 'ten'" in proc.stderr


def test_a_job_past_its_max_run_is_stopped_and_exits_124_with_what_it_saved(
    local_api: str, bucket: str, job_image: str
) -> None:
    proc = subprocess.run(
        [*SMIMG, *launch_args(job_image, "smimg-api-launch-max-run", "100000"), "--max-run", "8", "--json"],
        env=aws_env(local_api), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 124, proc.stderr[-4000:]
    result = json.loads(proc.stdout)
    assert (result["status"], result["secondary"]) == ("Stopped", "MaxRuntimeExceeded"), result
    # SIGTERM at the limit, as SageMaker sends it: the script saved its step, and its model was uploaded.
    assert "algo-1 | SAVED algo-1 step=" in proc.stderr and result["model"], proc.stderr[-4000:]


def test_ctrl_c_detaches_then_jobs_stop_and_attach_see_it_stopped(local_api: str, bucket: str, job_image: str) -> None:
    launched = subprocess.Popen(
        [*SMIMG, *launch_args(job_image, "smimg-api-launch-detach", "100000")],
        env=aws_env(local_api), stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert launched.stderr is not None
    for line in launched.stderr:  # until a host's first line: the job is training
        if "START algo-" in line:
            break
    launched.send_signal(signal.SIGINT)
    _, err = launched.communicate(timeout=30)
    assert launched.returncode == 130, err
    assert "detached; smimg-api-launch-detach keeps running: `smimg jobs attach smimg-api-launch-detach`" in err
    stopped = subprocess.run(
        [*SMIMG, "jobs", "stop", "smimg-api-launch-detach"], env=aws_env(local_api), capture_output=True, text=True
    )
    assert stopped.returncode == 0, stopped.stderr
    started = time.monotonic()
    attached = subprocess.run(
        [*SMIMG, "jobs", "attach", "smimg-api-launch-detach", "--json"],
        env=aws_env(local_api), capture_output=True, text=True, timeout=200,
    )  # fmt: skip
    assert attached.returncode == 1, attached.stderr
    assert '"status": "Stopped"' in attached.stdout and time.monotonic() - started < 60
    assert "algo-1 | START algo-1 step=0" in attached.stderr  # attach shows the job's lines from the first


def test_an_empty_input_is_refused_before_a_job_is_created(local_api: str, bucket: str, job_image: str) -> None:
    args = launch_args(job_image, "smimg-api-launch-empty", "1")
    args[args.index("train=s3://launching/data")] = "train=s3://launching/nothing-here"
    proc = subprocess.run([*SMIMG, *args], env=aws_env(local_api), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    said = proc.stderr.strip().splitlines()
    assert said[0].startswith("smimg: ") and " is sha256:" in said[0], proc.stderr  # the image, pinned
    assert said[1].startswith("error: --input train=s3://launching/nothing-here holds no objects"), proc.stderr
    assert len(said) == 3  # the error and its hint, no traceback
    listed = subprocess.run(
        [*SMIMG, "jobs", "attach", "smimg-api-launch-empty"], env=aws_env(local_api), capture_output=True, text=True
    )
    assert listed.returncode == 1 and "error: no training job smimg-api-launch-empty in us-east-1" in listed.stderr
    # A taken name is refused before the code is uploaded: that job's code in S3 stays what it ran.
    code = "out/smimg-api-launch/source/sourcedir.tar.gz"
    before = s3(local_api).head_object(Bucket=bucket, Key=code)["ETag"]
    again = subprocess.run(
        [*SMIMG, *launch_args(job_image, "smimg-api-launch", "1")],
        env=aws_env(local_api), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert again.returncode == 1, again.stderr
    assert "\nerror: a training job named smimg-api-launch exists in us-east-1 (Completed)" in again.stderr
    assert s3(local_api).head_object(Bucket=bucket, Key=code)["ETag"] == before


def test_a_matching_launch_starts_on_the_warm_pool_and_another_is_told_why_not(
    local_api: str, bucket: str, job_image: str
) -> None:
    def launch(name: str, *more: str) -> str:
        args = [*launch_args(job_image, name, "1"), "--keep-alive", "600", *more]
        proc = subprocess.run([*SMIMG, *args], env=aws_env(local_api), capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-4000:]
        return proc.stderr

    def pool(name: str) -> dict[str, Any]:
        described = subprocess.run([*SMIMG, "jobs", "describe", name], env=aws_env(local_api), capture_output=True)
        return json.loads(described.stdout)["WarmPoolStatus"]  # type: ignore[no-any-return]

    first = launch("smimg-api-warm-1", "--tag", "team=nlp")
    assert "warm pool: none is available" in first and "warm pool: its instances are kept 600 s" in first
    other = launch("smimg-api-warm-2", "--instance-type", "ml.m5.2xlarge", "--volume-size", "40")
    assert (
        "warm pool: none matches; the nearest, smimg-api-warm-1's, differs in ResourceConfig.InstanceType "
        "ml.m5.xlarge there, ml.m5.2xlarge here; ResourceConfig.VolumeSizeInGB 30 there, 40 here"
    ) in other
    assert pool("smimg-api-warm-1")["Status"] == "Available"
    # Tags, hyperparameters and code are not what SageMaker matches on.
    matching = launch("smimg-api-warm-3", "--hp", "step_seconds=0.05")
    assert "warm pool: the job matches smimg-api-warm-1's, and starts on its instances" in matching
    assert pool("smimg-api-warm-1")["Status"] == "Reused" and pool("smimg-api-warm-1")["ReusedByJob"] == (
        "smimg-api-warm-3"
    )
    assert pool("smimg-api-warm-3")["Status"] == "Available"


def test_an_accelerate_sagemaker_config_launches_on_the_smimg_image(
    local_api: str, bucket: str, job_image: str, tmp_path: Path
) -> None:
    import boto3

    iam = boto3.client(
        "iam", endpoint_url=local_api, region_name="us-east-1", aws_access_key_id="a", aws_secret_access_key="b"
    )
    arn = iam.create_role(RoleName="accelerate_sagemaker_execution_role", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    config = tmp_path / "accelerate.yaml"
    config.write_text(
        "base_job_name: smimg-api-accelerate\ncompute_environment: AMAZON_SAGEMAKER\ndistributed_type: DATA_PARALLEL\n"
        "ec2_instance_type: ml.m5.xlarge\niam_role_name: accelerate_sagemaker_execution_role\nmixed_precision: bf16\n"
        "num_machines: 2\nregion: us-east-1\nadditional_args: {output_path: 's3://launching/out'}\n"
    )
    env = {k: v for k, v in aws_env(local_api).items() if k != "SMIMG_ROLE"}  # the config's role, by its name
    proc = subprocess.run(
        [*SMIMG, "launch", f"{ECR}/{job_image}", "--accelerate-config", str(config), "--source-dir", str(ACCELERATE),
         "--entry-point", "train.py", "--hp", "lr=0.001", "--input", "train=s3://launching/data", "--json"],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    # 2 hosts x 2 processes in one world (the all-reduce needs every one), with the config's mixed precision.
    for rank in range(4):
        assert f"RANK {rank}/4 sum=4 precision=bf16 lr=0.001" in proc.stderr, proc.stderr[-4000:]
    name = json.loads(proc.stdout)["name"]
    assert name.startswith("smimg-api-accelerate-")
    described = subprocess.run([*SMIMG, "jobs", "describe", name], env=env, capture_output=True, text=True)
    assert json.loads(described.stdout)["RoleArn"] == arn


def test_a_heterogeneous_cluster_trains_its_distribution_group_together_and_runs_the_other_alone(
    local_api: str, bucket: str, job_image: str
) -> None:
    proc = subprocess.run(
        [*SMIMG, "launch", f"{ECR}/{job_image}", "--instance-group", "train=ml.m5.xlarge:2",
         "--instance-group", "data=ml.c5.xlarge:1", "--distribution-group", "train", "--source-dir", str(HETERO),
         "--entry-point", "train.py", "--output", "s3://launching/out", "--input", "raw=s3://launching/data",
         "--input-group", "raw=data", "--json"],
        env=aws_env(local_api), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    # algo-1 and algo-2 (the train group) are one world of 2 x 2 processes; algo-3 (data) runs the script alone and
    # alone gets the channel assigned to its group.
    for rank, host in ((0, "algo-1"), (1, "algo-1"), (2, "algo-2"), (3, "algo-2")):
        assert f"train ml.m5.xlarge {host} channels=[]: rank {rank}/4 sum=4.0" in proc.stderr, proc.stderr[-4000:]
    assert 'algo-3 | data ml.c5.xlarge algo-3 channels=["raw"]: alone, hosts ["algo-3"]' in proc.stderr
    name = json.loads(proc.stdout)["name"]
    described = subprocess.run([*SMIMG, "jobs", "describe", name], env=aws_env(local_api), capture_output=True)
    assert [g["InstanceGroupName"] for g in json.loads(described.stdout)["ResourceConfig"]["InstanceGroups"]] == [
        "train",
        "data",
    ]


@pytest.fixture
def spot_api(tmp_path: Path) -> Iterator[str]:
    """A local API that interrupts every managed spot job once, 5 s in."""
    yield from api_server(tmp_path / "api", "--spot-interrupt-after", "5")


def test_a_spot_job_interrupted_resumes_from_its_checkpoints_and_reports_its_savings(
    spot_api: str, job_image: str
) -> None:
    client = s3(spot_api)
    client.create_bucket(Bucket="launching")
    client.put_object(Bucket="launching", Key="data/part-0", Body=b"x")
    in_ecr(spot_api, job_image)
    args = launch_args(job_image, "smimg-api-launch-spot", "80")  # 8 s of steps: the reclaim comes mid-way
    args += ["--spot", "--max-wait", "900", "--max-run", "600", "--checkpoints", "s3://launching/ckpt", "--json"]
    proc = subprocess.run([*SMIMG, *args], env=aws_env(spot_api), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "smimg: Interrupted" in proc.stderr, proc.stderr[-4000:]
    saved = [int(line.rsplit("=", 1)[1]) for line in proc.stderr.splitlines() if "| SAVED algo-1 step=" in line]
    restarted = [int(line.rsplit("=", 1)[1]) for line in proc.stderr.splitlines() if "| START algo-1 step=" in line]
    assert len(saved) == 1 and restarted == [0, saved[0]], proc.stderr[-4000:]  # resumed where the handler saved
    assert "algo-2 | DONE algo-2 step=80" in proc.stderr
    result = json.loads(proc.stdout)
    assert result["status"] == "Completed" and result["billable_seconds"] < result["training_seconds"]


def test_ctrl_c_with_stop_on_interrupt_stops_the_job_and_watches_it_stop(
    local_api: str, bucket: str, job_image: str
) -> None:
    args = [*launch_args(job_image, "smimg-api-launch-stop", "100000"), "--stop-on-interrupt"]
    launched = subprocess.Popen([*SMIMG, *args], env=aws_env(local_api), stderr=subprocess.PIPE, text=True)
    assert launched.stderr is not None
    lines = []
    for line in launched.stderr:
        lines.append(line)
        if "START algo-" in line:
            break
    assert "Ctrl-C stops the job" in "".join(lines)
    launched.send_signal(signal.SIGINT)
    _, err = launched.communicate(timeout=200)
    assert launched.returncode == 1, err  # Stopped is not a success
    assert "smimg: stopping smimg-api-launch-stop" in err and "job smimg-api-launch-stop stopped: Stopped" in err
    assert "| SAVED algo-1 step=" in err  # the hosts' SIGTERM handlers ran, and their lines were shown
