"""Spec to build plan, purely: the build context's files, the content tag, labels and the build argv.

Nothing here touches Docker. ``plan_build`` is deterministic: the same spec, files and base digest give the same
plan byte for byte, which is what makes the content tag stable and lets ``--dry-run`` show exactly what ``build``
runs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from smimg import __version__
from smimg.build.code import code_paths
from smimg.build.dockerfile import render_dockerfile
from smimg.build.wheel import entrypoint_wheel
from smimg.engine import Builder
from smimg.errors import BuildError
from smimg.resources import images_dir
from smimg.spec import BLOCK_NAMES, ImageSpec, LoadedSpec
from smimg_entrypoint import contract

CONTENT_TAG_LENGTH = 12


@dataclass(frozen=True)
class ContextFile:
    """One file of the build context: its path inside the context and its bytes (or where to read them)."""

    dest: str
    data: bytes | None = None
    source: Path | None = None
    sha256: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        # Hashed once, when planned: the content tag is made of these digests, and the executor writes a file
        # only when its bytes still have this digest (a file edited mid-build must not get a tag that lies).
        if not self.sha256:
            object.__setattr__(self, "sha256", hashlib.sha256(self.content()).hexdigest())

    def content(self) -> bytes:
        if self.data is not None:
            return self.data
        assert self.source is not None
        return self.source.read_bytes()


@dataclass(frozen=True)
class Secret:
    """A BuildKit secret: its id, and the host file or environment variable it comes from."""

    id: str
    file: Path | None = None
    env: str | None = None


@dataclass(frozen=True)
class BuildPlan:
    """Everything ``build`` will do, decided before it does any of it."""

    image: str
    tags: tuple[str, ...]
    content_hash: str
    base_ref: str
    base_digest: str | None
    dockerfile: str
    files: tuple[ContextFile, ...]
    labels: tuple[tuple[str, str], ...]
    secrets: tuple[Secret, ...]
    platform: str
    builder: Builder
    context_dir: Path

    @property
    def content_tag(self) -> str:
        return self.tags[0]

    @property
    def argv(self) -> tuple[str, ...]:
        """The docker build command. Secrets held in environment variables appear as ``src=$VAR``: the plan names
        the variable, never its value; ``argv_with`` gives the command with the files the executor wrote."""
        return self.argv_with({})

    def argv_with(self, secret_files: dict[str, Path]) -> tuple[str, ...]:
        """The build command with the host files that hold the environment's secrets (by secret id)."""
        argv = self.builder.build_argv()
        if self.builder.buildkit:
            argv.append("--progress=plain")
        argv += ["--platform", self.platform]
        for tag in self.tags:
            argv += ["--tag", tag]
        for key, value in self.labels:
            argv += ["--label", f"{key}={value}"]
        for secret in self.secrets:
            source = secret.file or secret_files.get(secret.id) or f"${secret.env}"
            argv += ["--secret", f"id={secret.id},src={source}"]
        argv.append(str(self.context_dir))
        return tuple(argv)

    def as_dict(self) -> dict[str, Any]:
        """What ``build --dry-run --json`` prints."""
        return {
            "tags": list(self.tags),
            "content_hash": self.content_hash,
            "base": self.base_ref,
            "base_digest": self.base_digest,
            "argv": list(self.argv),
            "labels": dict(self.labels),
            "files": [f.dest for f in self.files],
            "dockerfile": self.dockerfile,
        }


