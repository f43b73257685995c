"""Run build plans: make the base available, skip what already exists, build with BuildKit, report.

The pure half is ``smimg.build.plan``; this module is the executor. It talks to the engine through the port
(``smimg.engine.Engine``) and, for DLC bases, to ECR for a pull credential.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smimg import resources
from smimg.adapters import ecr
from smimg.adapters.docker_engine import default_engine
from smimg.build.bases import ResolvedBase, resolve_base
from smimg.build.explain import explain_failure
from smimg.build.plan import BuildPlan, plan_build
from smimg.engine import Engine, Image
from smimg.errors import AwsError, BaseImageError, BuildError, CommandError, DockerUnavailable
from smimg.refs import ImageRef
from smimg.spec import LoadedSpec, load_spec

CA_BUNDLE_ENV = "PIP_CERT"


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
        data = dict(self.__dict__)
        data["tags"] = list(self.tags)
        data["seconds"] = round(self.seconds, 2)
        return data


def base_digest(
    base: ResolvedBase, engine: Engine, *, pull: bool, on_line: Callable[[str], None] | None = None
) -> tuple[str, str | None]:
    """The reference to build FROM (pinned by repo digest when it has one) and the digest itself.

    Pulls the base when it is not local and ``pull`` is set, logging in to ECR first for DLC bases. Without
    ``pull`` (render, dry runs) no engine is needed: the plan then lacks the digest, and ``on_line`` hears so.

    Raises:
        BaseImageError: the base is not local and cannot be pulled.
    """
    try:
        image = engine.image(base.ref)
    except DockerUnavailable:
        if pull:
            raise
        if on_line:
            on_line("no Docker engine answers: planned without the base's digest (a build's content tag may differ)")
        return base.ref, None
    if image is None and pull:
        _pull(base, engine, on_line)
        image = engine.image(base.ref)
    if image is None:
        return base.ref, None
    repository = ImageRef.parse(base.ref).repository
    for repo_digest in image.repo_digests:
        name, _, digest = repo_digest.partition("@")
        if name == repository:
            return f"{repository}@{digest}", digest
    return base.ref, image.id


def _pull(base: ResolvedBase, engine: Engine, on_line: Callable[[str], None] | None) -> None:
    location = ImageRef.parse(base.ref).ecr
    try:
        auth = ecr.registry_auth(*location).auth_config() if location else None
    except AwsError as exc:
        raise AwsError(exc.message, f"{exc.hint}; for a base image already here, pass --base IMAGE") from None
    if on_line:
        on_line(f"pulling base {base.ref} (DLCs are several GB; this happens once)")
    try:
        engine.pull(base.ref, auth, "linux/amd64")
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
    engine: Engine | None = None,
    on_line: Callable[[str], None] | None = None,
) -> BuildPlan:
    """Resolve the base and plan the build (what ``--dry-run`` prints)."""
    engine = engine or default_engine()
    base = resolve_base(loaded.spec.base, loaded.source)
    ref, digest = base_digest(base, engine, pull=pull, on_line=on_line)
    ca_env = os.environ.get(CA_BUNDLE_ENV)
    return plan_build(
        loaded,
        base_ref=ref,
        base_digest=digest,
        builder=engine.builder(),
        context_dir=context_dir or _private_context_dir(loaded.spec.name),
        extra_tags=extra_tags,
        ca_bundle=Path(ca_env) if ca_env and Path(ca_env).is_file() else None,
    )


def _private_context_dir(name: str) -> Path:
    """A context folder no other build uses: two builds at once must never read each other's files."""
    return resources.cache_dir() / "contexts" / f"{name.replace('/', '_')}-{uuid.uuid4().hex[:12]}"


def current_tag(loaded: LoadedSpec, engine: Engine | None = None) -> str:
    """The content tag the spec builds now (what `push` and `local run` use when no image is named)."""
    return prepare(loaded, pull=False, engine=engine).content_tag


def default_image(image: str | None, spec: Path | None) -> str:
    """``image`` when given, else the content tag of the spec at ``spec`` (or in the current folder)."""
    return image if image is not None else current_tag(load_spec(spec))


