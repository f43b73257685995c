"""plan_push and the ECR repository settings: pure, compared whole."""

from __future__ import annotations

import pytest

from smimg import ship as push
from smimg.adapters import ecr
from smimg.engine import Image
from smimg.errors import PushError
from smimg.refs import ImageRef, ecr_registry
from smimg.ship.plan import RepositorySettings
from smimg.spec import PushSpec
from smimg_entrypoint.contract import LABEL_CONTENT_HASH as CONTENT_HASH_LABEL

ATTRS = {
    "Id": "sha256:" + "1" * 64,
    "Os": "linux",
    "Architecture": "amd64",
    "Config": {"Labels": {CONTENT_HASH_LABEL: "f" * 64}},
}
ECR = push.PushTarget("111122223333.dkr.ecr.eu-west-1.amazonaws.com", "team/trainer")
OCI = push.PushTarget("registry.example.com:5000", "ml/trainer")


def test_ecr_plan_whole() -> None:
    plan = push.plan_push(
        source="team/trainer:ffffffffffff",
        image=Image.from_inspect(ATTRS),
        target=ECR,
        push_spec=PushSpec(mutable_tags=("latest", "dev-*"), lifecycle={"keep_last": 10}),  # type: ignore[arg-type]
        extra_tags=["latest", "dev-alice", "latest"],
    )
    assert plan.as_dict() == {
        "source": "team/trainer:ffffffffffff",
        "image_id": "sha256:" + "1" * 64,
        "refs": [
            "111122223333.dkr.ecr.eu-west-1.amazonaws.com/team/trainer:ffffffffffff",
            "111122223333.dkr.ecr.eu-west-1.amazonaws.com/team/trainer:latest",
            "111122223333.dkr.ecr.eu-west-1.amazonaws.com/team/trainer:dev-alice",
        ],
        "ecr": {"account": "111122223333", "region": "eu-west-1"},
        "repository": {
            "name": "team/trainer",
            "mutable_tags": ("latest", "dev-*"),
            "scan_on_push": True,
            "kms_key": None,
            "untagged_days": 7,
            "keep_last": 10,
        },
        "force": False,
    }


def test_a_human_tag_that_could_never_move_is_refused_before_any_upload() -> None:
    with pytest.raises(PushError) as caught:
        push.plan_push(
            source="x:1", image=Image.from_inspect(ATTRS), target=ECR, push_spec=PushSpec(), extra_tags=["latest"]
        )
    assert "'latest' could never move again" in caught.value.message
    assert "mutable_tags: [latest]" in caught.value.hint
    # Other registries have no immutability: the same tag is fine there.
    assert push.plan_push(
        source="x:1", image=Image.from_inspect(ATTRS), target=OCI, push_spec=PushSpec(), extra_tags=["latest"]
    ).tags == (
        "ffffffffffff",
        "latest",
    )


def test_arm64_and_untagged_foreign_images_are_refused() -> None:
    with pytest.raises(PushError, match="linux/arm64 image; SageMaker training runs linux/amd64"):
        push.plan_push(
            source="x:1", image=Image.from_inspect({**ATTRS, "Architecture": "arm64"}), target=OCI, push_spec=PushSpec()
        )
    foreign = {"Id": "sha256:" + "2" * 64, "Config": {"Labels": {}}}
    with pytest.raises(PushError, match="no smimg content tag"):
        push.plan_push(source="ubuntu", image=Image.from_inspect(foreign), target=OCI, push_spec=PushSpec())
    assert push.plan_push(
        source="ubuntu:v7", image=Image.from_inspect(foreign), target=OCI, push_spec=PushSpec()
    ).tags == ("v7",)


def test_lifecycle_policy_and_the_off_switch() -> None:
    settings = push.plan.repository_settings("r", PushSpec(lifecycle={"untagged_days": 3, "keep_last": 20}))  # type: ignore[arg-type]
    assert settings.lifecycle_policy() == {
        "rules": [
            {
                "description": "expire untagged images 3 days after push",
                "selection": {
                    "tagStatus": "untagged",
                    "countType": "sinceImagePushed",
                    "countUnit": "days",
                    "countNumber": 3,
                },
                "rulePriority": 1,
                "action": {"type": "expire"},
            },
            {
                "description": "keep the 20 most recent images",
                "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 20},
                "rulePriority": 2,
                "action": {"type": "expire"},
            },
        ]
    }
    off = push.plan.repository_settings("r", PushSpec(lifecycle={"enabled": False}))  # type: ignore[arg-type]
    assert off.lifecycle_policy() is None
    assert RepositorySettings("r", kms_key="alias/ml").encryption() == {
        "encryptionType": "KMS",
        "kmsKey": "alias/ml",
    }


def test_registry_host_and_repository_path() -> None:
    assert ecr_registry("111122223333", "cn-north-1") == "111122223333.dkr.ecr.cn-north-1.amazonaws.com.cn"
    assert ImageRef.parse("localhost:5000/a/b:1").path == "a/b"
    assert ImageRef.parse("smimg-test/push:abc").path == "smimg-test/push"


def test_ecr_tokens_are_renewed_before_they_run_out() -> None:
    import datetime

    now = datetime.datetime.now(datetime.timezone.utc)
    assert ecr.RegistryAuth("r", "AWS", "p", now + datetime.timedelta(minutes=5)).expired()
    assert not ecr.RegistryAuth("r", "AWS", "p", now + datetime.timedelta(hours=11)).expired()