def plan_build(
    loaded: LoadedSpec,
    *,
    base_ref: str,
    base_digest: str | None,
    builder: Builder,
    context_dir: Path,
    extra_tags: Iterable[str] = (),
    ca_bundle: Path | None = None,
) -> BuildPlan:
    """Plan a build. Pure apart from reading the files the spec names.

    Args:
        loaded: the validated spec.
        base_ref: the base image reference to build FROM (pinned by digest when it has one).
        base_digest: the base's digest (repo digest, else local image id); part of the content hash.
        builder: which docker client builds; the legacy builder gets no cache or secret mounts.
        context_dir: where the executor writes the context.
        extra_tags: more tags besides the content tag.
        ca_bundle: a CA bundle for pip inside the build, when the spec names none.
    """
    spec = loaded.spec
    if not builder.buildkit and (spec.pip.index_url_env or spec.pip.extra_index_url_env):
        raise BuildError(
            "the spec passes index credentials as build secrets, which the legacy docker builder cannot do",
            "install the docker buildx plugin (or use a docker client older than 23.0, which has BuildKit built in)",
        )
    secrets = _secrets(spec, loaded.root, ca_bundle) if builder.buildkit else ()
    wheel_name, wheel_data = entrypoint_wheel()
    files = [
        ContextFile("smimg/installer.py", data=(images_dir() / "installer.py").read_bytes()),
        *_requirement_files(loaded, secrets),
        ContextFile(f"smimg/dist/{wheel_name}", data=wheel_data),
        ContextFile(f"smimg/dist/{contract.INSTRUCTIONS_FILE}", data=_json(_wheel_instructions(wheel_name))),
    ]
    if spec.code is not None and spec.code.bake:
        files += _code_files(loaded.root / spec.code.source_dir, spec.code.exclude)
        _check_entry_point(spec.code.entry_point, files)
    dockerfile = render_dockerfile(_template_context(loaded, base_ref, builder, secrets))
    files.insert(0, ContextFile("Dockerfile", data=dockerfile.encode()))
    content_hash = _content_hash(spec, base_ref, base_digest, files)
    tags = (f"{spec.name}:{content_tag_of(content_hash)}", *(_full_tag(spec.name, t) for t in extra_tags))
    return BuildPlan(
        image=spec.name,
        tags=tags,
        content_hash=content_hash,
        base_ref=base_ref,
        base_digest=base_digest,
        dockerfile=dockerfile,
        files=tuple(files),
        labels=_labels(spec, content_hash, base_ref, base_digest),
        secrets=secrets,
        platform=spec.platform,
        builder=builder,
        context_dir=context_dir,
    )


def _json(data: dict[str, Any]) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()


def _requirement_files(loaded: LoadedSpec, secrets: tuple[Secret, ...]) -> list[ContextFile]:
    """The spec's requirements and the installer's instructions, as they land in ``contract.REQUIREMENTS_DIR``."""
    spec = loaded.spec
    files: list[ContextFile] = []
    args: list[str] = [f"accelerate=={spec.accelerate}" if spec.accelerate else "accelerate"]
    for i, req in enumerate(spec.requirements):
        files.append(ContextFile(f"smimg/requirements/requirements-{i}.txt", source=loaded.root / req))
        args += ["-r", f"{contract.REQUIREMENTS_DIR}/requirements-{i}.txt"]
    if spec.packages:
        files.append(
            ContextFile("smimg/requirements/packages.txt", data="".join(f"{p}\n" for p in spec.packages).encode())
        )
        args += ["-r", f"{contract.REQUIREMENTS_DIR}/packages.txt"]
    ids = {secret.id for secret in secrets}
    instructions = {
        "command": "requirements",
        "args": args,
        "allow": sorted(spec.base_overrides),
        "index_url": spec.pip.index_url,
        "extra_index_urls": list(spec.pip.extra_index_urls),
        "constraints_file": contract.CONSTRAINTS_FILE,
        "packages_file": contract.PACKAGES_FILE,
        "secrets_dir": contract.SECRETS_DIR,
        "secrets": {
            key: secret_id
            for key, secret_id in (
                ("index_url", contract.SECRET_INDEX_URL),
                ("extra_index_url", contract.SECRET_EXTRA_INDEX_URL),
                ("ca_bundle", contract.SECRET_CA_BUNDLE),
            )
            if secret_id in ids
        },
        "failure_marker": contract.INSTALL_FAILURE_MARKER,
    }
    return [ContextFile(f"smimg/requirements/{contract.INSTRUCTIONS_FILE}", data=_json(instructions)), *files]


def _wheel_instructions(wheel_name: str) -> dict[str, Any]:
    return {
        "command": "wheel",
        "wheel": f"{contract.DIST_DIR}/{wheel_name}",
        "bin_dir": contract.BIN_DIR,
        "console_scripts": contract.CONSOLE_SCRIPTS,
        "packages_file": contract.PACKAGES_FILE,
        "failure_marker": contract.INSTALL_FAILURE_MARKER,
    }


