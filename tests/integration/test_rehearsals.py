"""The cloud's conditions rehearsed with real containers: a spot reclaim and resume, MaxRuntimeInSeconds, network
isolation."""

from __future__ import annotations

import json
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from smimg import local
from smimg.adapters.docker_engine import default_engine
from tests.conftest import SMIMG, smimg_cli

pytestmark = pytest.mark.docker

FIXTURES = Path(__file__).parent.parent / "fixtures"
RESUME = FIXTURES / "resume"


@pytest.fixture(scope="module")
def image(job_image: str) -> str:
    return job_image


def models(path: Path) -> dict[str, dict[str, object]]:
    with tarfile.open(path) as archive:
        return {
            name: json.load(archive.extractfile(name))  # type: ignore[arg-type]
            for name in archive.getnames()
            if name.endswith(".json")
        }


def test_a_spot_reclaim_restarts_the_job_which_resumes_from_its_checkpoints(image: str, tmp_path: Path) -> None:
    conditions = local.Conditions(spot_interrupt_after=6, stop_grace=20, checkpoints=tmp_path / "ckpt")
    job = local.make_job(
        image,
        instances=2,
        source_dir=RESUME,
        entry_point="resume.py",
        hyperparameters=["steps=60"],
        env=["SMIMG_LAUNCHER=python"],
        conditions=conditions,
    )
    lines: list[str] = []
    result = local.run(local.plan_job(job, tmp_path / "run"), output=tmp_path / "out", on_line=lines.append)

    assert result.ok, "\n".join(lines)
    first, second = result.attempts
    assert first.ended_by == local.INTERRUPTED and first.stop_seconds is not None and first.stop_seconds < 15
    assert first.checkpoints == ("algo-1.json", "algo-2.json") == second.restored
    assert second.ended_by is None
    final = models(tmp_path / "out" / "model.tar.gz")
    for host in ("algo-1", "algo-2"):
        # The second attempt began where the first one's SIGTERM handler saved, and counted on to the end.
        assert final[f"{host}.json"]["steps"] == 60 and 0 < int(final[f"{host}.json"]["resumed_from"]) < 60  # type: ignore[call-overload]
        assert json.loads((tmp_path / "ckpt" / f"{host}.json").read_text()) == {"step": 60}
    assert (
        sum(
            line.endswith(f"SAVED {h} step={final[f'{h}.json']['resumed_from']}")
            for line in lines
            for h in ("algo-1", "algo-2")
        )
        == 2
    )


@pytest.mark.aws
def test_an_s3_checkpoint_location_is_restored_into_every_host_and_updated_after(
    image: str, aws_env: object, tmp_path: Path
) -> None:
    import boto3

    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="ckpt")
    # What an earlier run (or the cloud) left: each host's step, and a file no host changes.
    seeded = {"run/algo-1.json": {"step": 50}, "run/algo-2.json": {"step": 40}, "run/notes/keep.json": {"k": 1}}
    seeded["run-old/algo-1.json"] = {"step": 99}  # another location that shares the prefix's text: not restored
    for key, body in seeded.items():
        s3.put_object(Bucket="ckpt", Key=key, Body=json.dumps(body).encode())
    uploaded = {key: s3.head_object(Bucket="ckpt", Key=key)["LastModified"] for key in seeded}
    time.sleep(1)  # LastModified has whole seconds
    cli = smimg_cli(
        "local", "run", image, "-n", "2", "--source-dir", str(RESUME), "--entry-point", "resume.py",
        "--hp", "steps=60", "--env", "SMIMG_LAUNCHER=python", "--checkpoints", "s3://ckpt/run",
        "--output", str(tmp_path / "out"), "--job-name", "smimg-test-s3-checkpoints",
    )  # fmt: skip
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert "3 checkpoint file(s) from s3://ckpt/run" in cli.stderr
    assert "checkpoints kept in s3://ckpt/run (pass it again to resume)" in cli.stderr
    final = models(tmp_path / "out" / "model.tar.gz")
    assert {name: (m["resumed_from"], m["steps"]) for name, m in final.items()} == {
        "algo-1.json": (50, 60),
        "algo-2.json": (40, 60),
    }

    def stored(key: str) -> dict[str, object]:
        return json.loads(s3.get_object(Bucket="ckpt", Key=key)["Body"].read())  # type: ignore[no-any-return]

    assert stored("run/algo-1.json") == stored("run/algo-2.json") == {"step": 60}
    assert stored("run/notes/keep.json") == {"k": 1}
    # Only what the job changed goes up; a file restored unchanged is not uploaded again.
    assert s3.head_object(Bucket="ckpt", Key="run/notes/keep.json")["LastModified"] == uploaded["run/notes/keep.json"]


