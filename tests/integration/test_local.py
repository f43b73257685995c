"""`smimg local run` with real containers on the stand-in, and the same image under the SageMaker SDK."""

from __future__ import annotations

import json
import subprocess
import tarfile
import time
from pathlib import Path

import pytest
import yaml

from smimg import local
from smimg.adapters.docker_engine import default_engine
from smimg.errors import AwsError
from smimg.local import channels, job
from tests.conftest import SMIMG, smimg_cli

pytestmark = pytest.mark.docker

JOB = Path(__file__).parent.parent / "fixtures" / "job"


@pytest.fixture(scope="module")
def image(job_image: str) -> str:
    return job_image


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("channel")
    (folder / "data.txt").write_text("hello local mode\n")
    return folder


def leftovers(project: str) -> list[str]:
    client = default_engine().sdk
    containers = [c.name for c in client.containers.list(all=True) if c.name.startswith(project)]
    return containers + [n.name for n in client.networks.list(names=[project])]


def test_two_hosts_all_reduce_read_a_channel_and_ship_the_model(image: str, data: Path, tmp_path: Path) -> None:
    lines: list[str] = []
    job = local.make_job(image, instances=2, inputs=[f"train={data}"], hyperparameters=["note=hi there"])
    plan = local.plan_job(job, tmp_path / "run")
    result = local.run(plan, output=tmp_path / "out", on_line=lines.append)

    assert result.ok, "\n".join(lines)
    assert [(h.name, h.exit_code) for h in result.hosts] == [("algo-1", 0), ("algo-2", 0)]
    # Two processes per host (SMIMG_NPROC_PER_NODE=2 in the image): ranks 1..4 sum to 10 across the containers.
    assert sum("sum=10.0 data=['hello', 'local', 'mode']" in line for line in lines) == 4, lines
    assert any(line.startswith("algo-2 | ") for line in lines)
    with tarfile.open(tmp_path / "out" / "model.tar.gz") as archive:
        model = json.load(archive.extractfile("model.json"))  # type: ignore[arg-type]
    assert model == {"sum": 10.0, "world": 4, "data": ["hello", "local", "mode"], "note": "hi there"}
    with tarfile.open(tmp_path / "out" / "output.tar.gz") as archive:
        assert "data/metrics.json" in archive.getnames()
    assert leftovers(plan.project) == []
    assert not plan.run_dir.exists()


def test_a_failing_rank_fails_the_command_with_its_reason_and_leaves_nothing(
    image: str, data: Path, tmp_path: Path
) -> None:
    name = job.job_name("smimg-test-fail")
    cli = smimg_cli(
        "local",
        "run",
        image,
        "-n",
        "2",
        "--input",
        f"train={data}",
        "--hp",
        "fail_rank=3",
        "--job-name",
        name,
        "--output",
        str(tmp_path / "out"),
        timeout=300,
    )
    # The failing rank exits 1, or 134 when gloo's threads abort its exit (its group is still open): smimg exits
    # with the root cause's own code either way.
    assert cli.returncode in (1, 134), cli.stderr[-3000:]
    tail = cli.stderr[cli.stderr.index(f"job {name} failed") :]
    assert f"algo-2 failed (exit {cli.returncode}):" in tail and "ValueError: rank 3 was told to fail" in tail, tail
    assert not (tmp_path / "out" / "model.tar.gz").exists()
    assert (tmp_path / "out" / "output.tar.gz").exists()
    assert leftovers(name) == []


def test_a_shell_gets_algo_1s_tree_and_leaves_nothing(image: str, data: Path) -> None:
    commands = "cat /opt/ml/input/config/resourceconfig.json; ls /opt/ml/input/data/train; echo $TRAINING_JOB_NAME\n"
    cli = smimg_cli("local", "shell", image, "-n", "2", "--input", f"train={data}", stdin=commands + "exit 3\n")
    assert cli.returncode == 3, cli.stderr
    assert '"current_host": "algo-1"' in cli.stdout and "data.txt" in cli.stdout, cli.stdout
    name = cli.stdout.strip().splitlines()[-1]
    assert name.startswith("smimg-local-") and leftovers(name) == []


