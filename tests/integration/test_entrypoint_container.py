"""`docker run IMAGE train` on an smimg image built from the stand-in, with a mounted /opt/ml tree."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from smimg import build, images
from smimg.adapters.docker_engine import default_engine
from smimg.spec import load_spec
from tests.integration.test_entrypoint_processes import SCRIPT, node_tree

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory, standin_image: str) -> str:
    root = tmp_path_factory.mktemp("entry-project")
    (root / "src").mkdir()
    (root / "src" / "train.py").write_text(SCRIPT)
    (root / "smimg.yaml").write_text(
        f"name: smimg-test/entry\nbase: {{image: {standin_image}}}\ncode: {{source_dir: src, entry_point: train.py}}\n"
    )
    return build.build(load_spec(root)).tags[0]


def test_check_passes_with_the_entrypoint(image: str) -> None:
    report = images.check_image(image)
    assert report.ok, report.as_dict()
    assert {c.name: c.detail for c in report.checks}["entrypoint"] == "smimg-entrypoint 0.1.0"
    config = default_engine().sdk.images.get(image).attrs["Config"]
    assert config["Entrypoint"] == ["/opt/smimg/bin/smimg-train"]
    assert config["Cmd"] == ["train"]


def test_docker_run_train_with_mounted_opt_ml(image: str, tmp_path: Path) -> None:
    base = node_tree(
        tmp_path, "algo-1", ["algo-1"], {"note": json.dumps("in a container"), "smimg_nproc_per_node": "2"}
    )
    container = default_engine().sdk.containers.run(
        image,
        "train",
        hostname="algo-1",
        volumes={str(base): {"bind": "/opt/ml", "mode": "rw"}},
        detach=True,
    )
    try:
        result = container.wait(timeout=180)
        logs = container.logs().decode()
    finally:
        container.remove(force=True)
    assert result["StatusCode"] == 0, logs
    assert logs.count("world=2 sum=3.0") == 2, logs
    assert (base / "model" / "result.txt").read_text() == "2 3.0"
    assert "smimg-train algo-1" in logs


def test_other_commands_pass_through(image: str) -> None:
    output = default_engine().sdk.containers.run(image, ["python", "-c", "print('passthrough')"], remove=True)
    assert output.decode().strip() == "passthrough"
