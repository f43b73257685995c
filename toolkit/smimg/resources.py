"""Where the files that ship inside the wheel live: templates (``images/``) and the entrypoint's source."""

from __future__ import annotations

from importlib.resources import as_file, files
from pathlib import Path


def _packaged(name: str) -> Path:
    with as_file(files("smimg") / name) as path:
        if path.is_dir():
            return path
    # An editable install keeps these folders at the repository root, beside toolkit/.
    return Path(__file__).resolve().parents[2] / {"images": "images", "entrypoint_src": "entrypoints"}[name]


def images_dir() -> Path:
    """The folder of Dockerfile templates."""
    return _packaged("images")


def entrypoint_src_dir() -> Path:
    """The source tree of the smimg-entrypoint distribution that every image installs."""
    return _packaged("entrypoint_src")
