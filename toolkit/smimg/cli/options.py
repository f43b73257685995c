"""Options several commands share: where the spec is and which of its fields a flag overrides."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from smimg.spec import LoadedSpec, load_spec

SpecPath = Annotated[
    Path | None,
    typer.Option(
        "--spec",
        "-f",
        help="smimg.yaml, a pyproject.toml with [tool.smimg], or their folder. Default: the current folder.",
    ),
]
BaseImage = Annotated[
    str | None,
    typer.Option("--base", help="Build on this image instead of the spec's base (a local image needs no AWS)."),
]
Name = Annotated[str | None, typer.Option("--name", help="Override the image (repository) name.")]
Accelerate = Annotated[str | None, typer.Option("--accelerate", help="Override the accelerate version.")]
Json = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]


def load(
    spec: Path | None, *, base: str | None = None, name: str | None = None, accelerate: str | None = None
) -> LoadedSpec:
    return load_spec(spec, {"base.image": base, "name": name, "accelerate": accelerate})
