"""Local stand-ins for the Hugging Face PyTorch training DLC, for offline tests and demos.

No registry is reachable on a test machine, so nothing can be pulled. Each stand-in is Debian bookworm from
``debootstrap``, imported once with ``docker import`` and shared, plus the CPU torch wheel and the SageMaker
toolkits, laid out as one generation of the DLC (its flavour). Each is cached: rebuilt only when missing or when
its own inputs change, tracked by a label holding their hash.
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
from smimg.engine import Builder, Engine
from smimg.errors import StandinError
from smimg.resources import images_dir
from smimg_entrypoint import contract

HASH_LABEL = contract.LABEL_STANDIN_INPUTS
TORCH_VERSION = "2.13.0"
UV_VERSION = "0.13.9"
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
# pip does not count an older manylinux as compatible with the one --platform names: torch's CPU wheel is
# manylinux_2_28, uv's manylinux_2_17. The rootfs's glibc (2.36) runs both.
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64")


@dataclass(frozen=True)
class Flavour:
    """One stand-in image: the DLC layout it copies and where its build context comes from."""

    ref: str
    folder: str  # under images/
    borrowed: tuple[str, ...] = ()  # files it shares with another flavour, as paths under images/
    tools: tuple[str, ...] = ()  # wheels fetched on the host beside torch's, for its build only


FLAVOURS: dict[str, Flavour] = {
    # The Ubuntu HF DLCs: a venv at /opt/conda, `bash -m start_with_right_hostname.sh`, CMD bash.
    "conda": Flavour("smimg-standin:latest", "standin"),
    # The Amazon Linux 2023 HF DLCs (2026 on): a uv-populated venv at /opt/venv and HF's sagemaker_entrypoint.sh.
    "venv": Flavour(
        "smimg-standin-venv:latest",
        "standin-venv",
        borrowed=("standin/start_with_right_hostname.sh",),
        tools=(f"uv=={UV_VERSION}",),
    ),
}
STANDIN_REF = FLAVOURS["conda"].ref


@dataclass(frozen=True)
class StandinPlan:
    """What one stand-in is made of, and the names its images get."""

    flavour: str
    ref: str
    rootfs_ref: str
    inputs_hash: str
    debootstrap_argv: tuple[str, ...]
    wheels: tuple[str, ...]  # requirements pip downloads on the host into the context's wheels/
    context_files: tuple[Path, ...]


@dataclass(frozen=True)
class StandinResult:
    ref: str
    image_id: str
    built: bool
    seconds: float


def plan_standin(flavour: str = "conda", images: Path | None = None) -> StandinPlan:
    """One flavour's inputs and image names; pure apart from reading its own files.

    Args:
        images: the folder holding the flavours' folders; default: smimg's own images/.

    Raises:
        StandinError: no such flavour.
    """
    if flavour not in FLAVOURS:
        raise StandinError(f"no stand-in flavour {flavour!r}", f"choose one of: {', '.join(FLAVOURS)}")
    chosen = FLAVOURS[flavour]
    images = images or images_dir()
    own = (p for p in (images / chosen.folder).iterdir() if p.is_file())
    context_files = tuple(sorted([*own, *(images / b for b in chosen.borrowed)]))
    debootstrap_argv = (
        "debootstrap",
        "--variant=minbase",
        f"--include={','.join(PACKAGES)}",
        SUITE,
        "ROOTFS",
        MIRROR,
    )
    # The rootfs depends only on the debootstrap call, so every flavour shares it.
    rootfs_hash = hashlib.sha256(repr(debootstrap_argv).encode()).hexdigest()[:12]
    # Spelled as before flavours existed, so that the conda image's label, and its cache, survive.
    digest = hashlib.sha256(repr((debootstrap_argv, TORCH_VERSION, *chosen.tools)).encode())
    for path in context_files:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return StandinPlan(
        flavour=flavour,
        ref=chosen.ref,
        rootfs_ref=f"smimg-standin-rootfs:{rootfs_hash}",
        inputs_hash=digest.hexdigest(),
        debootstrap_argv=debootstrap_argv,
        wheels=(f"torch=={TORCH_VERSION}", *chosen.tools),
        context_files=context_files,
    )


def ensure_standin(
    *,
    flavour: str = "conda",
    force: bool = False,
    engine: Engine | None = None,
    on_line: Callable[[str], None] | None = None,
) -> StandinResult:
    """Build one flavour of the stand-in unless an image with the same inputs already exists.

    Args:
        flavour: a key of FLAVOURS.
        force: rebuild even when the cached image matches (the shared rootfs is kept).
        on_line: receives each line of build output.

    Raises:
        StandinError: an unknown flavour, or debootstrap, a wheel download or the build failed; the message says which.
    """
    started = time.monotonic()
    engine = engine or default_engine()
    runner = Runner()
    plan = plan_standin(flavour)
    existing = engine.image(plan.ref)
    if not force and existing is not None and existing.labels.get(HASH_LABEL) == plan.inputs_hash:
        return StandinResult(plan.ref, existing.id, False, time.monotonic() - started)
    emit = on_line or (lambda line: None)
    builder = engine.builder()
    if not builder.supports_secrets:
        raise StandinError(
            "the stand-in needs a BuildKit build (secret and bind mounts), but only the legacy builder exists",
            "install the docker buildx plugin, or use a docker client older than 23.0",
        )
    if engine.image(plan.rootfs_ref) is None:
        _import_rootfs(plan, runner, builder.client, emit)
    _build(plan, builder, runner, emit)
    built = engine.image(plan.ref)
    return StandinResult(plan.ref, built.id if built else "", True, time.monotonic() - started)


def _build(plan: StandinPlan, builder: Builder, runner: Runner, emit: Callable[[str], None]) -> None:
    with tempfile.TemporaryDirectory(prefix="smimg-standin-") as tmp:
        context = Path(tmp)
        for path in plan.context_files:
            shutil.copy2(path, context / path.name)
        (context / "wheels").mkdir()
        for requirement in plan.wheels:
            _download_wheel(requirement, context / "wheels", runner, emit)
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
        emit(f"build {plan.ref} ({plan.flavour} flavour)")
        runner.stream(argv, env=builder.env(), on_line=emit, hint="read the failing step above")


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


def _download_wheel(requirement: str, dest: Path, runner: Runner, emit: Callable[[str], None]) -> None:
    """Fetch the wheel the host's pip finds (torch: a local find-links folder here) for the image's Python 3.11."""
    platforms = [arg for platform in PLATFORMS for arg in ("--platform", platform)]
    argv = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--python-version",
        "3.11",
        *platforms,
        "--implementation",
        "cp",
        "-d",
        str(dest),
        requirement,
    ]
    emit(f"pip download {requirement}")
    runner.stream(argv, on_line=emit, hint=f"`pip download {requirement}` must find a wheel for cp311 on Linux")
    name = requirement.split("==", 1)[0].replace("-", "_")
    if not list(dest.glob(f"{name}-*.whl")):
        raise StandinError(
            f"pip found no wheel for {requirement}",
            "put a cp311 Linux (for torch: CPU) wheel in a pip find-links folder",
        )
