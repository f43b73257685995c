"""`smimg launch`'s image preflight against moto's ECR: the image SageMaker would pull, checked and pinned."""

from __future__ import annotations

import json

import pytest

from smimg import cloud
from smimg.adapters import aws, registry
from smimg.errors import LaunchError
from tests.conftest import Moto

pytestmark = pytest.mark.aws

ECR = "123456789012.dkr.ecr.us-east-1.amazonaws.com"
CONFIG = "sha256:" + "cd" * 32


def put(repository: str, tag: str, body: dict[str, object], media_type: str) -> str:
    client = aws.client("ecr", "us-east-1")
    client.create_repository(repositoryName=repository)
    client.put_image(
        repositoryName=repository, imageManifest=json.dumps(body), imageManifestMediaType=media_type, imageTag=tag
    )
    return str(
        client.describe_images(repositoryName=repository, imageIds=[{"imageTag": tag}])["imageDetails"][0][
            "imageDigest"
        ]
    )


def docker_manifest(config: str = CONFIG) -> dict[str, object]:
    blob = "application/vnd.docker.container.image.v1+json"
    return {
        "schemaVersion": 2,
        "mediaType": registry.DOCKER_MANIFEST,
        "config": {"mediaType": blob, "size": 2, "digest": config},
        "layers": [],
    }


def test_a_tag_is_pinned_to_the_digest_ecr_holds(aws_env: Moto) -> None:
    digest = put("team/bert", "v1", docker_manifest(), registry.DOCKER_MANIFEST)
    said: list[str] = []
    pinned = cloud.pin_image(f"{ECR}/team/bert:v1", "us-east-1", said.append)
    assert pinned == f"{ECR}/team/bert@{digest}"
    assert said == [f"smimg: {ECR}/team/bert:v1 is {digest}: the job runs that image, however the tag moves"]
    # Already pinned: checked, kept as it is, nothing said.
    assert cloud.pin_image(pinned, "us-east-1", said.append) == pinned and len(said) == 1


def test_an_image_another_account_holds_is_refused_with_what_its_pull_would_need(aws_env: Moto) -> None:
    with pytest.raises(LaunchError, match="is not in ECR") as refused:  # moto keeps no other account's images
        cloud.pin_image("111111111111.dkr.ecr.us-east-1.amazonaws.com/team/shared:v1", "us-east-1", print)
    assert refused.value.hint.startswith(
        "the image is in account 111111111111's ECR and the job runs in 123456789012: SageMaker pulls it only if that "
        "repository's policy lets account 123456789012 pull"
    )


def test_what_sagemaker_cannot_pull_is_refused_before_a_job_exists(aws_env: Moto) -> None:
    with pytest.raises(LaunchError, match=r"team/absent:v1 is not in ECR: SageMaker could not pull it"):
        cloud.pin_image(f"{ECR}/team/absent:v1", "us-east-1", print)
    put("team/base", "v1", docker_manifest(), registry.DOCKER_MANIFEST)
    with pytest.raises(LaunchError, match=r"team/base:v2 is not in ECR"):
        cloud.pin_image(f"{ECR}/team/base:v2", "us-east-1", print)
    index = {
        "schemaVersion": 2,
        "mediaType": registry.OCI_INDEX,
        "manifests": [
            {
                "mediaType": registry.OCI_MANIFEST,
                "digest": "sha256:" + "01" * 32,
                "size": 1,
                "platform": {"os": "linux", "architecture": "amd64"},
            },
            {
                "mediaType": registry.OCI_MANIFEST,
                "digest": "sha256:" + "02" * 32,
                "size": 1,
                "platform": {"os": "unknown", "architecture": "unknown"},
            },
        ],
    }
    put("team/multi", "v1", index, registry.OCI_INDEX)
    with pytest.raises(
        LaunchError, match=r"is an image index \(linux/amd64, unknown/unknown\): SageMaker pulls only a single-platform"
    ):
        cloud.pin_image(f"{ECR}/team/multi:v1", "us-east-1", print)
    with pytest.raises(LaunchError, match=r"^the image is in ECR in us-east-1 and the job would run in eu-west-1"):
        cloud.pin_image(f"{ECR}/team/base:v1", "eu-west-1", print)
    with pytest.raises(LaunchError, match=r"is not an image in ECR"):
        cloud.pin_image("ghcr.io/team/base:v1", "us-east-1", print)


def test_an_image_for_another_platform_is_refused_when_it_is_on_this_machine(aws_env: Moto) -> None:
    from smimg.engine import Image
    from tests.fakes import FakeEngine

    engine = FakeEngine()
    engine.images[CONFIG] = Image.from_inspect({"Id": CONFIG, "Os": "linux", "Architecture": "arm64"})
    put("team/arm", "v1", docker_manifest(), registry.DOCKER_MANIFEST)
    with pytest.raises(LaunchError, match=r"is a linux/arm64 image: SageMaker's instances run linux/amd64"):
        cloud.pin_image(f"{ECR}/team/arm:v1", "us-east-1", print, engine)
