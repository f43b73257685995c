"""Ship an image: to ECR (repository set up with governance, auth from boto3) or to any OCI registry.

``plan_push`` is pure: image facts and a target in, a frozen ``PushPlan`` out (what ``--dry-run`` prints).
``push`` executes it: ensure the repository, skip a content tag the registry already holds, push through the engine
with in-memory credentials and retries, then check that the registry holds one linux/amd64 Docker v2 manifest.
"""

from __future__ import annotations

import fnmatch
import functools
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from smimg import docker, ecr, images, registry
from smimg.errors import Problem, PushError, RegistryAuthError, SpecError
from smimg.render import CONTENT_HASH_LABEL
from smimg.spec import ImageSpec, PushSpec

logger = logging.getLogger(__name__)

PASSWORD_ENV = "SMIMG_REGISTRY_PASSWORD"
RETRIES = 4
_TRANSIENT = ("timeout", "connection reset", "broken pipe", "eof", "toomanyrequests", "503", "502", "500 ")
_AUTH = ("unauthorized", "authentication required", "no basic auth credentials", "denied", "forbidden", "403")


@dataclass(frozen=True)
class PushTarget:
    """Where the image goes: ``registry/repository``; ``region`` and ``account`` are set for ECR."""

    registry: str
    repository: str
    region: str | None = None
    account: str | None = None

    @property
    def is_ecr(self) -> bool:
        return self.region is not None

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
    repository: ecr.RepositorySettings | None
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
    repository: ecr.RepositoryReport | None
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


def repository_settings(name: str, push: PushSpec) -> ecr.RepositorySettings:
    lifecycle = push.lifecycle
    return ecr.RepositorySettings(
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
    attrs: dict[str, Any],
    target: PushTarget,
    push_spec: PushSpec,
    extra_tags: Iterable[str] = (),
    force: bool = False,
) -> PushPlan:
    """Decide what to push where. Pure: ``attrs`` is the engine's inspect data of ``source``.

    Raises:
        PushError: the image is not linux/amd64, has no content tag, or a tag could never move in ECR.
    """
    platform = f"{attrs.get('Os', 'linux')}/{attrs.get('Architecture', 'amd64')}"
    if platform != "linux/amd64":
        raise PushError(
            f"{source} is a {platform} image; SageMaker training runs linux/amd64",
            "build with platform: linux/amd64 in smimg.yaml",
        )
    labels = (attrs.get("Config") or {}).get("Labels") or {}
    content_hash = labels.get(CONTENT_HASH_LABEL)
    _, source_tag = docker.split_tag(source.split("@")[0])
    if content_hash:
        content_tag = content_hash[:12]
    elif "@" not in source and source_tag != "latest":
        content_tag = source_tag
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
        image_id=str(attrs["Id"]),
        target=target,
        tags=(content_tag, *human),
        repository=settings,
        force=force,
    )


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
    name = repository or push_spec.repository or (spec.name if spec else _repository_path(source))
    host_ns = registry_flag or push_spec.registry
    if host_ns is not None:
        host, _, namespace = host_ns.partition("/")
        return PushTarget(registry=host, repository=f"{namespace}/{name}" if namespace else name)
    region = region or push_spec.region or (spec.base.region if spec else None) or ecr.configured_region()
    if region is None:
        problem = Problem("push.region", "no AWS region for the ECR repository", "pass --region, or set push.region")
        raise SpecError("push target", [problem])
    account = ecr.account_id(region)
    return PushTarget(registry=ecr.registry_host(account, region), repository=name, region=region, account=account)


def _repository_path(ref: str) -> str:
    """The repository path of a reference, without its registry host (a first part with '.', ':' or localhost)."""
    repo, _ = docker.split_tag(ref.split("@")[0])
    head, _, rest = repo.partition("/")
    return rest if rest and ("." in head or ":" in head or head == "localhost") else repo


def prepare_push(
    source: str,
    spec: ImageSpec | None,
    *,
    registry_flag: str | None = None,
    region: str | None = None,
    repository: str | None = None,
    extra_tags: Iterable[str] = (),
    force: bool = False,
) -> PushPlan:
    """Inspect the local image, resolve the target and plan the push.

    Raises:
        ImageNotFound: no such local image.
    """
    attrs = images.require(source, "to push", "build it first (`smimg build`, or `smimg build --push`)")
    target = resolve_target(spec, source, registry_flag=registry_flag, region=region, repository=repository)
    return plan_push(
        source=source,
        attrs=attrs,
        target=target,
        push_spec=spec.push if spec else PushSpec(),
        extra_tags=extra_tags,
        force=force,
    )


class _Credentials:
    """Registry credentials handed to the engine per call; ECR tokens (12 h) are renewed before they run out."""

    def __init__(self, target: PushTarget, username: str | None, password: str | None) -> None:
        self.target = target
        self.username = username
        self.password = password
        self._ecr: ecr.RegistryAuth | None = None

    def auth_config(self) -> dict[str, str] | None:
        if self.target.is_ecr:
            assert self.target.account and self.target.region
            if self._ecr is None or self._ecr.expired():
                self._ecr = ecr.registry_auth(self.target.account, self.target.region)
            return self._ecr.auth_config()
        if self.username is None:
            return None  # the engine's SDK uses what `docker login` stored
        return {"username": self.username, "password": self.password or "", "serveraddress": self.target.registry}

    @functools.cached_property
    def registry_client(self) -> registry.RegistryClient:
        if self.username is not None:
            return registry.RegistryClient(self.target.registry, self.username, self.password)
        return registry.RegistryClient(self.target.registry, *registry.stored_credentials(self.target.registry))


