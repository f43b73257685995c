"""Where a local job's results go, and writing them so that nothing the job made is lost or mislabelled.

``check_output`` runs before any container starts: a bad ``--output`` must not be discovered after hours of
training. ``save`` writes ``model.tar.gz`` (hosts' model folders merged, as SDK local mode does, on success only),
``output.tar.gz`` and the hosts' checkpoints (merged, as SageMaker syncs every host to one checkpoint URI), each
atomically: a half-written archive never sits under the final name.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from smimg.adapters import aws
from smimg.errors import AwsError, LocalError
from smimg.local.plan import LocalPlan
from smimg_entrypoint import contract

MODEL = "model.tar.gz"
OUTPUT = "output.tar.gz"
CHECKPOINTS = "checkpoints"


@dataclass(frozen=True)
class Saved:
    model: Path | None
    output: Path
    checkpoints: Path | None


def check_output(output: Path) -> None:
    """Make sure results can be written to ``output`` and would not replace an earlier job's.

    Raises:
        LocalError: a file in the way, an earlier job's results there, or no permission to write.
    """
    for folder in (output, *output.parents):
        if folder.exists() and not folder.is_dir():
            raise LocalError(f"--output {output}: {folder} is a file, not a folder", "pass a folder path")
        if folder.exists():
            break
    # output.tar.gz is rewritten by any run that starts; a model or checkpoints left there would pass for this job's.
    earlier = [name for name in (MODEL, CHECKPOINTS) if (output / name).exists()]
    if earlier:
        raise LocalError(
            f"--output {output} already holds {', '.join(earlier)} from an earlier job",
            f"pass another --output, or move them away: `rm -r {output}`",
        )
    try:
        output.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=output).close()
    except OSError as exc:
        raise LocalError(f"cannot write to --output {output}: {exc.strerror}", "pass a folder you can write") from None


def check_checkpoints(plan: LocalPlan, output: Path) -> None:
    """The checkpoint location (``--checkpoints``) must be writable and apart from the output and the run folder,
    which a run replaces or removes.

    Raises:
        LocalError: naming the location and the fix.
    """
    location = plan.job.conditions.checkpoints
    if location is None:
        return
    for other, what in ((output.resolve(), "--output"), (plan.run_dir.resolve(), "the run folder")):
        if location == other or other in location.parents or location in other.parents:
            raise LocalError(f"--checkpoints {location} overlaps {what} {other}", "pass a folder outside both")
    try:
        location.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=location).close()
    except OSError as exc:
        raise LocalError(
            f"cannot write to --checkpoints {location}: {exc.strerror}", "pass a folder you can write"
        ) from None


def holds_results(run_dir: Path, folders: Sequence[str]) -> bool:
    """Whether any host folder in ``run_dir`` (however many an earlier run had) holds a file in ``folders``."""
    return any(path.is_file() for folder in folders for path in run_dir.glob(f"algo-*/{folder}/**/*"))


def save(plan: LocalPlan, output: Path, *, success: bool) -> Saved:
    """Write the job's results into ``output``.

    Raises:
        LocalError: they could not be written; the message says the run folder still holds them.
    """
    hosts = [plan.host_dir(h.name) for h in plan.hosts]
    try:
        model = _merged_tar([h / contract.MODEL_DIR for h in hosts], output / MODEL) if success else None
        out = _merged_tar([h / contract.OUTPUT_DIR for h in hosts], output / OUTPUT)
        checkpoints = _newest_copy([h / contract.CHECKPOINTS_DIR for h in hosts], output / CHECKPOINTS)
    except OSError as exc:
        raise LocalError(
            f"could not write the job's results to {output}: {exc}",
            f"they are kept in {plan.run_dir} (algo-*/model, output, checkpoints); copy them from there",
        ) from None
    return Saved(model, out, checkpoints)


def _merged_tar(folders: Sequence[Path], target: Path) -> Path:
    partial = target.with_name(f".{target.name}.partial")
    with tempfile.TemporaryDirectory(prefix="smimg-merge-") as tmp:
        _merge(folders, Path(tmp))
        with tarfile.open(partial, "w:gz") as archive:
            for item in sorted(Path(tmp).iterdir()):
                archive.add(item, arcname=item.name)
    os.replace(partial, target)
    return target


def _newest_copy(folders: Sequence[Path], target: Path) -> Path | None:
    newest = _newest(folders)
    if not newest:
        return None
    partial = target.with_name(f".{target.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    _sync(newest, partial)
    partial.rename(target)
    return target


def _newest(folders: Sequence[Path]) -> dict[Path, Path]:
    """Each checkpoint file (relative path) at its newest copy among the hosts: a host's own write wins over the
    unchanged copy every host was restored with, as only changed files are synced up."""
    newest: dict[Path, Path] = {}
    for folder in folders:
        for path in folder.rglob("*") if folder.is_dir() else ():
            relative = path.relative_to(folder)
            if path.name.endswith(PARTIAL) or not path.is_file():
                continue
            if relative not in newest or path.stat().st_mtime > newest[relative].stat().st_mtime:
                newest[relative] = path
    return newest


def _sync(files: dict[Path, Path], target: Path) -> list[str]:
    """Copy the files that are new or newer than the target's (copy2 keeps their times for the next sync); the
    files copied."""
    copied = []
    for relative, source in files.items():
        destination = target / relative
        if destination.is_file() and destination.stat().st_mtime >= source.stat().st_mtime:
            continue
        _copy_atomic(source, destination)
        copied.append(str(relative))
    return copied


PARTIAL = ".smimg-partial"


def _copy_atomic(source: Path, destination: Path) -> None:
    """A copy that is whole or absent under its name: a full disk or an interrupt leaves only a ``PARTIAL`` file,
    which no merge takes (a truncated file with a fresh time would pass for the newest checkpoint)."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(f".{destination.name}{PARTIAL}")
    shutil.copy2(source, partial)
    os.replace(partial, destination)