def _template_context(
    loaded: LoadedSpec, base_ref: str, builder: Builder, secrets: tuple[Secret, ...]
) -> dict[str, Any]:
    spec = loaded.spec
    # uv's cache too: where the base's venv has no pip the installer uses uv, whose downloads would stay in the layer.
    caches = ("/root/.cache/pip", "/root/.cache/uv")
    mounts = [f"--mount=type=cache,target={cache}" for cache in caches] if builder.buildkit else []
    mounts += [f"--mount=type=secret,id={s.id}" for s in secrets]
    blocks: dict[str, str] = {str(name): text for name, text in spec.blocks.items()}
    return {
        "smimg_version": __version__,
        "source": Path(loaded.source).name,
        "base_ref": base_ref,
        # Cache and secret mounts need BuildKit; the legacy builder would reject the syntax.
        "run_mounts": "".join(f"{m} \\\n    " for m in mounts),
        "system_packages": sorted(spec.system_packages),
        "blocks": {name: blocks.get(name, "") for name in BLOCK_NAMES},
        "env": sorted(spec.env.items()),
        "code": spec.code if spec.code is not None and spec.code.bake else None,
        "launcher": spec.launcher,
    }


def _content_hash(spec: ImageSpec, base_ref: str, base_digest: str | None, files: list[ContextFile]) -> str:
    digest = hashlib.sha256()
    for item in (__version__, spec.platform, base_ref, base_digest or "", json.dumps(sorted(spec.labels.items()))):
        digest.update(item.encode() + b"\0")
    for context_file in files:
        digest.update(context_file.dest.encode() + b"\0" + bytes.fromhex(context_file.sha256))
    return digest.hexdigest()


def _labels(spec: ImageSpec, content_hash: str, base_ref: str, base_digest: str | None) -> tuple[tuple[str, str], ...]:
    labels = {
        contract.LABEL_OCI_TITLE: spec.name,
        contract.LABEL_OCI_VERSION: content_tag_of(content_hash),
        contract.LABEL_OCI_BASE_NAME: base_ref,
        contract.LABEL_OCI_BASE_DIGEST: base_digest or "",
        contract.LABEL_VERSION: __version__,
        contract.LABEL_CONTENT_HASH: content_hash,
        contract.LABEL_SPEC: spec_json(spec),
        contract.LABEL_LAUNCHER: spec.launcher,
        contract.LABEL_PACKAGES: contract.PACKAGES_FILE,
        **spec.labels,
    }
    return tuple(sorted(labels.items()))


def _code_files(root: Path, exclude: Iterable[str]) -> list[ContextFile]:
    return [ContextFile(f"code/{rel.as_posix()}", source=root / rel) for rel in code_paths(root, exclude)]


def _check_entry_point(entry_point: str, files: list[ContextFile]) -> None:
    if entry_point.startswith("-m ") or f"code/{entry_point}" in {f.dest for f in files}:
        return
    raise BuildError(
        f"code.entry_point {entry_point} is left out of the image by an ignore rule (smimg's defaults, the code "
        "folder's .gitignore or .dockerignore, or code.exclude)",
        f"re-include it: add '!{entry_point}' to code.exclude",
    )


def _full_tag(name: str, tag: str) -> str:
    return tag if ":" in tag or "/" in tag else f"{name}:{tag}"


def content_tag_of(content_hash: str) -> str:
    """The tag an image with this content hash gets (the label holds the whole hash)."""
    return content_hash[:CONTENT_TAG_LENGTH]


def spec_json(spec: ImageSpec) -> str:
    # The launch section says how jobs run, not what the image is: it stays out of the image's label.
    dumped = spec.model_dump(mode="json", exclude_defaults=True, exclude={"launch"})
    return json.dumps(dumped, sort_keys=True, separators=(",", ":"))


def _secrets(spec: ImageSpec, root: Path, ca_bundle: Path | None) -> tuple[Secret, ...]:
    secrets = []
    if spec.pip.index_url_env:
        secrets.append(Secret(contract.SECRET_INDEX_URL, env=spec.pip.index_url_env))
    if spec.pip.extra_index_url_env:
        secrets.append(Secret(contract.SECRET_EXTRA_INDEX_URL, env=spec.pip.extra_index_url_env))
    bundle = root / spec.pip.ca_bundle if spec.pip.ca_bundle else ca_bundle
    if bundle is not None:
        secrets.append(Secret(contract.SECRET_CA_BUNDLE, file=bundle))
    return tuple(secrets)