def push(
    plan: PushPlan,
    *,
    username: str | None = None,
    password: str | None = None,
    update_repository: bool = False,
    on_event: Callable[[LayerEvent], None] | None = None,
    on_line: Callable[[str], None] | None = None,
) -> PushResult:
    """Execute a push plan.

    Args:
        username, password: for a non-ECR registry; default: what `docker login` stored
            (the password also comes from SMIMG_REGISTRY_PASSWORD).
        update_repository: bring an existing ECR repository's settings in line with the spec.
        on_event: receives per-layer progress.
        on_line: receives one line per notable step.

    Raises:
        RegistryAuthError: the registry refused the credentials or permissions.
        PushError: the push failed after retries, or the registry holds a manifest SageMaker rejects.
        AwsError: an ECR control-plane call failed.
    """
    started = time.monotonic()
    say = on_line or (lambda _line: None)
    target = plan.target
    credentials = _Credentials(target, username, password or os.environ.get(PASSWORD_ENV))
    report = None
    ecr_client = None
    if plan.repository is not None:
        assert target.region
        ecr_client = ecr.client("ecr", target.region)
        report = ecr.ensure_repository(ecr_client, plan.repository, update=update_repository)
        say(_describe_report(report))

    existing = _existing_digest(plan, credentials, ecr_client)
    tally = LayerTally()
    skipped = existing is not None and not plan.force
    tags = plan.tags[1:] if skipped else plan.tags
    if skipped:
        say(f"{target.ref(plan.content_tag)} is already in the registry ({existing}); not uploading (--force does)")
    digest = existing or ""
    for tag in tags:
        ref = target.ref(tag)
        docker.tag(plan.source, ref)
        say(f"pushing {ref}")
        digest = _push_with_retries(ref, tag, credentials, tally, on_event, say)
    if not digest:
        raise PushError(f"the engine reported no digest for {target.ref(plan.content_tag)}", "push again with --force")
    media_type = _verify(plan, digest, credentials, ecr_client)
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


def _describe_report(report: ecr.RepositoryReport) -> str:
    if report.created:
        return f"created ECR repository {report.name}: " + ", ".join(report.changed)
    lines = [f"ECR repository {report.name} exists"]
    lines += [f"  changed: {c}" for c in report.changed]
    lines += [f"  differs from the spec (left alone; --update-repository applies): {d}" for d in report.differs]
    return "\n".join(lines)


def _existing_digest(plan: PushPlan, credentials: _Credentials, ecr_client: Any) -> str | None:
    if ecr_client is not None:
        return ecr.image_digest(ecr_client, plan.target.repository, plan.content_tag)
    found = credentials.registry_client.manifest(plan.target.repository, plan.content_tag)
    return found.digest if found else None


def _push_with_retries(
    ref: str,
    tag: str,
    credentials: _Credentials,
    tally: LayerTally,
    on_event: Callable[[LayerEvent], None] | None,
    say: Callable[[str], None],
) -> str:
    repository, _ = docker.split_tag(ref)
    for attempt in range(1, RETRIES + 1):
        error = None
        digest = ""
        for message in docker.push(repository, tag, credentials.auth_config()):
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
            raise RegistryAuthError(f"{repository.split('/')[0]} refused the push of {ref}: {error}", _auth_hint(ref))
        if "immutable" in lowered or "already exists and cannot be overwritten" in lowered:
            raise PushError(
                f"{ref}: {error}", "that tag cannot move: add it to push.mutable_tags and use --update-repository"
            )
        if attempt == RETRIES or not any(word in lowered for word in _TRANSIENT):
            raise PushError(f"pushing {ref} failed: {error}", "check the registry and your network, then push again")
        delay = 2.0**attempt
        say(f"transient registry error ({error}); retry {attempt}/{RETRIES - 1} in {delay:.0f}s")
        time.sleep(delay)
    raise AssertionError("unreachable")


def _auth_hint(ref: str) -> str:
    if ".dkr.ecr." in ref:
        return (
            "your identity needs ecr:GetAuthorizationToken, ecr:BatchCheckLayerAvailability, "
            "ecr:InitiateLayerUpload, ecr:UploadLayerPart, ecr:CompleteLayerUpload and ecr:PutImage on the repository"
        )
    return registry.AUTH_HINT


def _count(message: dict[str, Any], tag: str, tally: LayerTally, on_event: Callable[[LayerEvent], None] | None) -> None:
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


def _verify(plan: PushPlan, digest: str, credentials: _Credentials, ecr_client: Any) -> str:
    """Check the registry holds one Docker v2 manifest whose config is exactly our image (hence linux/amd64)."""
    if ecr_client is not None:
        media_type, body = ecr.manifest(ecr_client, plan.target.repository, digest, registry.MANIFEST_TYPES)
    else:
        found = credentials.registry_client.manifest(plan.target.repository, digest)
        if found is None:
            raise PushError(f"{plan.target.pinned(digest)} is not in the registry after the push", "push again")
        media_type, body = found.media_type, found.body
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
