"""A channel's local folder: a path or ``file://`` URI as it is, an ``s3://`` prefix downloaded once and cached."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from pathlib import Path

from smimg.adapters import aws
from smimg.errors import LocalError


def resolve_channel(name: str, source: str, cache: Path, on_line: Callable[[str], None] | None = None) -> Path:
    """A channel's local folder: a path or file:// URI as it is, an s3:// prefix downloaded once into ``cache``.

    Raises:
        LocalError: the path does not exist.
        AwsError: the S3 download failed.
    """
    if source.startswith("s3://"):
        return _download_s3(source, cache, on_line)
    path = Path(source.removeprefix("file://")).expanduser().resolve()
    if not path.exists():
        raise LocalError(f"channel {name!r}: {path} does not exist", f"pass --input {name}=EXISTING_FOLDER")
    return path


def _download_s3(uri: str, cache: Path, on_line: Callable[[str], None] | None) -> Path:
    target = cache / hashlib.sha256(uri.encode()).hexdigest()[:16]
    # The marker sits beside the folder, not in it: the folder is mounted as the channel, every file in it data.
    complete = target.with_suffix(".complete")
    if complete.exists() and target.is_dir():
        return target
    partial = target.with_suffix(".partial")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.rmtree(target, ignore_errors=True)
    count = aws.download_prefix(uri, partial)
    if count == 0:
        raise LocalError(f"nothing under {uri}", "check the bucket and prefix")
    if on_line:
        on_line(f"downloaded {count} objects from {uri} into {target}")
    partial.rename(target)
    complete.touch()
    return target
