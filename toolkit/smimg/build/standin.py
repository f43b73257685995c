"""A local stand-in for the Hugging Face PyTorch training DLC, for offline tests and demos.

No registry is reachable on a test machine, so nothing can be pulled. The stand-in is Debian bookworm from
``debootstrap``, imported with ``docker import``, plus the CPU torch wheel and the SageMaker toolkits. It is
cached: rebuilt only when missing or when its own inputs change, tracked by a label holding their hash.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from smimg.adapters.docker_engine import default_engine
from smimg.adapters.runner import Runner
from smimg.engine import Engine
from smimg.errors import StandinError
from smimg.resources import images_dir
from smimg_entrypoint import contract

STANDIN_REF = "smimg-standin:latest"
HASH_LABEL = contract.LABEL_STANDIN_INPUTS
TORCH_VERSION = "2.13.0"
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
# gcc, libc6-dev and python3-dev because sagemaker-training ships only as an sdist with a C extension.
PACKAGES = (
    "python3",
    "python3-pip",
    "python3-venv",
    "python3-dev",
    "gcc",
    "libc6-dev",
    "ca-certificates",
    "procps",
)
DEFAULT_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


@dataclass(frozen=True)
class StandinPlan:
    """What the stand-in is made of, and the names its images get."""

    ref: str
    rootfs_ref: str
    inputs_hash: str
    debootstrap_argv: tuple[str, ...]
    torch_requirement: str
    context_files: tuple[Path, ...]


@dataclass(frozen=True)
class StandinResult:
    ref: str
    image_id: str
    built: bool
    seconds: float


def plan_standin(folder: Path | None = None) -> StandinPlan:
    """The stand-in's inputs and image names; pure apart from reading its own files."""
    folder = folder or images_dir() / "standin"
    context_files = tuple(sorted(p for p in folder.iterdir() if p.is_file()))
    debootstrap_argv = (
        "debootstrap",
        "--variant=minbase",
        f"--include={','.join(PACKAGES)}",
        SUITE,
        "ROOTFS",
        MIRROR,
    )
    rootfs_hash = hashlib.sha256(repr(debootstrap_argv).encode()).hexdigest()[:12]
    digest = hashlib.sha256(repr((debootstrap_argv, TORCH_VERSION)).encode())
    for path in context_files:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return StandinPlan(
        ref=STANDIN_REF,
        rootfs_ref=f"smimg-standin-rootfs:{rootfs_hash}",
        inputs_hash=digest.hexdigest(),
        debootstrap_argv=debootstrap_argv,
        torch_requirement=f"torch=={TORCH_VERSION}",
        context_files=context_files,
    )


def ensure_standin(
    *, force: bool = False, engine: Engine | None = None, on_line: Callable[[str], None] | None = None
) -> StandinResult:
    """Build the stand-in unless an image with the same inputs already exists.

    Args:
        force: rebuild even when the cached image matches.
        on_line: receives each line of build output.

    Raises:
        StandinError: debootstrap, the torch wheel or the build failed; the message says which.
    """
    started = time.monotonic()
    engine = engine or default_engine()
    runner = Runner()
    plan = plan_standin()
    existing = engine.image(plan.ref)
    if not force and existing is not None and existing.labels.get(HASH_LABEL) == plan.inputs_hash:
        return StandinResult(plan.ref, existing.id, False, time.monotonic() - started)
    emit = on_line or (lambda line: None)
    builder = engine.builder()
    if engine.image(plan.rootfs_ref) is None:
        _import_rootfs(plan, runner, builder.client, emit)
    with tempfile.TemporaryDirectory(prefix="smimg-standin-") as tmp:
        context = Path(tmp)
        for path in plan.context_files:
            shutil.copy2(path, context / path.name)
        _download_torch(plan.torch_requirement, context / "wheels", runner, emit)
        if not builder.supports_secrets:
            raise StandinError(
                "the stand-in needs a BuildKit build (secret and bind mounts), but only the legacy builder exists",
                "install the docker buildx plugin, or use a docker client older than 23.0",
            )
        argv = [
            *builder.build_argv(),
            "--progress=plain",
            "--build-arg",
            f"ROOTFS={plan.rootfs_ref}",
            "--label",
            f"{HASH_LABEL}={plan.inputs_hash}",
            "--tag",
            plan.ref,
        ]
        ca_bundle = Path(os.environ.get("PIP_CERT", DEFAULT_CA_BUNDLE))
        if ca_bundle.is_file():
            argv += ["--secret", f"id=pipcert,src={ca_bundle}"]
        argv.append(str(context))
        runner.stream(argv, env=builder.env(), on_line=emit, hint="read the failing step above")
    built = engine.image(plan.ref)
    return StandinResult(plan.ref, built.id if built else "", True, time.monotonic() - started)


def _import_rootfs(plan: StandinPlan, runner: Runner, client: str, emit: Callable[[str], None]) -> None:
    if shutil.which("debootstrap") is None:
        raise StandinError(
            "debootstrap is not installed",
            "`apt-get install debootstrap` (Debian/Ubuntu, as root); `make setup` does it",
        )
    if os.geteuid() != 0:
        raise StandinError("debootstrap must run as root", "run `sudo make standin`")
    with tempfile.TemporaryDirectory(prefix="smimg-rootfs-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        argv = [str(rootfs) if a == "ROOTFS" else a for a in plan.debootstrap_argv]
        emit(f"debootstrap {SUITE} into {rootfs} (about a minute)")
        runner.stream(argv, on_line=emit, hint=f"check that {MIRROR} is reachable")
        emit(f"docker import -> {plan.rootfs_ref}")
        tarball = Path(tmp) / "rootfs.tar"
        runner.stream(["tar", "-C", str(rootfs), "-cf", str(tarball), "."], hint="check the free disk space")
        runner.stream([client, "import", str(tarball), plan.rootfs_ref], hint="check that the engine answers")


def _download_torch(requirement: str, dest: Path, runner: Runner, emit: Callable[[str], None]) -> None:
    """Fetch the torch wheel the host's pip finds (a local find-links folder here) for the image's Python 3.11."""
    dest.mkdir()
    argv = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--python-version",
        "3.11",
        "--platform",
        "manylinux_2_28_x86_64",
        "--implementation",
        "cp",
        "-d",
        str(dest),
        requirement,
    ]
    emit(f"pip download {requirement}")
    runner.stream(argv, on_line=emit, hint=f"`pip download {requirement}` must find a CPU wheel for cp311")
    if not list(dest.glob("torch-*.whl")):
        raise StandinError(f"pip found no wheel for {requirement}", "put a cp311 CPU wheel in a pip find-links folder")
