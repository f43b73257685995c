"""An ECR repository set up with smimg's governance: created when missing, reported (or updated) when it differs.

Executor side of ``smimg push``; every ECR call goes through ``smimg.adapters.aws.call``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from smimg.adapters.aws import call
from smimg.ship.plan import RepositorySettings


@dataclass(frozen=True)
class RepositoryReport:
    """What ``ensure_repository`` found and did: created, changed, or differences it left alone."""

    name: str
    uri: str
    created: bool
    changed: tuple[str, ...]
    differs: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.__dict__.items()}


def ensure_repository(ecr: Any, settings: RepositorySettings, *, update: bool = False) -> RepositoryReport:
    """Create the repository with ``settings`` when missing; an existing one is changed only when ``update``.

    Raises:
        AwsError: missing credentials or permissions.
    """
    name = settings.name
    found = call(
        ecr.describe_repositories,
        f"look up ECR repository {name}",
        missing=frozenset({"RepositoryNotFoundException"}),
        repositoryNames=[name],
    )
    if found is None:
        return _create(ecr, settings)
    repo = found["repositories"][0]
    differs: list[str] = []
    changed: list[str] = []

    mutability = repo.get("imageTagMutability")
    filters = repo.get("imageTagMutabilityExclusionFilters") or []
    if mutability != settings.mutability or _filter_set(filters) != _filter_set(settings.exclusion_filters()):
        what = f"tag mutability {mutability} {_filter_set(filters) or ''} -> {settings.mutability} " + (
            f"{sorted(settings.mutable_tags)}" if settings.mutable_tags else ""
        )
        if update:
            kwargs: dict[str, Any] = {"repositoryName": name, "imageTagMutability": settings.mutability}
            if settings.mutable_tags:
                kwargs["imageTagMutabilityExclusionFilters"] = settings.exclusion_filters()
            call(ecr.put_image_tag_mutability, f"set tag mutability on {name}", **kwargs)
        (changed if update else differs).append(what.strip())

    scan = bool(repo.get("imageScanningConfiguration", {}).get("scanOnPush"))
    if scan != settings.scan_on_push:
        if update:
            call(
                ecr.put_image_scanning_configuration,
                f"set scan on push on {name}",
                repositoryName=name,
                imageScanningConfiguration={"scanOnPush": settings.scan_on_push},
            )
        (changed if update else differs).append(f"scan on push {scan} -> {settings.scan_on_push}")

    wanted = settings.lifecycle_policy()
    if wanted is not None:
        current = _lifecycle(ecr, name)
        if current != wanted:
            if update:
                call(
                    ecr.put_lifecycle_policy,
                    f"put a lifecycle policy on {name}",
                    repositoryName=name,
                    lifecyclePolicyText=json.dumps(wanted),
                )
            (changed if update else differs).append(
                "lifecycle policy " + ("set" if current is None else "replaced") + " (" + _describe(wanted) + ")"
            )

    encryption = repo.get("encryptionConfiguration", {})
    if encryption.get("encryptionType") != settings.encryption()["encryptionType"]:
        differs.append(
            f"encryption {encryption.get('encryptionType')} (wanted {settings.encryption()['encryptionType']}; "
            "ECR cannot change it after creation)"
        )
    return RepositoryReport(name, repo["repositoryUri"], False, tuple(changed), tuple(differs))


def _create(ecr: Any, settings: RepositorySettings) -> RepositoryReport:
    kwargs: dict[str, Any] = {
        "repositoryName": settings.name,
        "imageTagMutability": settings.mutability,
        "imageScanningConfiguration": {"scanOnPush": settings.scan_on_push},
        "encryptionConfiguration": settings.encryption(),
        "tags": [{"Key": "created-by", "Value": "smimg"}],
    }
    if settings.mutable_tags:
        kwargs["imageTagMutabilityExclusionFilters"] = settings.exclusion_filters()
    repo = call(ecr.create_repository, f"create ECR repository {settings.name}", **kwargs)["repository"]
    changed = [
        f"tag mutability {settings.mutability}"
        + (f" (movable: {', '.join(settings.mutable_tags)})" if settings.mutable_tags else ""),
        f"scan on push {settings.scan_on_push}",
        f"encryption {settings.encryption()['encryptionType']}",
    ]
    policy = settings.lifecycle_policy()
    if policy is not None:
        call(
            ecr.put_lifecycle_policy,
            f"put a lifecycle policy on {settings.name}",
            repositoryName=settings.name,
            lifecyclePolicyText=json.dumps(policy),
        )
        changed.append(f"lifecycle policy ({_describe(policy)})")
    return RepositoryReport(settings.name, repo["repositoryUri"], True, tuple(changed), ())


def _filter_set(filters: list[dict[str, str]]) -> set[str]:
    return {f["filter"] for f in filters}


def _describe(policy: dict[str, Any]) -> str:
    return "; ".join(rule["description"] for rule in policy["rules"])


def _lifecycle(ecr: Any, name: str) -> dict[str, Any] | None:
    found = call(
        ecr.get_lifecycle_policy,
        f"read the lifecycle policy of {name}",
        missing=frozenset({"LifecyclePolicyNotFoundException"}),
        repositoryName=name,
    )
    if found is None:
        return None
    policy: dict[str, Any] = json.loads(found["lifecyclePolicyText"])
    return policy
