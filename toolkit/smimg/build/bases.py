"""The base image: framework versions resolved to a Hugging Face DLC URI, or an explicit reference.

Resolution uses the SageMaker SDK's own image-URI tables (v3 ``sagemaker.core.image_uris``, else v2
``sagemaker.image_uris``), offline. Its errors already list the valid choices; they are passed on as spec problems.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from smimg.adapters.aws import configured_region
from smimg.errors import BaseImageError, Problem, SpecError
from smimg.spec import BaseSpec

# Any GPU instance selects the GPU DLC; the HF training tables list GPU images only.
_GPU_INSTANCE = "ml.g5.2xlarge"


@dataclass(frozen=True)
class ResolvedBase:
    """The base image reference (a DLC in ECR, or any image)."""

    ref: str


def resolve_base(base: BaseSpec, source: str = "smimg.yaml") -> ResolvedBase:
    """Turn the spec's base into an image reference.

    Raises:
        SpecError: unknown framework versions or region (listing the valid ones), or no region at all.
    """
    if base.image is not None:
        return ResolvedBase(base.image)
    region = base.region or configured_region()
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
    return ResolvedBase(uri)


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
