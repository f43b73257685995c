"""Ship an image: to ECR (repository set up with governance, auth from boto3) or to any OCI registry.

The executor of a ``PushPlan`` (``smimg.ship.plan``): ensure the repository, skip a content tag the registry already
holds, push through the engine with in-memory credentials and retries, then check that the registry holds one
linux/amd64 Docker v2 manifest of exactly this image.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from smimg import images
from smimg.adapters import aws, ecr, registry
from smimg.adapters.docker_engine import default_engine
from smimg.build.execute import BuildResult
from smimg.engine import Engine
from smimg.errors import Problem, PushError, RegistryAuthError, SpecError
from smimg.refs import ImageRef, ecr_registry
from smimg.ship import PASSWORD_ENV
from smimg.ship.plan import PushPlan, PushTarget, launch_snippets, plan_push
from smimg.ship.repository import RepositoryReport, ensure_repository
from smimg.spec import ImageSpec, LoadedSpec, PushSpec

logger = logging.getLogger(__name__)

RETRIES = 4
RETRY_DELAY = 2.0  # seconds before the first retry; doubles each time
_TRANSIENT = ("timeout", "connection reset", "broken pipe", "eof", "toomanyrequests", "503", "502", "500 ")
_AUTH = ("unauthorized", "authentication required", "no basic auth credentials", "denied", "forbidden", "403")


@dataclass
class LayerTally:
    """What the engine did with each layer during one push."""

    pushed: dict[str, int] = field(default_factory=dict)
    existing: set[str] = field(default_factory=set)

    @property
    def bytes_pushed(self) -> int:
        return sum(self.pushed.values())


@dataclass(frozen=True)
class LayerEvent:
    tag: str
    layer: str
    status: str
    current: int = 0
    total: int = 0


@dataclass(frozen=True)
class PushResult:
    uri: str
    digest: str
    refs: tuple[str, ...]
    skipped: bool
    layers_pushed: int
    layers_existing: int
    bytes_pushed: int
    media_type: str
    repository: RepositoryReport | None
    seconds: float

    def snippets(self) -> dict[str, str]:
        return launch_snippets(self.uri)

    def as_dict(self) -> dict[str, Any]:
        data = {k: v for k, v in self.__dict__.items() if k != "repository"}
        data["refs"] = list(self.refs)
        data["seconds"] = round(self.seconds, 2)
        data["repository"] = self.repository.as_dict() if self.repository else None
        data["snippets"] = self.snippets()
        return data


def resolve_target(
    spec: ImageSpec | None,
    source: str,
    *,
    registry_flag: str | None = None,
    region: str | None = None,
    repository: str | None = None,
) -> PushTarget:
    """The push target from flags, then the spec, then defaults; for ECR the account comes from STS.

    Raises:
        SpecError: no region for ECR.
        AwsError: no credentials.
    """
    push_spec = spec.push if spec else PushSpec()
    name = repository or push_spec.repository or (spec.name if spec else ImageRef.parse(source).path)
    host_ns = registry_flag or push_spec.registry
    if host_ns is not None:
        host, _, namespace = host_ns.partition("/")
        return PushTarget(registry=host, repository=f"{namespace}/{name}" if namespace else name)
    region = region or push_spec.region or (spec.base.region if spec else None) or aws.configured_region()
    if region is None:
        problem = Problem("push.region", "no AWS region for the ECR repository", "pass --region, or set push.region")
        raise SpecError("push target", [problem])
    return PushTarget(registry=ecr_registry(aws.account_id(region), region), repository=name)


def prepare_push(
    source: str,
    spec: ImageSpec | None,
    *,
    registry_flag: str | None = None,
    region: str | None = None,
    repository: str | None = None,
    extra_tags: Iterable[str] = (),
    force: bool = False,
    engine: Engine | None = None,
) -> PushPlan:
    """Inspect the local image, resolve the target and plan the push.

    Raises:
        ImageNotFound: no such local image.
    """
    image = images.require(source, "to push", "build it first (`smimg build`, or `smimg build --push`)", engine)
    target = resolve_target(spec, source, registry_flag=registry_flag, region=region, repository=repository)
    return plan_push(
        source=source,
        image=image,
        target=target,
        push_spec=spec.push if spec else PushSpec(),
        extra_tags=extra_tags,
        force=force,
    )


def prepare_after_build(
    result: BuildResult,
    loaded: LoadedSpec,
    *,
    tags: Iterable[str] = (),
    registry_flag: str | None = None,
    region: str | None = None,
) -> PushPlan:
    """The push of a fresh ``build`` (``smimg build --push``): its content tag, and the human tags among ``tags``
    (full references name other repositories and stay local)."""
    human = [t for t in tags if "/" not in t and ":" not in t]
    return prepare_push(result.tags[0], loaded.spec, registry_flag=registry_flag, region=region, extra_tags=human)


class _Credentials:
    """Registry credentials handed to the engine per call; ECR tokens (12 h) are renewed before they run out."""

    def __init__(self, target: PushTarget, username: str | None, password: str | None) -> None:
        self.target = target
        self.username = username
        self.password = password
        self._ecr: ecr.RegistryAuth | None = None

    def auth_config(self) -> dict[str, str] | None:
        if self.target.account and self.target.region:
            if self._ecr is None or self._ecr.expired():
                self._ecr = ecr.registry_auth(self.target.account, self.target.region)
            return self._ecr.auth_config()
        if self.username is None:
            return None  # the engine's SDK uses what `docker login` stored
        return {"username": self.username, "password": self.password or "", "serveraddress": self.target.registry}


class RegistryView(Protocol):
    """What a registry holds: the digest a tag points to, and a manifest by digest."""

    def digest(self, repository: str, tag: str) -> str | None: ...

    def manifest(self, repository: str, digest: str) -> tuple[str, Mapping[str, Any]] | None: ...


class _EcrView:
    def __init__(self, region: str) -> None:
        self.client = aws.client("ecr", region)

    def digest(self, repository: str, tag: str) -> str | None:
        return ecr.image_digest(self.client, repository, tag)

    def manifest(self, repository: str, digest: str) -> tuple[str, Mapping[str, Any]] | None:
        return ecr.manifest(self.client, repository, digest, registry.MANIFEST_TYPES)


class _OciView:
    def __init__(self, host: str, username: str | None, password: str | None) -> None:
        self.host, self.username, self.password = host, username, password

    @functools.cached_property
    def client(self) -> registry.RegistryClient:
        if self.username is not None:
            return registry.RegistryClient(self.host, self.username, self.password)
        return registry.RegistryClient(self.host, *registry.stored_credentials(self.host))

    def digest(self, repository: str, tag: str) -> str | None:
        found = self.client.manifest(repository, tag)
        return found.digest if found else None

    def manifest(self, repository: str, digest: str) -> tuple[str, Mapping[str, Any]] | None:
        found = self.client.manifest(repository, digest)
        return (found.media_type, found.body) if found else None


def registry_view(target: PushTarget, username: str | None, password: str | None) -> RegistryView:
    if target.region is not None:
        return _EcrView(target.region)
    return _OciView(target.registry, username, password)


def push(
    plan: PushPlan,
    *,
    username: str | None = None,
    password: str | None = None,
    update_repository: bool = False,
    engine: Engine | None = None,
    view: RegistryView | None = None,
    on_event: Callable[[LayerEvent], None] | None = None,
    on_line: Callable[[str], None] | None = None,
) -> PushResult:
    """Execute a push plan.

    Args:
        username, password: for a non-ECR registry; default: what `docker login` stored
            (the password also comes from SMIMG_REGISTRY_PASSWORD).
        update_repository: bring an existing ECR repository's settings in line with the spec.
        engine, view: the engine that pushes and what reads the registry back (default: Docker, and ECR or the
            registry's HTTP API).
        on_event: receives per-layer progress.
        on_line: receives one line per notable step.

    Raises:
        RegistryAuthError: the registry refused the credentials or permissions.
        PushError: the push failed after retries, or the registry holds a manifest SageMaker rejects.
        AwsError: an ECR control-plane call failed.
    """
    started = time.monotonic()
    say = on_line or (lambda _line: None)
    engine = engine or default_engine()
    target = plan.target
    password = password or os.environ.get(PASSWORD_ENV)
    credentials = _Credentials(target, username, password)
    view = view or registry_view(target, username, password)
    report = None
    if plan.repository is not None and target.region is not None:
        report = ensure_repository(aws.client("ecr", target.region), plan.repository, update=update_repository)
        say(_describe_report(report))

    existing = view.digest(target.repository, plan.content_tag)
    tally = LayerTally()
    skipped = existing is not None and not plan.force
    if skipped:
        say(f"{target.ref(plan.content_tag)} is already in the registry ({existing}); not uploading (--force does)")
    digest = existing or ""
    for tag in plan.tags[1:] if skipped else plan.tags:
        ref = target.ref(tag)
        engine.tag(plan.source, ref)
        say(f"pushing {ref}")
        digest = _push_with_retries(engine, ref, tag, credentials, tally, on_event, say)
    if not digest:
        raise PushError(f"the engine reported no digest for {target.ref(plan.content_tag)}", "push again with --force")
    media_type = verify(plan, digest, view)
    return PushResult(
        uri=target.pinned(digest),
        digest=digest,
        refs=tuple(target.ref(t) for t in plan.tags),
        skipped=skipped,
        layers_pushed=len(tally.pushed),
        layers_existing=len(tally.existing),
        bytes_pushed=tally.bytes_pushed,
        media_type=media_type,
        repository=report,
        seconds=time.monotonic() - started,
    )


def _describe_report(report: RepositoryReport) -> str:
    if report.created:
        return f"created ECR repository {report.name}: " + ", ".join(report.changed)
    lines = [f"ECR repository {report.name} exists"]
    lines += [f"  changed: {c}" for c in report.changed]
    lines += [f"  differs from the spec (left alone; --update-repository applies): {d}" for d in report.differs]
    return "\n".join(lines)


def _push_with_retries(
    engine: Engine,
    ref: str,
    tag: str,
    credentials: _Credentials,
    tally: LayerTally,
    on_event: Callable[[LayerEvent], None] | None,
    say: Callable[[str], None],
) -> str:
    parsed = ImageRef.parse(ref)
    for attempt in range(1, RETRIES + 1):
        error = None
        digest = ""
        for message in engine.push(parsed.repository, tag, credentials.auth_config()):
            if "error" in message or "errorDetail" in message:
                error = str((message.get("errorDetail") or {}).get("message") or message.get("error"))
                break
            if aux := message.get("aux"):
                digest = str(aux.get("Digest", ""))
                continue
            _count(message, tag, tally, on_event)
        if error is None:
            return digest
        lowered = error.lower()
        if any(word in lowered for word in _AUTH):
            raise RegistryAuthError(f"{parsed.registry} refused the push of {ref}: {error}", _auth_hint(parsed))
        if "immutable" in lowered or "already exists and cannot be overwritten" in lowered:
            raise PushError(
                f"{ref}: {error}", "that tag cannot move: add it to push.mutable_tags and use --update-repository"
            )
        if attempt == RETRIES or not any(word in lowered for word in _TRANSIENT):
            raise PushError(f"pushing {ref} failed: {error}", "check the registry and your network, then push again")
        delay = RETRY_DELAY * 2 ** (attempt - 1)
        say(f"transient registry error ({error}); retry {attempt}/{RETRIES - 1} in {delay:.0f}s")
        time.sleep(delay)
    raise AssertionError("unreachable")


def login(spec: ImageSpec | None, *, region: str | None = None, engine: Engine | None = None) -> ecr.RegistryAuth:
    """Store an ECR login where the docker CLI keeps credentials (for tools other than smimg).

    Raises:
        PushError: the spec's push target is not ECR.
        AwsError: no credentials or permissions.
    """
    target = resolve_target(spec, "x", region=region)
    if target.account is None or target.region is None:
        raise PushError(f"{target.registry} is not ECR", f"run `docker login {target.registry}`")
    auth = ecr.registry_auth(target.account, target.region)
    (engine or default_engine()).login(auth.registry, auth.username, auth.password)
    return auth


def _auth_hint(ref: ImageRef) -> str:
    if ref.ecr is not None:
        return (
            "your identity needs ecr:GetAuthorizationToken, ecr:BatchCheckLayerAvailability, "
            "ecr:InitiateLayerUpload, ecr:UploadLayerPart, ecr:CompleteLayerUpload and ecr:PutImage on the repository"
        )
    return registry.AUTH_HINT


def _count(
    message: Mapping[str, Any], tag: str, tally: LayerTally, on_event: Callable[[LayerEvent], None] | None
) -> None:
    layer = str(message.get("id", ""))
    status = str(message.get("status", ""))
    detail = message.get("progressDetail") or {}
    if not layer or layer == tag:
        return
    if status == "Pushing" and detail.get("total"):
        tally.pushed.setdefault(layer, 0)
        tally.pushed[layer] = max(tally.pushed[layer], int(detail["total"]))
    elif status == "Pushed":
        tally.pushed.setdefault(layer, 0)
    elif status == "Layer already exists" or status.startswith("Mounted from"):
        tally.existing.add(layer)
    if on_event is not None:
        on_event(LayerEvent(tag, layer, status, int(detail.get("current", 0)), int(detail.get("total", 0))))


def verify(plan: PushPlan, digest: str, view: RegistryView) -> str:
    """Check the registry holds one Docker v2 manifest whose config is exactly our image (hence linux/amd64).

    Raises:
        PushError: no manifest, an index or attestation, another media type, or another image's config.
    """
    found = view.manifest(plan.target.repository, digest)
    if found is None:
        raise PushError(f"{plan.target.pinned(digest)} is not in the registry after the push", "push again")
    media_type, body = found
    if media_type in {registry.OCI_INDEX, registry.DOCKER_LIST}:
        raise PushError(
            f"the registry holds an image index ({media_type}) for {plan.target.pinned(digest)}; "
            "SageMaker rejects indexes and attestation manifests",
            "build with a client that does not add provenance (smimg passes --provenance=false to buildx)",
        )
    if media_type != registry.DOCKER_MANIFEST:
        raise PushError(
            f"the registry holds a {media_type} manifest; SageMaker expects {registry.DOCKER_MANIFEST}",
            "push with a Docker engine (it converts to Docker v2 schema 2)",
        )
    config = (body.get("config") or {}).get("digest")
    if config != plan.image_id:
        raise PushError(
            f"the manifest at {digest} points at config {config}, not the local image {plan.image_id}",
            "push again with --force",
        )
    return media_type
