"""Golden Dockerfiles for representative specs, and the plan's other parts compared whole.

Regenerate the golden files after an intended template change with SMIMG_UPDATE_GOLDEN=1.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from smimg.build.bases import resolve_base
from smimg.build.plan import BuildPlan, Secret, plan_build
from smimg.engine import Builder, BuilderKind
from smimg.errors import BuildError
from smimg.spec import load_spec

FIXTURES = Path(__file__).parents[1] / "fixtures" / "specs"
GOLDEN = Path(__file__).parents[1] / "golden"
BUILDKIT = Builder(BuilderKind.BUILTIN_BUILDKIT, "/usr/bin/docker")
DIGEST = "sha256:" + "ab" * 32


def plan(case: str, builder: Builder = BUILDKIT, root: Path | None = None) -> BuildPlan:
    loaded = load_spec(root or FIXTURES / case)
    base = resolve_base(loaded.spec.base)
    return plan_build(
        loaded, base_ref=base.ref, base_digest=DIGEST, builder=builder, context_dir=Path("/ctx"), extra_tags=["latest"]
    )


@pytest.mark.parametrize("case", ["ubuntu-dlc", "al2023-dlc", "custom-base"])
def test_golden_dockerfile(case: str) -> None:
    rendered = plan(case).dockerfile
    golden = GOLDEN / f"{case}.Dockerfile"
    if os.environ.get("SMIMG_UPDATE_GOLDEN") == "1":
        golden.write_text(rendered)
    assert rendered == golden.read_text()


def test_plan_is_deterministic() -> None:
    assert plan("custom-base") == plan("custom-base")


def test_custom_base_plan_whole() -> None:
    built = plan("custom-base")
    assert built.tags == (f"custom:{built.content_hash[:12]}", "custom:latest")
    assert built.secrets == (Secret("pip-extra-index-url", env="PRIVATE_INDEX_URL"),)
    assert [f.dest for f in built.files] == [
        "Dockerfile",
        "smimg/installer.py",
        "smimg/requirements/install.json",
        "smimg/requirements/requirements-0.txt",
        "smimg/dist/smimg_entrypoint-0.1.0-py3-none-any.whl",
        "smimg/dist/install.json",
        "code/trainer/__init__.py",
        "code/trainer/main.py",
    ]
    labels = dict(built.labels)
    assert labels["com.example.team"] == "research"
    assert labels["org.opencontainers.image.base.digest"] == DIGEST
    assert labels["dev.smimg.content-hash"] == built.content_hash
    assert labels["dev.smimg.launcher"] == "python"
    assert built.argv[:4] == ("/usr/bin/docker", "build", "--progress=plain", "--platform")
    assert "--secret" in built.argv
    assert "id=pip-extra-index-url,src=$PRIVATE_INDEX_URL" in built.argv
    # The credentials' variable is named, never its value, and nothing secret is in the Dockerfile.
    assert "PRIVATE_INDEX_URL" not in built.dockerfile


def test_content_hash_follows_inputs(tmp_path: Path) -> None:
    root = tmp_path / "p"
    shutil.copytree(FIXTURES / "custom-base", root)
    first = plan("", root=root)
    (root / "train" / "trainer" / "main.py").write_text("print(2)\n")
    code_edit = plan("", root=root)
    (root / "requirements.txt").write_text("tqdm\nrich\n")
    requirement_edit = plan("", root=root)
    assert len({first.content_hash, code_edit.content_hash, requirement_edit.content_hash}) == 3
    # A code edit changes only the code files; the Dockerfile stays byte for byte the same.
    assert first.dockerfile == code_edit.dockerfile


def test_legacy_builder_refuses_secrets() -> None:
    with pytest.raises(BuildError, match="legacy docker builder cannot"):
        plan("custom-base", Builder(BuilderKind.LEGACY, "docker"))


def test_legacy_builder_gets_no_mounts() -> None:
    legacy = plan("ubuntu-dlc", Builder(BuilderKind.LEGACY, "docker"))
    assert "--mount" not in legacy.dockerfile
    assert legacy.secrets == ()
    assert legacy.argv[:2] == ("docker", "build")
