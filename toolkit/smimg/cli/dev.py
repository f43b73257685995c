"""`smimg dev`: commands for working on smimg itself."""

from __future__ import annotations

from typing import Annotated

import typer

from smimg.build import standin
from smimg.cli import console

app = typer.Typer(help="Commands for developing smimg itself (offline test fixtures).", no_args_is_help=True)


@app.command("standin")
def standin_command(
    force: Annotated[bool, typer.Option("--force", help="Rebuild even when the cached image matches.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Do not stream build output.")] = False,
) -> None:
    """Build (or reuse) the local stand-in for the Hugging Face PyTorch DLC.

    Debian bookworm via debootstrap, a venv at /opt/conda, the CPU torch wheel pip finds for torch==2.13.0,
    transformers, accelerate and the SageMaker toolkits. Rebuilt only when its inputs change.
    """
    result = standin.ensure_standin(force=force, on_line=None if quiet else console.line_printer("  "))
    verb = "built" if result.built else "reused (inputs unchanged)"
    console.err.print(f"[green]stand-in {verb}[/]: {result.ref} {result.image_id[:19]} in {result.seconds:.1f}s")
