"""Where smimg's files live: what ships inside the wheel (templates, the installer) and the cache."""

from __future__ import annotations

import os
from importlib.resources import as_file, files
from pathlib import Path


def _packaged(name: str) -> Path:
    with as_file(files("smimg") / name) as path:
        if path.is_dir():
            return path
    # An editable install keeps these folders at the repository root, beside toolkit/.
    return Path(__file__).resolve().parents[2] / name


def images_dir() -> Path:
    """The folder of Dockerfile templates."""
    return _packaged("images")


def cache_dir() -> Path:
    """smimg's cache folder (build contexts, local runs, downloaded channels), under XDG_CACHE_HOME."""
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "smimg"
