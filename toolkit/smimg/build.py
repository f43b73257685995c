"""Run build plans: make the base available, skip what already exists, build with BuildKit, report.

The pure half lives in ``render``; this module is the executor and talks to Docker and, for DLC bases, ECR.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smimg import docker, ecr, resources
from smimg.bases import ResolvedBase, resolve_base
from smimg.errors import BaseImageError, BuildError, CommandError
from smimg.render import BuildPlan, plan_build, write_context
from smimg.spec import LoadedSpec

logger = logging.getLogger(__name__)

DEFAULT_CA_BUNDLE_ENV = "PIP_CERT"


@dataclass(frozen=True)
class BuildResult:
    """What ``build`` produced: the image, its tags and labels, and whether it was built or reused."""

    image_id: str
    tags: tuple[str, ...]
    size: int
    labels: dict[str, str]
    built: bool
    seconds: float
    content_hash: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "image_id": self.image_id,
            "tags": list(self.tags),
            "size": self.size,
            "labels": self.labels,
            "built": self.built,
            "seconds": round(self.seconds, 2),
            "content_hash": self.content_hash,
        }


def base_digest(
    base: ResolvedBase, *, pull: bool, on_line: Callable[[str], None] | None = None
) -> tuple[str, str | None]:
    """The reference to build FROM (pinned by repo digest when it has one) and the digest itself.

    Pulls the base when it is not local and ``pull`` is set, logging in to ECR first for DLC bases.

    Raises:
        BaseImageError: the base is not local and cannot be pulled.
    """
    attrs = docker.image_attrs(base.ref)
    if attrs is None and pull:
        _pull(base, on_line)
        attrs = docker.image_attrs(base.ref)
    if attrs is None:
        return base.ref, None
    repo, _ = docker.split_tag(base.ref.split("@")[0])
    for repo_digest in attrs.get("RepoDigests") or []:
        name, _, digest = repo_digest.partition("@")
        if name == repo:
            return f"{repo}@{digest}", digest
    return base.ref, str(attrs["Id"])


def _pull(base: ResolvedBase, on_line: Callable[[str], None] | None) -> None:
    auth = None
    if base.ecr_account and base.ecr_region:
        auth = ecr.registry_auth(base.ecr_account, base.ecr_region).auth_config()
    if on_line:
        on_line(f"pulling base {base.ref} (DLCs are several GB; this happens once)")
    try:
        docker.pull(base.ref, auth)
    except CommandError as exc:
        raise BaseImageError(
            f"cannot pull base image {base.ref}: {exc.output}",
            "check the reference and your network; for a local image pass --base with its exact name",
        ) from None


def prepare(
    loaded: LoadedSpec,
    *,
    extra_tags: Iterable[str] = (),
    pull: bool = True,
    context_dir: Path | None = None,
    on_line: Callable[[str], None] | None = None,
) -> BuildPlan:
    """Resolve the base and plan the build (what ``--dry-run`` prints)."""
    base = resolve_base(loaded.spec.base, loaded.source)
    ref, digest = base_digest(base, pull=pull, on_line=on_line)
    ca_env = os.environ.get(DEFAULT_CA_BUNDLE_ENV)
    ca_bundle = Path(ca_env) if ca_env and Path(ca_env).is_file() else None
    return plan_build(
        loaded,
        base_ref=ref,
        base_digest=digest,
        builder=docker.find_builder(),
        context_dir=context_dir or _default_context_dir(loaded.spec.name),
        extra_tags=extra_tags,
        ca_bundle=ca_bundle,
    )


def current_tag(loaded: LoadedSpec) -> str:
    """The content tag the spec builds now (what `push` and `local run` use when no image is named)."""
    return prepare(loaded, pull=False).content_tag


def _default_context_dir(name: str) -> Path:
    return resources.cache_dir() / "contexts" / name.replace("/", "_")


def build(
    loaded: LoadedSpec,
    *,
    extra_tags: Iterable[str] = (),
    force: bool = False,
    on_line: Callable[[str], None] | None = None,
) -> BuildResult:
    """Build the image a spec describes, or reuse it when an image with its content tag exists.

    Args:
        loaded: the validated spec.
        extra_tags: more tags besides the content tag (``latest``, ``v1``, or full references).
        force: build even when the content tag already exists.
        on_line: receives each line of BuildKit's plain progress.

    Raises:
        BuildError: a build step failed; the message names the step and its last lines.
        BaseImageError, AwsError: the base could not be fetched.
    """
    started = time.monotonic()
    plan = prepare(loaded, extra_tags=extra_tags, on_line=on_line)
    existing = docker.image_attrs(plan.content_tag)
    if existing is not None and not force:
        _tag_extra(plan)
        return _result(plan, existing, built=False, started=started)
    execute(plan, on_line=on_line)
    return _result(plan, docker.image_attrs(plan.content_tag), built=True, started=started)


def execute(plan: BuildPlan, *, on_line: Callable[[str], None] | None = None) -> None:
    """Write the context and run the plan's argv; secrets held in environment variables go to private files."""
    write_context(plan)
    argv = list(plan.argv)
    with tempfile.TemporaryDirectory(prefix="smimg-secrets-") as secret_dir:
        for secret in plan.secrets:
            if secret.env is None:
                continue
            value = os.environ.get(secret.env)
            if value is None:
                raise BuildError(
                    f"environment variable {secret.env} (named by the spec for secret {secret.id}) is not set",
                    f"export {secret.env}=... before building",
                )
            path = Path(secret_dir) / secret.id
            path.touch(mode=0o600)
            path.write_text(value)
            argv = [a.replace(f"src=${secret.env}", f"src={path}") for a in argv]
        try:
            docker.stream(argv, env=plan.builder.env(), on_line=on_line)
        except CommandError as exc:
            raise BuildError(*_explain_failure(exc.output)) from None


