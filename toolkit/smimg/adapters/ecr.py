"""ECR through boto3: registry credentials, and what a repository holds (image digests, manifests).

Every call goes through ``smimg.adapters.aws.call``, so every AWS failure is an ``AwsError`` naming the call, the
permission and what to do about it.
"""

from __future__ import annotations

import base64
import datetime
import json
from dataclasses import dataclass
from typing import Any

from smimg.adapters.aws import call, client
from smimg.refs import ecr_registry


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
        registry=ecr_registry(account, region),
        username=username,
        password=password,
        expires_at=expires if isinstance(expires, datetime.datetime) else None,
    )


def image_digest(ecr: Any, repository: str, tag: str, registry_id: str | None = None) -> str | None:
    """The digest that ``tag`` points to in an ECR repository (in ``registry_id``'s registry, default the
    caller's), or None when there is no such tag or repository."""
    where = {"registryId": registry_id} if registry_id else {}
    found = call(
        ecr.describe_images,
        f"look up {repository}:{tag} in ECR",
        missing=frozenset({"ImageNotFoundException", "RepositoryNotFoundException"}),
        repositoryName=repository,
        imageIds=[{"imageTag": tag}],
        **where,
    )
    details = found["imageDetails"] if found else []
    return str(details[0]["imageDigest"]) if details else None


def manifest(
    ecr: Any, repository: str, digest: str, media_types: list[str], registry_id: str | None = None
) -> tuple[str, dict[str, Any]] | None:
    """The media type and body of the manifest ECR holds for ``digest`` (in ``registry_id``'s registry, default
    the caller's); None when it holds none."""
    where = {"registryId": registry_id} if registry_id else {}
    found = call(
        ecr.batch_get_image,
        f"read the manifest of {repository}@{digest}",
        missing=frozenset({"RepositoryNotFoundException"}),
        repositoryName=repository,
        imageIds=[{"imageDigest": digest}],
        acceptedMediaTypes=media_types,
        **where,
    )
    images = found["images"] if found else []
    if not images:
        return None
    body: dict[str, Any] = json.loads(images[0]["imageManifest"])
    return str(images[0].get("imageManifestMediaType") or body.get("mediaType", "")), body
