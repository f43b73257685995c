"""The base image: framework versions resolved to a Hugging Face DLC URI, or an explicit reference.

Resolution uses the SageMaker SDK's own image-URI tables (v3 ``sagemaker.core.image_uris``, else v2
``sagemaker.image_uris``), offline. Its errors already list the valid choices; they are passed on as spec problems.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass

from smimg.errors import BaseImageError, Problem, SpecError
from smimg.spec import BaseSpec

logger = logging.getLogger(__name__)

# Any GPU instance selects the GPU DLC; the HF training tables list GPU images only.
_GPU_INSTANCE = "ml.g5.2xlarge"
_ECR_HOST = re.compile(r"^(?P<account>[0-9]{12})\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(?:\.cn)?$")


@dataclass(frozen=True)
class ResolvedBase:
    """The base image reference and, when it lives in ECR, the registry's account and region."""

    ref: str
    ecr_account: str | None = None
    ecr_region: str | None = None

    @property
    def registry(self) -> str | None:
        head = self.ref.split("/", 1)[0]
        return head if "/" in self.ref and ("." in head or ":" in head) else None


def ecr_location(ref: str) -> tuple[str, str] | None:
    """(account, region) when ``ref`` is in a private ECR registry."""
    head = ref.split("/", 1)[0]
    match = _ECR_HOST.match(head)
    return (match["account"], match["region"]) if match else None


def default_region() -> str | None:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")


def resolve_base(base: BaseSpec, source: str = "smimg.yaml") -> ResolvedBase:
    """Turn the spec's base into an image reference.

    Raises:
        SpecError: unknown framework versions or region (listing the valid ones), or no region at all.
    """
    if base.image is not None:
        location = ecr_location(base.image)
        return ResolvedBase(base.image, *(location or (None, None)))
    region = base.region or default_region()
    if region is None:
        raise SpecError(
            source, [Problem("base.region", "no region for the DLC registry", "set base.region or AWS_REGION")]
        )
    retrieve = _retrieve_function()
    try:
        uri = retrieve(
            framework="huggingface",
            region=region,
            version=base.transformers,
            base_framework_version=f"pytorch{base.pytorch}",
            py_version=base.python,
            instance_type=_GPU_INSTANCE,
            image_scope="training",
        )
    except ValueError as exc:
        raise SpecError(source, [_problem_from_sdk(str(exc))]) from None
    location = ecr_location(uri)
    return ResolvedBase(uri, *(location or (None, None)))


def _problem_from_sdk(text: str) -> Problem:
    field = "base"
    for needle, name in (
        ("huggingface version", "base.transformers"),
        ("base framework", "base.pytorch"),
        ("Python version", "base.python"),
        ("region", "base.region"),
    ):
        if needle in text:
            field = name
            break
    message, _, choices = text.partition("Supported ")
    message = message.split(" You may need")[0].strip()
    return Problem(field, message, f"supported {choices.rstrip('.')}" if choices else "check the SDK's tables")


def _retrieve_function() -> Callable[..., str]:
    # The SDK prints config notices at INFO on import and warns about v2's deprecation: neither is ours to show.
    os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")
    logging.getLogger("sagemaker.config").setLevel(logging.WARNING)
    try:
        from sagemaker.core import image_uris  # SDK v3
    except ImportError:
        try:
            from sagemaker import image_uris  # SDK v2
        except ImportError:
            raise BaseImageError(
                "resolving framework versions needs the SageMaker Python SDK, which is not installed",
                "pip install 'smimg[sagemaker]', or set base.image to an image reference",
            ) from None
    retrieve: Callable[..., str] = image_uris.retrieve
    return retrieve
