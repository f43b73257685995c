"""What an smimg-built image says about itself (``inspect``), and a smoke test of it (``check``)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from smimg import docker
from smimg.errors import ImageNotFound
from smimg.render import CONTENT_HASH_LABEL, PACKAGES_PATH, SPEC_LABEL, VERSION_LABEL


@dataclass(frozen=True)
class ImageInfo:
    """An image's identity and what smimg built it from."""

    ref: str
    image_id: str
    tags: tuple[str, ...]
    size: int
    built_by_smimg: bool
    smimg_version: str | None
    content_hash: str | None
    base: str | None
    base_digest: str | None
    spec: dict[str, Any] | None
    labels: dict[str, str]
    packages: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.__dict__.items()}


def require(
    ref: str, purpose: str = "", hint: str = "build it with `smimg build`, or check `docker images`"
) -> dict[str, Any]:
    """The engine's inspect data of a local image.

    Raises:
        ImageNotFound: no such local image; the message says what it was for, the hint what to do.
    """
    attrs = docker.image_attrs(ref)
    if attrs is None:
        raise ImageNotFound(f"no local image {ref!r}" + (f" {purpose}" if purpose else ""), hint)
    return attrs


def inspect_image(ref: str) -> ImageInfo:
    """Read an image's labels and its installed-package list.

    Raises:
        ImageNotFound: no such local image.
    """
    attrs = require(ref)
    labels: dict[str, str] = dict(attrs["Config"].get("Labels") or {})
    ours = VERSION_LABEL in labels
    packages = docker.read_image_file(ref, PACKAGES_PATH) if ours else None
    return ImageInfo(
        ref=ref,
        image_id=str(attrs["Id"]),
        tags=tuple(attrs.get("RepoTags") or ()),
        size=int(attrs.get("Size", 0)),
        built_by_smimg=ours,
        smimg_version=labels.get(VERSION_LABEL),
        content_hash=labels.get(CONTENT_HASH_LABEL),
        base=labels.get("org.opencontainers.image.base.name"),
        base_digest=labels.get("org.opencontainers.image.base.digest") or None,
        spec=json.loads(labels[SPEC_LABEL]) if SPEC_LABEL in labels else None,
        labels=labels,
        packages=tuple((packages or "").split()),
    )


_PROBE = r"""
import importlib, json, os, shutil, subprocess, sys
result = {"python": sys.executable}
for name in ("torch", "accelerate", "smimg_entrypoint"):
    try:
        module = importlib.import_module(name)
        result[name] = getattr(module, "__version__", "ok")
    except Exception as exc:
        result[name] = None
        result[name + "_error"] = f"{type(exc).__name__}: {exc}"
code = "/opt/ml/code"
result["opt_ml_code"] = sorted(os.listdir(code))[:10] if os.path.isdir(code) else []
train = shutil.which("smimg-train")
result["entrypoint"] = None
if train:
    proc = subprocess.run([train, "--version"], capture_output=True, text=True)
    result["entrypoint"] = proc.stdout.strip() if proc.returncode == 0 else None
    result["entrypoint_error"] = proc.stderr.strip()[-300:]
print("SMIMG-CHECK " + json.dumps(result))
"""


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class CheckReport:
    ref: str
    checks: tuple[Check, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def as_dict(self) -> dict[str, Any]:
        return {"ref": self.ref, "ok": self.ok, "checks": [c.__dict__ for c in self.checks]}


def check_image(ref: str) -> CheckReport:
    """Smoke-test an image: torch and accelerate import, the entrypoint answers, /opt/ml/code is empty.

    Raises:
        ImageNotFound: no such local image.
    """
    require(ref)
    # smimg images have /opt/smimg/bin/python; any other image is probed with its python3.
    launcher = 'py=/opt/smimg/bin/python; [ -x "$py" ] || py=$(command -v python3); exec "$py" -c "$1"'
    raw = docker.client().containers.run(ref, entrypoint=["/bin/sh", "-c", launcher, "sh", _PROBE], remove=True)
    line = next((x for x in raw.decode(errors="replace").splitlines() if x.startswith("SMIMG-CHECK ")), None)
    if line is None:
        return CheckReport(ref, (Check("probe", False, raw.decode(errors="replace")[-500:]),))
    found = json.loads(line[len("SMIMG-CHECK ") :])
    checks = [
        Check(name, found.get(name) is not None, found.get(name) or found.get(f"{name}_error", "missing"))
        for name in ("torch", "accelerate")
    ]
    checks.append(
        Check(
            "entrypoint",
            bool(found.get("entrypoint")),
            found.get("entrypoint") or f"smimg-train did not answer: {found.get('entrypoint_error', 'not on PATH')}",
        )
    )
    leftovers = found.get("opt_ml_code") or []
    checks.append(
        Check(
            "/opt/ml/code empty",
            not leftovers,
            "empty" if not leftovers else f"holds {', '.join(leftovers)}: SageMaker would skip sourcedir.tar.gz",
        )
    )
    return CheckReport(ref, tuple(checks))
