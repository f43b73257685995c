from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from smimg import __version__
from smimg.cli.main import app
from tests.conftest import smimg_cli

runner = CliRunner()


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"smimg {__version__}"


def test_help_lists_commands_and_runs_from_any_folder(tmp_path: object) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "smimg", "--help"],
        capture_output=True,
        text=True,
        cwd=str(tmp_path),
        check=True,
    )
    assert "SageMaker" in proc.stdout
    assert "dev" in proc.stdout


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["local", "run", "-n", "abc"], ("Invalid value for '--instances' / '-n'",)),
        # click words it "No such option: --x", and "No such option '--x'" from 8.3 on
        (["build", "--no-such-flag"], ("No such option", "--no-such-flag")),
        (["push", "--no-such-flag"], ("No such option", "--no-such-flag")),
        (["no-such-command"], ("No such command 'no-such-command'",)),
        (["inspect"], ("Missing argument 'image'",)),
    ],
)
def test_usage_mistakes_get_a_message_not_a_traceback(args: list[str], says: tuple[str, ...]) -> None:
    proc = smimg_cli(*args)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert all(part.lower() in proc.stderr.lower() for part in says), proc.stderr  # IMAGE or image, by version
    assert len(proc.stderr.strip().splitlines()) <= 5, proc.stderr


def test_an_unexpected_error_is_reported_as_a_bug_with_its_traceback(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    from smimg import scaffold
    from smimg.cli import main as cli_main

    def broken(*_: object, **__: object) -> None:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(scaffold, "init_project", broken)
    monkeypatch.setattr("sys.argv", ["smimg", "init", "/nonexistent/x"])
    with pytest.raises(SystemExit) as exited:
        cli_main.main()
    assert exited.value.code == 70
    err = capfd.readouterr().err
    assert "ZeroDivisionError: a bug" in err and "this is a bug in smimg" in err


def test_the_cli_loads_no_heavy_module_before_a_command_needs_it() -> None:
    heavy = (
        "boto3",
        "botocore",
        "docker",
        "jinja2",
        "pydantic",
        "rich.progress",
        "smimg.build.plan",
        "smimg.cloud.plan",
    )
    code = f"import sys, smimg.cli.main; print([m for m in {heavy!r} if m in sys.modules])"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]"  # each costs every command's start-up


def test_local_run_of_an_image_loads_neither_pydantic_nor_the_build(tmp_path: object) -> None:
    argv = ["smimg", "local", "run", "img:1", "-n", "2", "--compose-only", "--run-dir", f"{tmp_path}/run"]
    code = (
        f"import sys\nfrom smimg.cli.main import main\nsys.argv = {argv!r}\ntry:\n    main()\nexcept SystemExit:\n"
        "    pass\nprint([m for m in ('pydantic', 'jinja2', 'smimg.build.plan') if m in sys.modules])"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip().splitlines()[-1] == "[]", proc.stderr  # typer from 0.26 on loads pydantic
