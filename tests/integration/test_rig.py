"""The rig itself: a real engine builds FROM the stand-in, a real registry and moto answer."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

import pytest

from smimg.adapters.docker_engine import default_engine
from smimg.adapters.runner import Runner
from tests.conftest import Moto, Registry


@pytest.mark.docker
def test_build_from_standin_and_import_torch(standin_image: str, tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text(f"FROM {standin_image}\nRUN echo built-on-standin > /marker\n")
    builder = default_engine().builder()
    assert builder.supports_secrets, "the rig must provide a BuildKit-capable client"
    tag = "smimg-test/rig:latest"
    Runner().stream([*builder.build_argv(), "--tag", tag, str(tmp_path)], env=builder.env())
    output = default_engine().sdk.containers.run(
        tag,
        entrypoint=[
            "python",
            "-c",
            "import torch, transformers, accelerate, sagemaker_training; "
            "print(open('/marker').read().strip(), torch.__version__)",
        ],
        remove=True,
    )
    assert output.decode().split() == ["built-on-standin", "2.13.0+cpu"]


@pytest.mark.docker
def test_standin_keeps_the_dlc_shape(standin_image: str) -> None:
    config = default_engine().sdk.images.get(standin_image).attrs["Config"]
    assert config["Entrypoint"] == ["bash", "-m", "start_with_right_hostname.sh"]
    assert config["Cmd"] == ["/bin/bash"]
    assert "SAGEMAKER_TRAINING_MODULE=sagemaker_pytorch_container.training:main" in config["Env"]
    assert any(e.startswith("PATH=/opt/conda/bin:") for e in config["Env"])


@pytest.mark.registry
def test_registry_requires_auth(registry: Registry) -> None:
    with pytest.raises(urllib.error.HTTPError) as denied:
        urllib.request.urlopen(f"http://{registry.host}/v2/")
    assert denied.value.code == 401
    request = urllib.request.Request(f"http://{registry.host}/v2/", headers=registry.auth_header())
    assert urllib.request.urlopen(request).status == 200


@pytest.mark.aws
def test_moto_serves_ecr(aws_env: Moto) -> None:
    import boto3

    ecr = boto3.client("ecr")
    assert aws_env.endpoint in ecr.meta.endpoint_url
    ecr.create_repository(repositoryName="rig-check")
    names = [r["repositoryName"] for r in ecr.describe_repositories()["repositories"]]
    assert "rig-check" in names
