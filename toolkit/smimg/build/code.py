"""Which files of the code folder an image bakes: gitignore-style rules from smimg's defaults, the folder's own
``.gitignore`` and ``.dockerignore``, then the spec's ``code.exclude`` (later rules win; ``!pattern`` re-includes).

Defaults keep out what never belongs in an image and what would make the content tag change on every run: VCS and
virtualenv folders, bytecode, and local mode's outputs when the code folder is the project root.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pathspec

DEFAULT_EXCLUDE = (".git/", ".venv/", "venv/", "__pycache__/", "*.pyc", "smimg-output/", ".smimg/")
IGNORE_FILES = (".gitignore", ".dockerignore")


def code_rules(root: Path, exclude: Iterable[str]) -> tuple[str, ...]:
    """Every exclusion rule for ``root``, in the order they apply."""
    rules = list(DEFAULT_EXCLUDE)
    for name in IGNORE_FILES:
        path = root / name
        if path.is_file():
            rules += [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    return (*rules, *exclude)


def code_paths(root: Path, exclude: Iterable[str]) -> list[Path]:
    """The files under ``root`` to bake, sorted, relative to ``root``."""
    spec = pathspec.GitIgnoreSpec.from_lines(code_rules(root, exclude))
    kept = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if path.is_file() and not spec.match_file(rel.as_posix()):
            kept.append(rel)
    return kept
