"""Spec to build plan, purely: the rendered Dockerfile, the context's files, the content tag, labels and argv.

Nothing here touches Docker. ``plan_build`` is deterministic: the same spec, files and base digest give the
same plan byte for byte, which is what makes the content tag stable and lets ``--dry-run`` show exactly what
``build`` runs.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import io
import json
import re
import shlex
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import jinja2

from smimg import __version__
from smimg.docker import Builder, BuilderKind
from smimg.errors import BuildError
from smimg.resources import entrypoint_src_dir, images_dir
from smimg.spec import BLOCK_NAMES, ImageSpec, LoadedSpec

LABEL_PREFIX = "dev.smimg"
CONTENT_HASH_LABEL = f"{LABEL_PREFIX}.content-hash"
SPEC_LABEL = f"{LABEL_PREFIX}.spec"
VERSION_LABEL = f"{LABEL_PREFIX}.version"
PACKAGES_PATH = "/opt/smimg/packages.txt"
CODE_DIR = "/opt/smimg/code"


@dataclass(frozen=True)
class ContextFile:
    """One file of the build context: its path inside the context and its bytes (or where to read them)."""

    dest: str
    data: bytes | None = None
    source: Path | None = None

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
        """The docker build command. Secrets held in environment variables appear as ``src=$VAR``: the
        executor writes them to private files at build time, so the plan names the variable, never its value."""
        argv = self.builder.build_argv()
        if self.builder.kind is not BuilderKind.LEGACY:
            argv.append("--progress=plain")
        argv += ["--platform", self.platform]
        for tag in self.tags:
            argv += ["--tag", tag]
        for key, value in self.labels:
            argv += ["--label", f"{key}={value}"]
        for secret in self.secrets:
            argv += ["--secret", f"id={secret.id},src={secret.file if secret.file else '$' + str(secret.env)}"]
        argv.append(str(self.context_dir))
        return tuple(argv)


def _dockerquote(value: object) -> str:
    text = str(value)
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$")
    return f'"{escaped}"'


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(images_dir())),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters["dockerquote"] = _dockerquote
    return env


def entrypoint_wheel() -> tuple[str, bytes]:
    """A deterministic wheel of the smimg-entrypoint package, built from the source shipped with smimg.

    Built here rather than with a build backend inside the image: the image may have no network, and fixed
    timestamps keep the layer cacheable across builds.
    """
    src = entrypoint_src_dir() / "smimg_entrypoint"
    found = re.search(r'^__version__ = "([^"]+)"', (src / "__init__.py").read_text(), re.M)
    assert found is not None, "smimg_entrypoint/__init__.py must define __version__"
    version = found[1]
    dist_info = f"smimg_entrypoint-{version}.dist-info"
    files: list[tuple[str, bytes]] = [(f"smimg_entrypoint/{p.name}", p.read_bytes()) for p in sorted(src.glob("*.py"))]
    files += [
        (f"{dist_info}/METADATA", f"Metadata-Version: 2.1\nName: smimg-entrypoint\nVersion: {version}\n".encode()),
        (f"{dist_info}/WHEEL", b"Wheel-Version: 1.0\nGenerator: smimg\nRoot-Is-Purelib: true\nTag: py3-none-any\n"),
        (
            f"{dist_info}/entry_points.txt",
            b"[console_scripts]\nsmimg-train = smimg_entrypoint.main:main\n"
            b"smimg-launch = smimg_entrypoint.main:launch_main\n",
        ),
    ]
    record = []
    for name, data in files:
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append(f"{dist_info}/RECORD,,")
    files.append((f"{dist_info}/RECORD", ("\n".join(record) + "\n").encode()))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files:
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            archive.writestr(info, data)
    return f"smimg_entrypoint-{version}-py3-none-any.whl", buffer.getvalue()


def _code_files(root: Path, exclude: Iterable[str]) -> list[ContextFile]:
    patterns = tuple(exclude)
    files = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if any(fnmatch.fnmatch(part, pat) for part in rel.parts for pat in patterns):
            continue
        if path.is_file():
            files.append(ContextFile(f"code/{rel.as_posix()}", source=path))
    return files


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
    root = loaded.root
    buildkit = builder.kind is not BuilderKind.LEGACY
    wheel_name, wheel_data = entrypoint_wheel()
    installer = (images_dir() / "installer.py").read_bytes()

    files = [ContextFile("smimg/installer.py", data=installer), ContextFile(f"smimg/{wheel_name}", data=wheel_data)]
    install_args: list[str] = [f"accelerate=={spec.accelerate}" if spec.accelerate else "accelerate"]
    for i, req in enumerate(spec.requirements):
        files.append(ContextFile(f"smimg/requirements/requirements-{i}.txt", source=root / req))
        install_args += ["-r", f"/opt/smimg/requirements-{i}.txt"]
    if spec.packages:
        files.append(
            ContextFile("smimg/requirements/packages.txt", data="".join(f"{p}\n" for p in spec.packages).encode())
        )
        install_args += ["-r", "/opt/smimg/packages.txt"]
    if not spec.requirements and not spec.packages:
        # COPY of an empty folder fails; a placeholder keeps the step's shape fixed.
        files.append(ContextFile("smimg/requirements/.keep", data=b""))
    if spec.code is not None and spec.code.bake:
        files += _code_files(root / spec.code.source_dir, spec.code.exclude)

    if not buildkit and (spec.pip.index_url_env or spec.pip.extra_index_url_env):
        raise BuildError(
            "the spec passes index credentials as build secrets, which the legacy docker builder cannot do",
            "install the docker buildx plugin (or use a docker client older than 23.0, which has BuildKit built in)",
        )
    secrets = _secrets(spec, root, ca_bundle) if buildkit else ()
    pip_options = [f"--index-url {shlex.quote(spec.pip.index_url)}"] if spec.pip.index_url else []
    pip_options += [f"--extra-index-url {shlex.quote(u)}" for u in spec.pip.extra_index_urls]

    dockerfile = (
        _environment()
        .get_template("Dockerfile.j2")
        .render(
            smimg_version=__version__,
            source=Path(loaded.source).name,
            base_ref=base_ref,
            # Cache and secret mounts need BuildKit; the legacy builder would reject the syntax.
            run_mounts="".join(
                f"{m} \\\n    "
                for m in (["--mount=type=cache,target=/root/.cache/pip"] if buildkit else [])
                + [f"--mount=type=secret,id={s.id}" for s in secrets]
            ),
            system_packages=sorted(spec.system_packages),
            blocks={name: text for name, text in spec.blocks.items()}
            | {n: "" for n in BLOCK_NAMES if n not in spec.blocks},
            base_overrides=sorted(spec.base_overrides),
            pip_options=pip_options,
            install_args=[shlex.quote(a) for a in install_args],
            entrypoint_wheel=wheel_name,
            env=sorted(spec.env.items()),
            code=spec.code if spec.code is not None and spec.code.bake else None,
            launcher=spec.launcher,
        )
    )
    files.insert(0, ContextFile("Dockerfile", data=dockerfile.encode()))

    digest = hashlib.sha256()
    for item in (__version__, spec.platform, base_ref, base_digest or "", json.dumps(sorted(spec.labels.items()))):
        digest.update(item.encode() + b"\0")
    for context_file in files:
        digest.update(context_file.dest.encode() + b"\0" + hashlib.sha256(context_file.content()).digest())
    content_hash = digest.hexdigest()
    tags = (f"{spec.name}:{content_hash[:12]}", *(_full_tag(spec.name, t) for t in extra_tags))

    labels = {
        "org.opencontainers.image.title": spec.name,
        "org.opencontainers.image.version": content_hash[:12],
        "org.opencontainers.image.base.name": base_ref,
        "org.opencontainers.image.base.digest": base_digest or "",
        VERSION_LABEL: __version__,
        CONTENT_HASH_LABEL: content_hash,
        SPEC_LABEL: spec_json(spec),
        f"{LABEL_PREFIX}.launcher": spec.launcher,
        f"{LABEL_PREFIX}.packages": PACKAGES_PATH,
        **spec.labels,
    }
    return BuildPlan(
        image=spec.name,
        tags=tags,
        content_hash=content_hash,
        base_ref=base_ref,
        base_digest=base_digest,
        dockerfile=dockerfile,
        files=tuple(files),
        labels=tuple(sorted(labels.items())),
        secrets=secrets,
        platform=spec.platform,
        builder=builder,
        context_dir=context_dir,
    )


def _full_tag(name: str, tag: str) -> str:
    return tag if ":" in tag or "/" in tag else f"{name}:{tag}"


def spec_json(spec: ImageSpec) -> str:
    return json.dumps(spec.model_dump(mode="json", exclude_defaults=True), sort_keys=True, separators=(",", ":"))


def _secrets(spec: ImageSpec, root: Path, ca_bundle: Path | None) -> tuple[Secret, ...]:
    secrets = []
    if spec.pip.index_url_env:
        secrets.append(Secret("pip-index-url", env=spec.pip.index_url_env))
    if spec.pip.extra_index_url_env:
        secrets.append(Secret("pip-extra-index-url", env=spec.pip.extra_index_url_env))
    bundle = root / spec.pip.ca_bundle if spec.pip.ca_bundle else ca_bundle
    if bundle is not None:
        secrets.append(Secret("pip-cert", file=bundle))
    return tuple(secrets)


def write_context(plan: BuildPlan, folder: Path | None = None) -> Path:
    """Write the plan's context files into ``folder`` (default the plan's context_dir), replacing what is there."""
    import shutil

    target = folder or plan.context_dir
    if target.exists():
        shutil.rmtree(target)
    for context_file in plan.files:
        path = target / context_file.dest
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(context_file.content())
        if context_file.source is not None and context_file.source.stat().st_mode & 0o111:
            path.chmod(0o755)
    return target