def test_compose_only_writes_the_per_host_tree(image: str, data: Path, tmp_path: Path) -> None:
    cli = smimg_cli(
        "local",
        "run",
        image,
        "-n",
        "3",
        "--input",
        f"train={data}",
        "--hp",
        "epochs=2",
        "--compose-only",
        "--run-dir",
        str(tmp_path / "run"),
        "--job-name",
        "compose-only",
        timeout=60,
    )
    assert cli.returncode == 0, cli.stderr
    run = Path(cli.stdout.strip())
    compose = yaml.safe_load((run / "docker-compose.yaml").read_text())
    assert list(compose["services"]) == ["algo-1", "algo-2", "algo-3"]
    for i, name in enumerate(compose["services"], start=1):
        service = compose["services"][name]
        assert service["volumes"][:2] == [
            {
                "type": "bind",
                "source": f"{run}/{name}",
                "target": "/opt/ml",
                "read_only": False,
                "bind": {"propagation": "rprivate"},
            },
            {
                "type": "bind",
                "source": str(data),
                "target": "/opt/ml/input/data/train",
                "read_only": True,
                "bind": {"propagation": "rprivate"},
            },
        ]
        config = run / name / "input" / "config"
        resource = json.loads((config / "resourceconfig.json").read_text())
        assert (resource["current_host"], resource["hosts"]) == (f"algo-{i}", ["algo-1", "algo-2", "algo-3"])
        assert json.loads((config / "hyperparameters.json").read_text()) == {"epochs": "2"}
        assert list(json.loads((config / "inputdataconfig.json").read_text())) == ["train"]
        assert (run / name / "input" / "data" / "train").is_dir() and (run / name / "model").is_dir()
    assert leftovers("compose-only") == []
    # The file is for running the job by hand: compose itself accepts it.
    check = subprocess.run(
        ["docker", "compose", "--file", str(run / "docker-compose.yaml"), "config", "--quiet"],
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stderr


@pytest.fixture
def sdk_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Offline SDK: dummy credentials, no instance metadata, telemetry off (it would call STS and S3)."""
    for var in ("AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    config = tmp_path / "sagemaker-config.yaml"
    config.write_text("SchemaVersion: '1.0'\nSageMaker:\n  PythonSDK:\n    Modules:\n      TelemetryOptOut: true\n")
    monkeypatch.setenv("SAGEMAKER_USER_CONFIG_OVERRIDE", str(config))
    return tmp_path


def sdk_leftovers(image: str) -> list[str]:
    client = default_engine().sdk
    found = client.containers.list(all=True, filters={"ancestor": image})
    for container in found:  # the SDK never runs `compose down`
        container.remove(force=True)
    for network in client.networks.list(names=["sagemaker-local"]):
        network.remove()
    return [c.name for c in found if c.attrs["State"]["ExitCode"] != 0]


def test_sdk_v2_local_mode_runs_the_image_unchanged(image: str, data: Path, sdk_env: Path) -> None:
    from sagemaker.estimator import Estimator
    from sagemaker.local import LocalSession

    (sdk_env / "root").mkdir()
    session = LocalSession()
    session.config = {"local": {"local_code": True, "container_root": str(sdk_env / "root")}}
    estimator = Estimator(
        image_uri=image,
        role="arn:aws:iam::123456789012:role/smimg-test",
        instance_count=2,
        instance_type="local",
        sagemaker_session=session,
        output_path=f"file://{sdk_env / 'out'}",
        # What distribution={"torch_distributed": ..., "mpi": {"processes_per_host": 3}} sends: the job's 3 processes
        # per host win over the image's default of 2 (SMIMG_NPROC_PER_NODE).
        hyperparameters={
            "note": "from the sdk",
            "sagemaker_torch_distributed_enabled": True,
            "sagemaker_mpi_num_of_processes_per_host": 3,
        },
    )
    try:
        estimator.fit({"train": f"file://{data}"}, logs="None")
    finally:
        failed = sdk_leftovers(image)
    assert failed == []
    with tarfile.open(sdk_env / "out" / "model.tar.gz") as archive:
        model = json.load(archive.extractfile("model.json"))  # type: ignore[arg-type]
    assert model == {"sum": 21.0, "world": 6, "data": ["hello", "local", "mode"], "note": "from the sdk"}
    with tarfile.open(sdk_env / "out" / "output.tar.gz") as archive:
        assert "success" in archive.getnames()  # the SDK packs /opt/ml/output whole


def test_sdk_model_trainer_local_container_runs_the_image(image: str, data: Path, sdk_env: Path) -> None:
    # ModelTrainer as the v2 SDK ships it (sagemaker.modules); SDK v3's sagemaker.train.ModelTrainer is the same
    # class, and v2 and v3 cannot share one environment. With SourceCode it replaces the image's entrypoint with its
    # own driver, which needs bash, python, pip, torch and torchrun on the image's PATH.
    import boto3
    from sagemaker.modules import Session
    from sagemaker.modules.configs import Compute, InputData, SourceCode
    from sagemaker.modules.distributed import Torchrun
    from sagemaker.modules.train import ModelTrainer
    from sagemaker.modules.train.model_trainer import Mode

    root = sdk_env / "trainer"
    root.mkdir()
    trainer = ModelTrainer(
        sagemaker_session=Session(boto_session=boto3.Session(region_name="us-east-1")),
        training_mode=Mode.LOCAL_CONTAINER,
        training_image=image,
        role="arn:aws:iam::123456789012:role/smimg-test",
        compute=Compute(instance_type="local_cpu", instance_count=2),
        source_code=SourceCode(source_dir=str(JOB / "src"), entry_script="train.py"),
        distributed=Torchrun(process_count_per_node=2),
        hyperparameters={"note": "model trainer"},
        local_container_root=str(root),
    )
    try:
        trainer.train(input_data_config=[InputData(channel_name="train", data_source=str(data))], wait=True)
    finally:
        failed = sdk_leftovers(image)
    assert failed == []
    with tarfile.open(root / "compressed_artifacts" / "model.tar.gz") as archive:
        model = json.load(archive.extractfile("model.json"))  # type: ignore[arg-type]
    assert model == {"sum": 10.0, "world": 4, "data": ["hello", "local", "mode"], "note": "model trainer"}


@pytest.mark.aws
def test_s3_channel_is_downloaded_once_into_the_cache(aws_env: object, tmp_path: Path) -> None:
    import boto3

    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="smimg-data")
    s3.put_object(Bucket="smimg-data", Key="sets/train/data.txt", Body=b"from s3\n")
    s3.put_object(Bucket="smimg-data", Key="sets/train/sub/more.txt", Body=b"more\n")
    folder = channels.resolve_channel("train", "s3://smimg-data/sets/train", tmp_path)
    assert (folder / "data.txt").read_text() == "from s3\n"
    assert (folder / "sub" / "more.txt").read_text() == "more\n"
    s3.delete_object(Bucket="smimg-data", Key="sets/train/data.txt")
    assert channels.resolve_channel("train", "s3://smimg-data/sets/train", tmp_path) == folder  # cached, no S3 call
    # The cache's completion marker is not in the channel: every file there is the user's data.
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")) == ["data.txt", "sub", "sub/more.txt"]
    with pytest.raises(AwsError) as caught:
        channels.resolve_channel("train", "s3://smimg-no-such-bucket/x", tmp_path)
    assert "smimg-no-such-bucket" in caught.value.message and "\n" not in caught.value.message


def test_ctrl_c_removes_containers_and_network(image: str, tmp_path: Path) -> None:
    import signal
    import time

    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "slow.py").write_text("import time\nprint('started', flush=True)\ntime.sleep(120)\n")
    name = job.job_name("smimg-test-ctrl-c")
    proc = subprocess.Popen(
        [
            *SMIMG,
            "local",
            "run",
            image,
            "-n",
            "2",
            "--source-dir",
            str(tmp_path / "src"),
            "--entry-point",
            "slow.py",
            "--job-name",
            name,
            "--output",
            str(tmp_path / "out"),
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:  # script mode: the mounted code runs, no rebuild
        seen.append(line)
        if "started" in line:
            break
    assert leftovers(name), "".join(seen)
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130
    assert time.monotonic() - started < 30
    assert leftovers(name) == []


def test_the_engine_tells_a_labelled_containers_end_as_it_stops(image: str) -> None:
    engine, label = default_engine(), "dev.smimg.test-ends"
    names = [f"smimg-test-ends-{time.monotonic_ns()}-{n}" for n in ("ours", "other")]
    ended: list[str] = []
    stop_watching = engine.watch_ends(label, names[0], ended.append)
    try:
        for name in names:
            engine.sdk.containers.create(image, entrypoint=["true"], name=name, labels={label: name}).start()
        deadline = time.monotonic() + 30
        while not ended and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ended == [names[0]]  # only the container of this label's value
    finally:
        stop_watching()
        for name in names:
            engine.remove_container(name)
