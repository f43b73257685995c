"""`smimg check --contract` on an smimg image and on the DLC stand-in, whose own toolkit leaves SIGTERM unhandled."""

from __future__ import annotations

import json

import pytest

from tests.conftest import smimg_cli

pytestmark = pytest.mark.docker

SCENARIOS = [
    "multi-node torchrun",
    "hyperparameters verbatim",
    "a failing host fails the job",
    "host order (algo-10 before algo-2)",
    "SIGTERM reaches the script",
    "SDK v3 ModelTrainer's tools",
    "/opt/ml/code empty",
]


def check(image: str) -> tuple[int, dict[str, dict[str, object]]]:
    cli = smimg_cli("check", image, "--contract", "--json", timeout=300)
    assert cli.stdout, f"exit {cli.returncode}: {cli.stderr}"
    report = json.loads(cli.stdout)
    assert report["image"] == image and [s["name"] for s in report["scenarios"]] == SCENARIOS, cli.stderr
    return cli.returncode, {s["name"]: s for s in report["scenarios"]}


def test_an_smimg_image_honours_the_whole_contract(job_image: str) -> None:
    code, scenarios = check(job_image)
    assert code == 0, json.dumps(scenarios, indent=1)
    assert "world 4 over algo-1, algo-2; all_reduce gave 10" in str(scenarios["multi-node torchrun"]["evidence"])
    assert "the script's handler ran" in str(scenarios["SIGTERM reaches the script"]["evidence"])
    order = str(scenarios["host order (algo-10 before algo-2)"]["evidence"])
    assert "hosts listed algo-1, algo-10, algo-2, ...: world 10 of 10" in order, order


def test_the_dlcs_own_toolkit_fails_sigterm_only(standin_image: str) -> None:
    code, scenarios = check(standin_image)
    assert code == 1
    assert {name for name, s in scenarios.items() if not s["ok"]} == {"SIGTERM reaches the script"}
    assert "handler never ran" in str(scenarios["SIGTERM reaches the script"]["evidence"])
