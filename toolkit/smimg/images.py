"""What an smimg-built image says about itself (``inspect``), and a smoke test of it (``check``)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from smimg.adapters.docker_engine import default_engine
from smimg.engine import Engine, Image
from smimg.errors import CommandError, ImageNotFound
from smimg_entrypoint import contract


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
    ref: str,
    purpose: str = "",
    hint: str = "build it with `smimg build`, or check `docker images`",
    engine: Engine | None = None,
) -> Image:
    """A local image.

    Raises:
        ImageNotFound: no such local image; the message says what it was for, the hint what to do.
    """
    image = (engine or default_engine()).image(ref)
    if image is None:
        raise ImageNotFound(f"no local image {ref!r}" + (f" {purpose}" if purpose else ""), hint)
    return image


def inspect_image(ref: str, engine: Engine | None = None) -> ImageInfo:
    """Read an image's labels and its installed-package list.

    Raises:
        ImageNotFound: no such local image.
    """
    engine = engine or default_engine()
    image = require(ref, engine=engine)
    labels = dict(image.labels)
    ours = contract.LABEL_VERSION in labels
    packages = engine.read_file(ref, contract.PACKAGES_FILE) if ours else None
    return ImageInfo(
        ref=ref,
        image_id=image.id,
        tags=image.tags,
        size=image.size,
        built_by_smimg=ours,
        smimg_version=labels.get(contract.LABEL_VERSION),
        content_hash=labels.get(contract.LABEL_CONTENT_HASH),
        base=labels.get(contract.LABEL_OCI_BASE_NAME),
        base_digest=labels.get(contract.LABEL_OCI_BASE_DIGEST) or None,
        spec=json.loads(labels[contract.LABEL_SPEC]) if contract.LABEL_SPEC in labels else None,
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
code = sys.argv[1]
result["opt_ml_code"] = sorted(os.listdir(code))[:10] if os.path.isdir(code) else []
train = shutil.which(sys.argv[2])
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


def check_image(ref: str, engine: Engine | None = None) -> CheckReport:
    """Smoke-test an image: torch and accelerate import, the entrypoint answers, /opt/ml/code is empty.

    Raises:
        ImageNotFound: no such local image.
    """
    engine = engine or default_engine()
    require(ref, engine=engine)
    # smimg images have their python shim; any other image is probed with its python3.
    launcher = f'py={contract.PYTHON}; [ -x "$py" ] || py=$(command -v python3); exec "$py" -c "$@"'
    code_dir = contract.opt_ml(contract.CODE_DIR)
    argv = ["/bin/sh", "-c", launcher, "sh", _PROBE, code_dir, contract.TRAIN_SCRIPT]
    try:
        raw = engine.run(ref, argv)
    except CommandError as exc:
        return CheckReport(ref, (Check("probe", False, exc.output[-500:]),))
    line = next((x for x in raw.splitlines() if x.startswith("SMIMG-CHECK ")), None)
    if line is None:
        return CheckReport(ref, (Check("probe", False, raw[-500:]),))
    found = json.loads(line[len("SMIMG-CHECK ") :])
    checks = [
        Check(name, found.get(name) is not None, found.get(name) or found.get(f"{name}_error", "missing"))
        for name in ("torch", "accelerate")
    ]
    checks.append(
        Check(
            "entrypoint",
            bool(found.get("entrypoint")),
            found.get("entrypoint")
            or f"{contract.TRAIN_SCRIPT} did not answer: {found.get('entrypoint_error', 'not on PATH')}",
        )
    )
    leftovers = found.get("opt_ml_code") or []
    checks.append(
        Check(
            f"{code_dir} empty",
            not leftovers,
            "empty" if not leftovers else f"holds {', '.join(leftovers)}: SageMaker would skip sourcedir.tar.gz",
        )
    )
    return CheckReport(ref, tuple(checks))
