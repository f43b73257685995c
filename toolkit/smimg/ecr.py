"""ECR through boto3: registry credentials, repositories and their governance, images in a repository.

Clients come from the standard credential chain (environment, profiles, SSO, instance roles); every AWS failure
becomes an ``AwsError`` naming the call and what to do about it.
"""

from __future__ import annotations

import base64
import datetime
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from smimg.errors import AwsError

logger = logging.getLogger(__name__)

CREDENTIALS_HINT = (
    "configure AWS credentials (`aws configure`, `aws sso login`, AWS_PROFILE, or AWS_ACCESS_KEY_ID/"
    "AWS_SECRET_ACCESS_KEY); for a base image you already have locally, use --base IMAGE instead"
)


@dataclass(frozen=True)
class RegistryAuth:
    """Credentials for one registry, kept in memory and handed to the Docker engine per call."""

    registry: str
    username: str
    password: str
    expires_at: datetime.datetime | None = None

    def expired(self, margin: datetime.timedelta = datetime.timedelta(minutes=10)) -> bool:
        now = datetime.datetime.now(datetime.timezone.utc)
        return self.expires_at is not None and self.expires_at - margin <= now

    def auth_config(self) -> dict[str, str]:
        return {"username": self.username, "password": self.password, "serveraddress": self.registry}


def client(service: str, region: str | None) -> Any:
    import boto3

    return boto3.session.Session(region_name=region).client(service)


def registry_auth(account: str, region: str, ecr_client: Any = None) -> RegistryAuth:
    """Docker credentials for ``<account>.dkr.ecr.<region>`` from ``GetAuthorizationToken`` (valid 12 hours).

    Raises:
        AwsError: no credentials, or the caller may not read that registry.
    """
    ecr = ecr_client or client("ecr", region)
    response = call(ecr.get_authorization_token, f"log in to ECR registry {account} ({region})", registryIds=[account])
    data = response["authorizationData"][0]
    username, _, password = base64.b64decode(data["authorizationToken"]).decode().partition(":")
    expires = data.get("expiresAt")
    return RegistryAuth(
        registry=registry_host(account, region),
        username=username,
        password=password,
        expires_at=expires if isinstance(expires, datetime.datetime) else None,
    )


def registry_host(account: str, region: str) -> str:
    suffix = ".com.cn" if region.startswith("cn-") else ".com"
    return f"{account}.dkr.ecr.{region}.amazonaws{suffix}"


def call(method: Callable[..., Any], doing: str, *, missing: frozenset[str] = frozenset(), **kwargs: Any) -> Any:
    """Call one boto3 method; its failures become an ``AwsError`` saying what we were doing and how to fix it.

    Error codes in ``missing`` mean "there is no such thing" and return None.
    """
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    action = "".join(part.title() for part in method.__name__.split("_"))
    meta = getattr(getattr(method, "__self__", None), "meta", None)
    prefix = meta.service_model.signing_name if meta is not None else "ecr"
    try:
        return method(**kwargs)
    except NoCredentialsError:
        raise AwsError(f"no AWS credentials to {doing}", CREDENTIALS_HINT) from None
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code = error.get("Code", "")
        if code in missing:
            return None
        if code in {"AccessDeniedException", "AccessDenied", "UnrecognizedClientException"} or "denied" in code.lower():
            raise AwsError(
                f"AWS refused to {doing}: {code}: {error.get('Message', '')}",
                f"grant your identity {prefix}:{action} (or use a profile that has it: AWS_PROFILE)",
            ) from None
        raise AwsError(f"could not {doing}: {code}: {error.get('Message', exc)}", "see the AWS message above") from None
    except BotoCoreError as exc:
        raise AwsError(f"could not {doing}: {exc}", "check the region and your network") from None


def configured_region() -> str | None:
    """The region of the standard chain (AWS_REGION, AWS_DEFAULT_REGION, the profile's config)."""
    import boto3

    region: str | None = os.environ.get("AWS_REGION") or boto3.session.Session().region_name
    return region


def account_id(region: str) -> str:
    """The account of the caller's credentials, from STS."""
    sts = client("sts", region)
    return str(call(sts.get_caller_identity, "find your AWS account (sts:GetCallerIdentity)")["Account"])


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


def image_digest(ecr: Any, repository: str, tag: str) -> str | None:
    """The digest that ``tag`` points to in an ECR repository, or None when there is no such tag."""
    found = call(
        ecr.describe_images,
        f"look up {repository}:{tag} in ECR",
        missing=frozenset({"ImageNotFoundException", "RepositoryNotFoundException"}),
        repositoryName=repository,
        imageIds=[{"imageTag": tag}],
    )
    details = found["imageDetails"] if found else []
    return str(details[0]["imageDigest"]) if details else None


def manifest(ecr: Any, repository: str, digest: str, media_types: list[str]) -> tuple[str, dict[str, Any]]:
    """The media type and body of the manifest ECR holds for ``digest``."""
    images = call(
        ecr.batch_get_image,
        f"read the manifest of {repository}@{digest}",
        repositoryName=repository,
        imageIds=[{"imageDigest": digest}],
        acceptedMediaTypes=media_types,
    )["images"]
    if not images:
        raise AwsError(f"ECR has no image {repository}@{digest} right after the push", "push again with --force")
    body: dict[str, Any] = json.loads(images[0]["imageManifest"])
    return str(images[0].get("imageManifestMediaType") or body.get("mediaType", "")), body
