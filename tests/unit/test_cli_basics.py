from __future__ import annotations

import subprocess
import sys

from typer.testing import CliRunner

from smimg import __version__
from smimg.cli.main import app

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
