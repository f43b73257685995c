"""``smimg init``: a spec, a requirements file and an example training script in a project folder."""

from __future__ import annotations

import re
from pathlib import Path

from smimg.errors import SmimgError
from smimg.resources import images_dir


def init_project(folder: Path, *, name: str | None = None, force: bool = False) -> list[Path]:
    """Write the starter files into ``folder``; return what was written.

    Raises:
        SmimgError: a file already exists (and ``force`` is off), or the name is not a valid repository name.
    """
    name = name or re.sub(r"[^a-z0-9._-]+", "-", folder.resolve().name.lower()).strip("-._") or "training"
    if not re.match(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*$", name):
        raise SmimgError(f"{name!r} is not a valid image name", "pass --name with lowercase letters, digits, . _ -")
    source = images_dir() / "init"
    planned = {source / rel: folder / rel for rel in ("smimg.yaml", "requirements.txt", "src/train.py")}
    existing = [dest for dest in planned.values() if dest.exists()]
    if existing and not force:
        raise SmimgError(
            f"{', '.join(str(p) for p in existing)} already exist", "use --force to overwrite, or another folder"
        )
    for src, dest in planned.items():
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(src.read_text().replace("{{ name }}", name))
    return list(planned.values())
