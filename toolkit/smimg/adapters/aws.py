"""AWS through boto3: clients, the one error mapping, the one region resolver, and S3 transfers.

Clients come from the standard credential chain (environment, profiles, SSO, instance roles) and honour
``AWS_ENDPOINT_URL[_<SERVICE>]``. Every failure — of a call, or of a page a paginator fetches lazily — becomes an
``AwsError`` naming what we were doing and what to do about it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from smimg.errors import AwsError

CREDENTIALS_HINT = (
    "configure AWS credentials (`aws configure`, `aws sso login`, AWS_PROFILE, or AWS_ACCESS_KEY_ID/"
    "AWS_SECRET_ACCESS_KEY)"
)
_DENIED = {"AccessDeniedException", "AccessDenied", "UnrecognizedClientException"}
# Codes that mean "not now" (botocore's own retries already spent): a watch backs off and asks again.
_TRANSIENT = {
    "ThrottlingException",
    "Throttling",
    "ThrottledException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "RequestThrottled",
    "RequestThrottledException",
    "SlowDown",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "InternalFailure",
    "InternalServerError",
}


def client(service: str, region: str | None) -> Any:
    import boto3

    return boto3.session.Session(region_name=region).client(service)


def configured_region() -> str | None:
    """The region of the standard chain: AWS_REGION, AWS_DEFAULT_REGION, then the profile's config."""
    import boto3

    region: str | None = os.environ.get("AWS_REGION") or boto3.session.Session().region_name
    return region


def call(method: Callable[..., Any], doing: str, *, missing: frozenset[str] = frozenset(), **kwargs: Any) -> Any:
    """Call one boto3 method; error codes in ``missing`` mean "there is no such thing" and return None.

    Raises:
        AwsError: any other failure, naming ``doing``, the permission (``service:Action``) and the fix.
    """
    with _mapped(method, doing, missing):
        return method(**kwargs)
    return None


def paginate(
    client: Any, operation: str, doing: str, *, missing: frozenset[str] = frozenset(), **kwargs: Any
) -> Iterator[dict[str, Any]]:
    """The pages of a paginated operation; errors while fetching any page are mapped like ``call``'s (codes in
    ``missing`` end the pages)."""
    method = getattr(client, operation)
    pages = iter(client.get_paginator(operation).paginate(**kwargs))
    while True:
        page = None
        with _mapped(method, doing, missing):
            page = next(pages, None)
        if page is None:
            return
        yield page


def download_file(s3: Any, bucket: str, key: str, destination: Path) -> None:
    call(s3.download_file, f"download s3://{bucket}/{key}", Bucket=bucket, Key=key, Filename=str(destination))


def split_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/prefix`` as (bucket, prefix); the prefix may be empty."""
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    return bucket, prefix


def download_prefix(uri: str, into: Path) -> int:
    """Every object under an ``s3://`` prefix into a folder, keys relative to the prefix; the count.

    Raises:
        AwsError: listing or a download failed.
    """
    bucket, prefix = split_s3_uri(uri)
    s3 = client("s3", None)
    count = 0
    for page in paginate(s3, "list_objects_v2", f"list {uri}", Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            key = item["Key"]
            if key.endswith("/"):
                continue  # a folder marker the console creates, not a file
            relative = key[len(prefix) :].lstrip("/") or Path(key).name
            destination = into / relative
            destination.parent.mkdir(parents=True, exist_ok=True)
            download_file(s3, bucket, key, destination)
            count += 1
    return count


def upload_files(folder: Path, relatives: Iterable[str], uri: str) -> int:
    """Files of a folder (paths relative to it) to the same keys under an ``s3://`` prefix; the count.

    Raises:
        AwsError: an upload failed.
    """
    bucket, prefix = split_s3_uri(uri)
    s3 = client("s3", None)
    count = 0
    for relative in relatives:
        key = f"{prefix.rstrip('/')}/{relative}" if prefix else relative
        call(s3.upload_file, f"upload to s3://{bucket}/{key}", Filename=str(folder / relative), Bucket=bucket, Key=key)
        count += 1
    return count


def account_id(region: str) -> str:
    """The account of the caller's credentials, from STS."""
    sts = client("sts", region)
    return str(call(sts.get_caller_identity, "find your AWS account (sts:GetCallerIdentity)")["Account"])


@contextlib.contextmanager
def _mapped(method: Callable[..., Any], doing: str, missing: frozenset[str] = frozenset()) -> Iterator[None]:
    """Turns botocore's exceptions into ``AwsError``; swallows the error codes that mean "missing"."""
    from boto3.exceptions import S3TransferFailedError, S3UploadFailedError
    from botocore.exceptions import BotoCoreError, ClientError, ConnectionError, HTTPClientError, NoCredentialsError

    try:
        yield
    except NoCredentialsError:
        raise AwsError(f"no AWS credentials to {doing}", CREDENTIALS_HINT) from None
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        if code in missing:
            return
        if code in _DENIED or "denied" in code.lower():
            raise AwsError(
                f"AWS refused to {doing}: {code}: {error.get('Message', '')}",
                f"grant your identity {_permission(method)} (or use a profile that has it: AWS_PROFILE)",
            ) from None
        raise AwsError(
            f"could not {doing}: {code}: {error.get('Message', exc)}",
            _hint(code),
            code=code,
            transient=code in _TRANSIENT,
        ) from None
    except BotoCoreError as exc:
        # A connection that failed or timed out may come back; a bad region or parameter will not.
        raise AwsError(
            f"could not {doing}: {exc}",
            "check the region and your network",
            transient=isinstance(exc, (ConnectionError, HTTPClientError)),
        ) from None
    except (S3TransferFailedError, S3UploadFailedError) as exc:  # boto3 transfers wrap the ClientError
        raise AwsError(
            f"could not {doing}: {exc}", "check the bucket and key (`aws s3 ls s3://BUCKET/PREFIX`)"
        ) from None


def _permission(method: Callable[..., Any]) -> str:
    action = "".join(part.title() for part in method.__name__.split("_"))
    meta = getattr(getattr(method, "__self__", None), "meta", None)
    prefix = meta.service_model.signing_name if meta is not None else "aws"
    return f"{prefix}:{action}"


def _hint(code: str) -> str:
    if code in {"NoSuchBucket", "NoSuchKey", "404", "NotFound"}:
        return "check the bucket and key (`aws s3 ls s3://BUCKET/PREFIX`)"
    return "see the AWS message above"
