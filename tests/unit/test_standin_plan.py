from __future__ import annotations

import shutil
from pathlib import Path

from smimg.build import standin
from smimg.resources import images_dir


def test_plan_is_deterministic_and_names_images() -> None:
    first, second = standin.plan_standin(), standin.plan_standin()
    assert first == second
    assert first.ref == "smimg-standin:latest"
    assert first.rootfs_ref.startswith("smimg-standin-rootfs:")
    assert first.torch_requirement == "torch==2.13.0"
    assert {p.name for p in first.context_files} == {"Dockerfile", "start_with_right_hostname.sh"}
    assert "--variant=minbase" in first.debootstrap_argv


def test_hash_changes_with_any_input(tmp_path: Path) -> None:
    folder = tmp_path / "standin"
    shutil.copytree(images_dir() / "standin", folder)
    before = standin.plan_standin(folder)
    (folder / "Dockerfile").write_text((folder / "Dockerfile").read_text() + "\n# edit\n")
    after = standin.plan_standin(folder)
    assert before.inputs_hash != after.inputs_hash
    # The root filesystem depends only on the debootstrap call, so a Dockerfile edit does not redo it.
    assert before.rootfs_ref == after.rootfs_ref
