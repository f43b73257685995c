"""Image references, parsed once: ``[registry[:port]/]path[:tag][@digest]``, and the one rule for "this is ECR".

Pure. Docker's own rule decides whether the first component is a registry: it has a ``.`` or a ``:``, or it is
``localhost``; ``docker.io/library/x`` and ``x`` stay distinct spellings (we never normalise to Docker Hub).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REF = re.compile(
    r"^(?:(?P<registry>[a-zA-Z0-9.-]+(?::[0-9]+)?)/)?"
    rf"(?P<path>{_COMPONENT}(?:/{_COMPONENT})*)"
    r"(?::(?P<tag>[\w][\w.-]{0,127}))?(?:@(?P<digest>sha256:[a-f0-9]{64}))?\Z"
)
_ECR_HOST = re.compile(r"^(?P<account>[0-9]{12})\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(?:\.cn)?\Z")


class InvalidRef(ValueError):
    """Not an image reference; the message quotes it."""


@dataclass(frozen=True)
class ImageRef:
    """One image reference, split into its parts."""

    path: str
    registry: str | None = None
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, text: str) -> ImageRef:
        """Split a reference.

        Raises:
            InvalidRef: ``text`` is not a reference (whitespace, upper case in the path, a bad tag, ...).
        """
        match = _REF.match(text)
        if match is None:
            raise InvalidRef(f"{text!r} is not a valid image reference")
        registry = match["registry"]
        if registry is not None and not ("." in registry or ":" in registry or registry == "localhost"):
            # Docker reads "team/image" as a Docker Hub path, not a registry called "team".
            if not re.fullmatch(_COMPONENT, registry):
                raise InvalidRef(f"{text!r} is not a valid image reference")
            return cls(f"{registry}/{match['path']}", None, match["tag"], match["digest"])
        return cls(match["path"], registry, match["tag"], match["digest"])

    @property
    def repository(self) -> str:
        """``registry/path`` (or ``path``): what the engine calls the repository, without tag or digest."""
        return f"{self.registry}/{self.path}" if self.registry else self.path

    @property
    def tag_or_latest(self) -> str:
        return self.tag or "latest"

    def with_tag(self, tag: str) -> ImageRef:
        return replace(self, tag=tag, digest=None)

    @property
    def ecr(self) -> tuple[str, str] | None:
        """(account, region) when the reference is in a private ECR registry."""
        return ecr_location(self.registry or "")

    def __str__(self) -> str:
        text = self.repository
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def is_valid(text: str) -> bool:
    try:
        ImageRef.parse(text)
    except InvalidRef:
        return False
    return True


def ecr_location(registry: str) -> tuple[str, str] | None:
    """(account, region) when ``registry`` is a private ECR registry host: the one rule for "is this ECR"."""
    match = _ECR_HOST.match(registry)
    return (match["account"], match["region"]) if match else None


def ecr_registry(account: str, region: str) -> str:
    """The registry host of an account's ECR in a region (the inverse of ``ecr_location``)."""
    suffix = ".com.cn" if region.startswith("cn-") else ".com"
    return f"{account}.dkr.ecr.{region}.amazonaws{suffix}"
