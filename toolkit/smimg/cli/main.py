"""The `smimg` command line: parse options, call one library function, render the result."""

from __future__ import annotations

import logging
import os
import signal
import traceback
from typing import Annotated, NoReturn

import typer
from click.exceptions import ClickException
from rich.markup import escape

from smimg import __version__, interrupts
from smimg.cli import build, console, dev, launch, local, push
from smimg.errors import SmimgError

app = typer.Typer(
    name="smimg",
    help=(
        "Build custom Amazon SageMaker training images on the Hugging Face PyTorch DLCs, "
        "prove them locally as multi-node jobs, and ship them to ECR."
    ),
    no_args_is_help=True,
    rich_markup_mode="markdown",
    pretty_exceptions_enable=False,
)
app.command("init")(build.init)
app.command("render")(build.render_command)
app.command("build")(build.build_command)
app.command("inspect")(build.inspect_command)
app.command("check")(build.check_command)
app.command("push")(push.push_command)
app.command("login")(push.login_command)
app.command("launch")(launch.launch_command)
app.add_typer(local.app, name="local")
app.add_typer(launch.jobs_app, name="jobs")
app.add_typer(dev.app, name="dev")


def _version(value: bool) -> None:
    if value:
        console.out.print(f"smimg {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log what smimg runs (debug level).")] = False,
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    # The SageMaker SDK (DLC tables) prints config notices at INFO on import and warns about v2's deprecation:
    # neither is ours to show. The CLI owns the process, so it sets this, not the library.
    os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")
    logging.getLogger("sagemaker.config").setLevel(logging.WARNING)


def _interrupted() -> NoReturn:
    """Exit as a process killed by the signal would report it: 128 + its number (130 for Ctrl-C)."""
    signum = interrupts.first_signal() or signal.SIGINT
    console.err.print(f"interrupted ({signal.Signals(signum).name})")
    raise SystemExit(128 + signum) from None


def main() -> None:
    """Console entry point: SmimgError becomes a red message and its exit code; a usage mistake click's message
    and 2; a signal 128 + its number; anything else is a bug: its traceback, a request to report it, and 70."""
    interrupts.install()
    try:
        # Without standalone mode click returns typer.Exit's code instead of exiting with it.
        code = app(standalone_mode=False)
    except SmimgError as exc:
        console.err.print(f"[bold red]error:[/] {escape(exc.message)}", highlight=False)
        if exc.hint:
            console.err.print(f"[yellow]hint:[/] {escape(exc.hint)}", highlight=False)
        raise SystemExit(exc.exit_code) from None
    except typer.Exit as exc:
        raise SystemExit(exc.exit_code) from None
    except ClickException as exc:
        # A usage mistake (bad value, unknown option or command, missing argument): click's own short message
        # and usage line, as standalone mode would print them, not a traceback.
        exc.show()
        raise SystemExit(exc.exit_code) from None
    except KeyboardInterrupt:
        _interrupted()
    except typer.Abort:
        console.err.print("aborted")
        raise SystemExit(130) from None
    except Exception:
        # Not a user's mistake (those are SmimgError): smimg's own bug. The traceback is what a fix needs.
        traceback.print_exc()
        console.err.print(
            f"[bold red]this is a bug in smimg {__version__}[/]: please report it with the lines above "
            "and the command you ran",
            highlight=False,
        )
        raise SystemExit(70) from None
    if code == 130 and interrupts.first_signal() is not None:  # typer's answer to a KeyboardInterrupt
        _interrupted()
    if isinstance(code, int) and code:
        raise SystemExit(code)