@pytest.mark.aws
def test_an_s3_checkpoint_location_that_cannot_be_read_stops_the_job_before_it_starts(
    image: str, aws_env: object, tmp_path: Path
) -> None:
    cli = smimg_cli(
        "local", "run", image, "--checkpoints", "s3://no-such-bucket/run", "--job-name", "smimg-test-s3-missing",
        "--output", str(tmp_path / "out"),
    )  # fmt: skip
    assert cli.returncode == 1, cli.stdout + cli.stderr
    assert "could not restore the checkpoints of s3://no-such-bucket/run" in cli.stderr, cli.stderr
    assert "NoSuchBucket" in cli.stderr and "Traceback" not in cli.stderr
    assert not default_engine().sdk.containers.list(all=True, filters={"name": "smimg-test-s3-missing"})


def test_max_run_stops_every_host_saves_the_model_and_reports_max_runtime_exceeded(image: str, tmp_path: Path) -> None:
    started = time.monotonic()
    cli = smimg_cli(
        "local", "run", image, "-n", "2", "--source-dir", str(RESUME), "--entry-point", "resume.py",
        "--hp", "steps=100000", "--env", "SMIMG_LAUNCHER=python", "--max-run", "5", "--stop-grace", "20",
        "--output", str(tmp_path / "out"), "--job-name", "smimg-test-max-run",
    )  # fmt: skip
    assert cli.returncode == 124, cli.stdout + cli.stderr
    assert time.monotonic() - started < 60
    assert "stopped (MaxRuntimeExceeded)" in cli.stderr and "SIGTERM to every host" in cli.stderr
    final = models(tmp_path / "out" / "model.tar.gz")  # SageMaker uploads the model of a job stopped at its limit
    assert {name: model["stopped"] for name, model in final.items()} == {"algo-1.json": True, "algo-2.json": True}


def test_network_isolation_lets_hosts_train_together_and_nothing_out(image: str, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "data.txt").write_text("isolated\n")
    job = local.make_job(
        image, instances=2, inputs=[f"train={data}"], conditions=local.Conditions(network_isolation=True)
    )
    lines: list[str] = []
    result = local.run(local.plan_job(job, tmp_path / "run"), output=tmp_path / "out", on_line=lines.append)
    assert result.ok, "\n".join(lines)
    assert result.seconds < 60, "\n".join(lines)  # no 20 s name lookups on the internal network
    assert sum("sum=10.0" in line for line in lines) == 4

    code = tmp_path / "code"
    code.mkdir()
    (code / "fetch.py").write_text(
        'import urllib.request\nurllib.request.urlopen("https://pypi.org/simple/", timeout=20)\n'
    )
    cli = smimg_cli(
        "local", "run", image, "--source-dir", str(code), "--entry-point", "fetch.py", "--network-isolation",
        "--env", "SMIMG_LAUNCHER=python", "--output", str(tmp_path / "out2"),
    )  # fmt: skip
    assert cli.returncode != 0, cli.stdout + cli.stderr
    assert "--network-isolation" in cli.stderr and "pip install or a download" in cli.stderr, cli.stderr


def test_a_job_running_elsewhere_is_listed_and_stopped_with_its_results_saved(image: str, tmp_path: Path) -> None:
    name = "smimg-test-elsewhere"
    elsewhere = subprocess.Popen(
        [*SMIMG, "local", "run", image, "-n", "2", "--source-dir", str(RESUME), "--entry-point", "resume.py",
         "--hp", "steps=100000", "--env", "SMIMG_LAUNCHER=python", "--job-name", name,
         "--output", str(tmp_path / "out")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60

        def listed() -> list[dict[str, object]]:
            return [job for job in json.loads(smimg_cli("local", "ps", "--json").stdout) if job["name"] == name]

        while not listed():
            assert time.monotonic() < deadline and elsewhere.poll() is None, elsewhere.communicate()[0]
            time.sleep(0.5)
        assert [(job["pid"], job["hosts"]) for job in listed()] == [(elsewhere.pid, 2)]
        time.sleep(3)  # into training
        stopped = smimg_cli("local", "stop", name)
        assert stopped.returncode == 0, stopped.stderr
        assert f"stopped {name} as Ctrl-C would: output.tar.gz and checkpoints in {tmp_path / 'out'}" in stopped.stderr
    finally:
        try:  # its lock goes a moment before the process ends
            output = elsewhere.communicate(timeout=30)[0]
        except subprocess.TimeoutExpired:
            elsewhere.kill()
            output = elsewhere.communicate(timeout=30)[0]
    assert elsewhere.returncode == 143, output
    assert not any(job["name"] == name for job in json.loads(smimg_cli("local", "ps", "--json").stdout))
    assert (tmp_path / "out" / "output.tar.gz").is_file()
    names = default_engine().sdk.containers.list(all=True, filters={"name": name})
    assert names == []