def _merge(folders: Sequence[Path], into: Path) -> None:
    """The hosts' folders copied over each other, later hosts winning, as their uploads to one S3 prefix would."""
    for folder in folders:
        if folder.is_dir():
            shutil.copytree(folder, into, dirs_exist_ok=True)


def _host_checkpoints(plan: LocalPlan) -> list[Path]:
    return [plan.host_dir(h.name) / contract.CHECKPOINTS_DIR for h in plan.hosts]


def checkpoint_files(plan: LocalPlan) -> tuple[str, ...]:
    """The checkpoint files the hosts hold, merged as they would be under one checkpoint URI."""
    return tuple(sorted(str(relative) for relative in _newest(_host_checkpoints(plan))))


def restore_checkpoints(plan: LocalPlan) -> tuple[str, ...]:
    """Copy the checkpoint location (``--checkpoints``) into every host's /opt/ml/checkpoints, as SageMaker
    restores ``CheckpointConfig.S3Uri`` to every instance when a job starts; the files restored.

    Raises:
        LocalError: the copy failed.
    """
    source = plan.job.conditions.checkpoints
    if source is None or not source.is_dir():
        return ()
    files = {path.relative_to(source): path for path in source.rglob("*") if path.is_file()}
    try:
        for folder in _host_checkpoints(plan):
            for relative, path in files.items():
                _copy_atomic(path, folder / relative)
    except OSError as exc:
        raise LocalError(f"could not restore the checkpoints of {source}: {exc}", "check its permissions") from None
    return tuple(sorted(str(relative) for relative in files))


def fetch_checkpoints(plan: LocalPlan) -> int:
    """This run's copy of an ``s3://`` checkpoint location, fresh from S3 before the job starts; the file count.

    Raises:
        LocalError: the download failed (nothing has started).
    """
    uri, mirror = plan.job.conditions.checkpoints_s3, plan.job.conditions.checkpoints
    if uri is None or mirror is None:
        return 0
    # Only this job name's earlier runs used this copy, and each uploaded it (or said where its files are).
    shutil.rmtree(mirror, ignore_errors=True)
    mirror.mkdir(parents=True)
    try:
        return aws.download_prefix(uri.rstrip("/") + "/", mirror)  # a folder: not s3://b/ckpt-old too
    except AwsError as exc:
        raise LocalError(f"could not restore the checkpoints of {uri}: {exc.message}", exc.hint) from None


def keep_checkpoints(plan: LocalPlan) -> None:
    """The hosts' checkpoints into the checkpoint location, as SageMaker syncs them up (new and changed files;
    nothing there is deleted); for an ``s3://`` location through this run's copy of it.

    Raises:
        LocalError: the copy or the upload failed; the run folder still holds them.
    """
    target = plan.job.conditions.checkpoints
    if target is None:
        return
    try:
        target.mkdir(parents=True, exist_ok=True)
        changed = _sync(_newest(_host_checkpoints(plan)), target)
    except OSError as exc:
        raise LocalError(
            f"could not keep the job's checkpoints in {target}: {exc}",
            f"they are in {plan.run_dir} (algo-*/checkpoints); copy them from there",
        ) from None
    uri = plan.job.conditions.checkpoints_s3
    if uri is None or not changed:
        return
    try:
        aws.upload_files(target, changed, uri)
    except AwsError as exc:
        raise LocalError(
            f"could not upload the job's checkpoints to {uri}: {exc.message}",
            f"they are in {target}; once that is fixed: `aws s3 sync {target} {uri}`",
        ) from None
