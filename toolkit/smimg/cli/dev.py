"""`smimg dev`: commands for working on smimg itself."""

from __future__ import annotations

from enum import Enum
from typing import Annotated

import typer

from smimg.build import standin
from smimg.cli import console

app = typer.Typer(help="Commands for developing smimg itself (offline test fixtures).", no_args_is_help=True)


class Flavour(str, Enum):
    """typer's choices for --flavour: the keys of standin.FLAVOURS."""

    conda = "conda"
    venv = "venv"


@app.command("standin")
def standin_command(
    flavour: Annotated[
        Flavour | None,
        typer.Option("--flavour", help="Build only this flavour. Default: all of them.", case_sensitive=False),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Rebuild even when the cached image matches.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Do not stream build output.")] = False,
) -> None:
    """Build (or reuse) the local stand-ins for the Hugging Face PyTorch DLC.

    Both are Debian bookworm via debootstrap (one shared rootfs) with the CPU torch wheel pip finds for
    torch==2.13.0, transformers, accelerate and the SageMaker toolkits. Each is rebuilt only when its inputs change.

    conda (smimg-standin:latest): the Ubuntu DLCs. A venv at /opt/conda; ENTRYPOINT
    `bash -m start_with_right_hostname.sh`, CMD /bin/bash.

    venv (smimg-standin-venv:latest): the Amazon Linux 2023 DLCs. A venv at /opt/venv populated by uv
    (/usr/local/bin/uv), no /opt/conda, WORKDIR /workspace; ENTRYPOINT HF's sagemaker_entrypoint.sh (sources
    hf_optimizations.sh), CMD train.
    """
    names = [flavour.value] if flavour is not None else list(standin.FLAVOURS)
    for name in names:
        result = standin.ensure_standin(
            flavour=name, force=force, on_line=None if quiet else console.line_printer("  ")
        )
        verb = "built" if result.built else "reused (inputs unchanged)"
        console.err.print(
            f"[green]stand-in {name} {verb}[/]: {result.ref} {result.image_id[:19]} in {result.seconds:.1f}s"
        )
