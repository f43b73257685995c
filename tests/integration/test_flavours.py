"""The venv flavour of the stand-in (the Amazon Linux 2023 DLC layout): its shape, its own entrypoint's HF
defaults, and an smimg image built on it that passes `smimg check` and trains on 2 hosts."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from smimg import build, images, local
from smimg.adapters.docker_engine import default_engine
from smimg.spec import load_spec
from tests.conftest import smimg_cli

pytestmark = pytest.mark.docker

JOB = Path(__file__).parent.parent / "fixtures" / "job-venv"
HF_DEFAULTS = {"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True", "TOKENIZERS_PARALLELISM": "false"}
SCRIPTS = ("hf_optimizations.sh", "sagemaker_entrypoint.sh", "start_with_right_hostname.sh")


@pytest.fixture(scope="module")
def image(standin_venv_image: str) -> str:
    return build.build(load_spec(JOB, {"base.image": standin_venv_image})).tags[0]


def run_env(ref: str, environment: dict[str, str]) -> dict[str, str]:
    """`env` run through the image's own ENTRYPOINT: a command other than `train` reaches `eval "$@"`."""
    raw = default_engine().sdk.containers.run(ref, ["bash", "-c", "env"], environment=environment, remove=True)
    pairs = (line.partition("=") for line in raw.decode().splitlines())
    return {name: value for name, equals, value in pairs if equals}


def test_venv_flavour_has_the_dlc_shape(standin_venv_image: str) -> None:
    config = default_engine().sdk.images.get(standin_venv_image).attrs["Config"]
    assert config["Entrypoint"] == ["/usr/local/bin/sagemaker_entrypoint.sh"]
    assert config["Cmd"] == ["train"]
    assert config["WorkingDir"] == "/workspace"
    env = dict(e.split("=", 1) for e in config["Env"])
    assert env["PATH"].startswith("/opt/venv/bin:")
    assert env["UV_PROJECT_ENVIRONMENT"] == "/opt/venv"
    assert env["SAGEMAKER_TRAINING_MODULE"] == "sagemaker_pytorch_container.training:main"
    assert env["HF_HUB_USER_AGENT_ORIGIN"] == "aws:sagemaker:gpu-cuda:training:hf-pytorch"
    assert env["DLC_CONTAINER_TYPE"] == "training"
    probe = (
        "test ! -e /opt/conda && echo no-conda; command -v python3; "
        "python3 -m pip --version | cut -d' ' -f4; command -v uv; "
        + "; ".join(f"stat -c %a /usr/local/bin/{name}" for name in SCRIPTS)
    )
    out = default_engine().sdk.containers.run(standin_venv_image, ["-c", probe], entrypoint="sh", remove=True)
    assert out.decode().split() == [
        "no-conda",
        "/opt/venv/bin/python3",
        "/opt/venv/lib/python3.11/site-packages/pip",
        "/usr/local/bin/uv",
        *(["755"] * len(SCRIPTS)),
    ]


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ({}, {**HF_DEFAULTS, "OMP_NUM_THREADS": "1"}),
        ({"TOKENIZERS_PARALLELISM": "true"}, {**HF_DEFAULTS, "TOKENIZERS_PARALLELISM": "true", "OMP_NUM_THREADS": "1"}),
        ({"HF_ENABLE_OPTIMIZATIONS": "0"}, {}),
    ],
    ids=["defaults", "user-value-kept", "switched-off"],
)
def test_the_bases_own_entrypoint_sets_the_hf_defaults(
    standin_venv_image: str, given: dict[str, str], expected: dict[str, str]
) -> None:
    env = run_env(standin_venv_image, given)
    reported = {name: env[name] for name in (*HF_DEFAULTS, "OMP_NUM_THREADS") if name in env}
    assert reported == expected


def test_an_smimg_image_on_it_passes_check(image: str) -> None:
    cli = smimg_cli("check", image)
    assert cli.returncode == 0, cli.stdout + cli.stderr
    info = images.inspect_image(image)
    # The installer used the venv's own pip and left the base's torch alone.
    assert {"tabulate==0.9.0", "torch==2.13.0+cpu"} <= set(info.packages)


def test_two_hosts_train_and_get_the_hf_defaults_under_the_users_env(image: str, tmp_path: Path) -> None:
    lines: list[str] = []
    job = local.make_job(image, instances=2)
    result = local.run(local.plan_job(job, tmp_path / "run"), output=tmp_path / "out", on_line=lines.append)

    assert result.ok, "\n".join(lines)
    with tarfile.open(tmp_path / "out" / "model.tar.gz") as archive:
        model = json.load(archive.extractfile("model.json"))  # type: ignore[arg-type]
    assert (model["sum"], model["world"]) == (10.0, 4)
    ranks = model["env"]
    assert sorted(r["host"] for r in ranks) == ["algo-1", "algo-1", "algo-2", "algo-2"]
    # The spec's env: wins over the HF layer's OMP_NUM_THREADS=1 (and over torchrun's own default of 1).
    assert {r["OMP_NUM_THREADS"] for r in ranks} == {"3"}
    # Needs the smimg entrypoint to source the base's /usr/local/bin/hf_optimizations.sh before torchrun.
    assert [{k: r[k] for k in HF_DEFAULTS} for r in ranks] == [HF_DEFAULTS] * 4, "\n".join(lines)
