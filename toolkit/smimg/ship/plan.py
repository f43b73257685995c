"""What ``smimg push`` will do, decided purely: the target, the tags, the ECR repository settings.

``plan_push`` takes the local image's facts and a target and returns a frozen ``PushPlan`` (what ``--dry-run``
prints); a tag that an immutable repository would freeze is refused here, before any upload.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from smimg.build.plan import content_tag_of
from smimg.engine import Image
from smimg.errors import PushError
from smimg.refs import ImageRef, ecr_location
from smimg.spec import PushSpec
from smimg_entrypoint import contract


@dataclass(frozen=True)
class RepositorySettings:
    """How smimg sets up an ECR repository. ``lifecycle`` is None when the user switched the policy off."""

    name: str
    mutable_tags: tuple[str, ...] = ()
    scan_on_push: bool = True
    kms_key: str | None = None
    untagged_days: int | None = 7
    keep_last: int | None = 50

    @property
    def mutability(self) -> str:
        # Content tags never move, so immutability costs nothing; humans name the tags that may move.
        return "IMMUTABLE_WITH_EXCLUSION" if self.mutable_tags else "IMMUTABLE"

    def exclusion_filters(self) -> list[dict[str, str]]:
        return [{"filterType": "WILDCARD", "filter": tag} for tag in self.mutable_tags]

    def encryption(self) -> dict[str, str]:
        if self.kms_key:
            return {"encryptionType": "KMS", "kmsKey": self.kms_key}
        return {"encryptionType": "AES256"}

    def lifecycle_policy(self) -> dict[str, Any] | None:
        rules: list[dict[str, Any]] = []
        if self.untagged_days is not None:
            rules.append(
                {
                    "description": f"expire untagged images {self.untagged_days} days after push",
                    "selection": {
                        "tagStatus": "untagged",
                        "countType": "sinceImagePushed",
                        "countUnit": "days",
                        "countNumber": self.untagged_days,
                    },
                }
            )
        if self.keep_last is not None:
            # ECR requires the tagStatus "any" rule to come last.
            rules.append(
                {
                    "description": f"keep the {self.keep_last} most recent images",
                    "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": self.keep_last},
                }
            )
        for priority, rule in enumerate(rules, start=1):
            rule["rulePriority"] = priority
            rule["action"] = {"type": "expire"}
        return {"rules": rules} if rules else None


@dataclass(frozen=True)
class PushTarget:
    """Where the image goes: ``registry/repository``; an ECR registry host names its account and region."""

    registry: str
    repository: str

    @property
    def is_ecr(self) -> bool:
        return ecr_location(self.registry) is not None

    @property
    def account(self) -> str | None:
        location = ecr_location(self.registry)
        return location[0] if location else None

    @property
    def region(self) -> str | None:
        location = ecr_location(self.registry)
        return location[1] if location else None

    def ref(self, tag: str) -> str:
        return f"{self.registry}/{self.repository}:{tag}"

    def pinned(self, digest: str) -> str:
        return f"{self.registry}/{self.repository}@{digest}"


@dataclass(frozen=True)
class PushPlan:
    source: str
    image_id: str
    target: PushTarget
    tags: tuple[str, ...]
    repository: RepositorySettings | None
    force: bool

    @property
    def content_tag(self) -> str:
        return self.tags[0]

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "image_id": self.image_id,
            "refs": [self.target.ref(t) for t in self.tags],
            "ecr": {"account": self.target.account, "region": self.target.region} if self.target.is_ecr else None,
            "repository": self.repository.__dict__ if self.repository else None,
            "force": self.force,
        }


def launch_snippets(uri: str) -> dict[str, str]:
    """Ready-to-paste launch code for the SageMaker Python SDK v2 and v3."""
    return {
        "sdk_v2": (
            "from sagemaker.estimator import Estimator\n\n"
            "estimator = Estimator(\n"
            f'    image_uri="{uri}",\n'
            '    role="arn:aws:iam::<account>:role/<sagemaker-execution-role>",\n'
            "    instance_count=2,\n"
            '    instance_type="ml.g5.12xlarge",\n'
            '    hyperparameters={"epochs": 1},\n'
            ")\n"
            'estimator.fit({"train": "s3://<bucket>/<prefix>/train"})\n'
        ),
        "sdk_v3": (
            "from sagemaker.train import ModelTrainer\n"
            "from sagemaker.train.configs import Compute, InputData\n\n"
            "trainer = ModelTrainer(\n"
            f'    training_image="{uri}",\n'
            '    role="arn:aws:iam::<account>:role/<sagemaker-execution-role>",\n'
            '    compute=Compute(instance_type="ml.g5.12xlarge", instance_count=2),\n'
            '    hyperparameters={"epochs": 1},\n'
            ")\n"
            'trainer.train(input_data_config=[InputData(channel_name="train", data_source="s3://<bucket>/<prefix>/train")])\n'
        ),
    }


def repository_settings(name: str, push: PushSpec) -> RepositorySettings:
    lifecycle = push.lifecycle
    return RepositorySettings(
        name=name,
        mutable_tags=push.mutable_tags,
        scan_on_push=push.scan_on_push,
        kms_key=push.kms_key,
        untagged_days=lifecycle.untagged_days if lifecycle.enabled else None,
        keep_last=lifecycle.keep_last if lifecycle.enabled else None,
    )


def plan_push(
    *,
    source: str,
    image: Image,
    target: PushTarget,
    push_spec: PushSpec,
    extra_tags: Iterable[str] = (),
    force: bool = False,
) -> PushPlan:
    """Decide what to push where. Pure: ``image`` is what the engine knows of ``source``.

    Raises:
        PushError: the image is not linux/amd64, has no content tag, or a tag could never move in ECR.
    """
    if image.platform != "linux/amd64":
        raise PushError(
            f"{source} is a {image.platform} image; SageMaker training runs linux/amd64",
            "build with platform: linux/amd64 in smimg.yaml",
        )
    content_hash = image.labels.get(contract.LABEL_CONTENT_HASH)
    ref = ImageRef.parse(source)
    if content_hash:
        content_tag = content_tag_of(content_hash)
    elif ref.digest is None and ref.tag_or_latest != "latest":
        content_tag = ref.tag_or_latest
    else:
        raise PushError(
            f"{source} has no smimg content tag and no explicit tag to push under",
            "build it with `smimg build`, or name it with a tag: `smimg push repo:v1`",
        )
    human = tuple(t for t in dict.fromkeys(extra_tags) if t != content_tag)
    settings = repository_settings(target.repository, push_spec) if target.is_ecr else None
    if settings is not None:
        frozen = [t for t in human if not any(fnmatch.fnmatchcase(t, p) for p in settings.mutable_tags)]
        if frozen:
            raise PushError(
                f"tag {frozen[0]!r} could never move again in the tag-immutable ECR repository {target.repository}",
                f"add it to push.mutable_tags in smimg.yaml (e.g. mutable_tags: [{frozen[0]}]) "
                "and run with --update-repository",
            )
    return PushPlan(
        source=source,
        image_id=image.id,
        target=target,
        tags=(content_tag, *human),
        repository=settings,
        force=force,
    )