def _explain_failure(output: str) -> tuple[str, str]:
    """The failing step and its last lines from BuildKit's plain output (or the legacy builder's)."""
    lines = [re.sub(r"^#\d+ \d+\.\d+ ", "", line) for line in output.splitlines()]
    step = ""
    for line in output.splitlines():
        match = re.match(r"^#\d+ (\[[^\]]+\] .*)$", line) or re.match(r"^(Step \d+/\d+ : .*)$", line)
        if match:
            step = match[1]
    # The in-build installer explains guard conflicts itself: "smimg: ..." then indented "pip:"/"fix:" lines.
    ours = [i for i, line in enumerate(lines) if line.startswith("smimg: ") and not line.startswith("smimg: /")]
    explanation: list[str] = []
    if ours:
        explanation = [lines[ours[-1]][len("smimg: ") :]]
        explanation += [line for line in lines[ours[-1] + 1 :] if line.startswith("  ")][:8]
    markers = [i for i, line in enumerate(lines) if line.startswith("------")]
    block = lines[markers[0] + 1 : markers[1]] if len(markers) >= 2 else lines[-20:]
    step = next((b.strip(" >:") for b in block if b.startswith(" > [")), step)
    detail = [b for b in block if not b.startswith(" > [")][-15:]
    fixes = [line.split("fix: ", 1)[1] for line in explanation if "fix: " in line]
    headline = "\n".join(line for line in explanation if "fix: " not in line) or "the image build failed"
    message = f"{headline}\n  failing step: {step}" + ("" if explanation else "\n" + "\n".join(detail))
    return message, fixes[0] if fixes else "read the failing step's output above, fix it and build again"


def _tag_extra(plan: BuildPlan) -> None:
    image = docker.client().images.get(plan.content_tag)
    for tag in plan.tags[1:]:
        repository, _, name = tag.rpartition(":")
        image.tag(repository, name)


def _result(plan: BuildPlan, attrs: dict[str, Any] | None, *, built: bool, started: float) -> BuildResult:
    if attrs is None:
        raise BuildError(f"the build finished but {plan.content_tag} is not in the engine", "run with --verbose")
    return BuildResult(
        image_id=str(attrs["Id"]),
        tags=plan.tags,
        size=int(attrs.get("Size", 0)),
        labels=dict(attrs["Config"].get("Labels") or {}),
        built=built,
        seconds=time.monotonic() - started,
        content_hash=plan.content_hash,
    )