def build(
    loaded: LoadedSpec,
    *,
    extra_tags: Iterable[str] = (),
    force: bool = False,
    engine: Engine | None = None,
    on_line: Callable[[str], None] | None = None,
) -> BuildResult:
    """Build the image a spec describes, or reuse it when an image with its content tag exists.

    Args:
        loaded: the validated spec.
        extra_tags: more tags besides the content tag (``latest``, ``v1``, or full references).
        force: build even when the content tag already exists.
        on_line: receives each line of BuildKit's plain progress.

    Raises:
        BuildError: a build step failed; the message names the step, the requirement and pip's reason.
        BaseImageError, AwsError: the base could not be fetched.
    """
    engine = engine or default_engine()
    started = time.monotonic()
    plan = prepare(loaded, extra_tags=extra_tags, engine=engine, on_line=on_line)
    existing = engine.image(plan.content_tag)
    if existing is not None and not force:
        for tag in plan.tags[1:]:
            engine.tag(plan.content_tag, tag)
        return _result(plan, existing, built=False, started=started)
    execute(plan, engine, on_line=on_line)
    return _result(plan, engine.image(plan.content_tag), built=True, started=started)


def execute(plan: BuildPlan, engine: Engine, *, on_line: Callable[[str], None] | None = None) -> None:
    """Write the plan's private context, run its build, and remove the context whatever happens."""
    _claim(plan.context_dir)  # before the try: a folder it refuses is not this build's to remove
    try:
        _write_files(plan, plan.context_dir)
        with _secret_files(plan) as files:
            engine.build(list(plan.argv_with(files)), plan.builder.env(), on_line)
    except CommandError as exc:
        raise BuildError(*explain_failure(exc.output)) from None
    finally:
        shutil.rmtree(plan.context_dir, ignore_errors=True)


@contextlib.contextmanager
def _secret_files(plan: BuildPlan) -> Iterator[dict[str, Path]]:
    """Secrets held in environment variables, in 0600 files that live only as long as the build."""
    with tempfile.TemporaryDirectory(prefix="smimg-secrets-") as secret_dir:
        files: dict[str, Path] = {}
        for secret in plan.secrets:
            if secret.env is None:
                continue
            value = os.environ.get(secret.env)
            if value is None:
                raise BuildError(
                    f"environment variable {secret.env} (named by the spec for secret {secret.id}) is not set",
                    f"export {secret.env}=... before building",
                )
            path = files[secret.id] = Path(secret_dir) / secret.id
            path.touch(mode=0o600)
            path.write_text(value)
        yield files


def write_context(plan: BuildPlan, folder: Path | None = None) -> Path:
    """Write the plan's context files into ``folder`` (default the plan's context_dir).

    Raises:
        BuildError: ``folder`` holds something other than a context smimg wrote, or a file changed since the
            plan hashed it (its content tag would name other content).
    """
    target = folder or plan.context_dir
    _claim(target)
    _write_files(plan, target)
    return target


def _write_files(plan: BuildPlan, target: Path) -> None:
    for context_file in plan.files:
        data = context_file.content()
        if hashlib.sha256(data).hexdigest() != context_file.sha256:
            raise BuildError(
                f"{context_file.source} changed while smimg was building",
                "run the build again once the file is saved; the image would not match its content tag",
            )
        path = target / context_file.dest
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        if context_file.source is not None and context_file.source.stat().st_mode & 0o111:
            path.chmod(0o755)


def _claim(target: Path) -> None:
    """Make ``target`` an empty folder, removing only a context smimg wrote before (never a user's folder)."""
    if target.is_dir() and any(target.iterdir()):
        if not (target / "Dockerfile").is_file() or not (target / "smimg" / "installer.py").is_file():
            raise BuildError(
                f"{target} is not empty and holds no build context smimg wrote",
                "name a new or empty folder (smimg replaces only a context it wrote)",
            )
        shutil.rmtree(target)
    elif target.exists() and not target.is_dir():
        raise BuildError(f"{target} is a file, not a folder", "name a new or empty folder")
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BuildError(f"cannot create {target}: {exc.strerror}", "name a folder you can write") from None


def _result(plan: BuildPlan, image: Image | None, *, built: bool, started: float) -> BuildResult:
    if image is None:
        raise BuildError(f"the build finished but {plan.content_tag} is not in the engine", "run with --verbose")
    return BuildResult(
        image_id=image.id,
        tags=plan.tags,
        size=image.size,
        labels=dict(image.labels),
        built=built,
        seconds=time.monotonic() - started,
        content_hash=plan.content_hash,
    )
