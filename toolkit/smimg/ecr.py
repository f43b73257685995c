"""ECR through boto3: registry credentials for pulls and pushes. Clients come from the standard credential chain."""

from __future__ import annotations

import base64
import logging
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

    def auth_config(self) -> dict[str, str]:
        return {"username": self.username, "password": self.password, "serveraddress": self.registry}


def client(service: str, region: str) -> Any:
    import boto3

    return boto3.session.Session(region_name=region).client(service)


def registry_auth(account: str, region: str, ecr_client: Any = None) -> RegistryAuth:
    """Docker credentials for ``<account>.dkr.ecr.<region>`` from ``GetAuthorizationToken`` (valid 12 hours).

    Raises:
        AwsError: no credentials, or the caller may not read that registry.
    """
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    ecr = ecr_client or client("ecr", region)
    try:
        data = ecr.get_authorization_token(registryIds=[account])["authorizationData"][0]
    except NoCredentialsError:
        raise AwsError(f"no AWS credentials to log in to ECR registry {account} ({region})", CREDENTIALS_HINT) from None
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        raise AwsError(
            f"ECR refused a login token for registry {account} in {region}: {code}: {exc}",
            "check that your identity may call ecr:GetAuthorizationToken in that region",
        ) from None
    except BotoCoreError as exc:
        raise AwsError(f"could not reach ECR in {region}: {exc}", "check the region and your network") from None
    username, _, password = base64.b64decode(data["authorizationToken"]).decode().partition(":")
    registry = f"{account}.dkr.ecr.{region}.amazonaws.com"
    return RegistryAuth(registry=registry, username=username, password=password)
