from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from smimg.build import standin
from smimg.cli.dev import Flavour
from smimg.errors import StandinError
from smimg.resources import images_dir


def copy_images(tmp_path: Path) -> Path:
    for flavour in standin.FLAVOURS.values():
        shutil.copytree(images_dir() / flavour.folder, tmp_path / flavour.folder)
    return tmp_path


def test_plan_is_deterministic_and_names_images() -> None:
    first, second = standin.plan_standin(), standin.plan_standin()
    assert first == second
    assert first.ref == "smimg-standin:latest"
    assert first.rootfs_ref.startswith("smimg-standin-rootfs:")
    assert first.wheels == ("torch==2.13.0",)
    assert {p.name for p in first.context_files} == {"Dockerfile", "start_with_right_hostname.sh"}
    assert "--variant=minbase" in first.debootstrap_argv


def test_venv_flavour_shares_the_rootfs_and_borrows_the_hostname_script() -> None:
    conda, venv = standin.plan_standin("conda"), standin.plan_standin("venv")
    assert venv.ref == "smimg-standin-venv:latest"
    assert venv.rootfs_ref == conda.rootfs_ref
    assert venv.inputs_hash != conda.inputs_hash
    assert venv.wheels == ("torch==2.13.0", f"uv=={standin.UV_VERSION}")
    names = [p.name for p in venv.context_files]
    assert sorted(names) == [
        "Dockerfile",
        "hf_optimizations.sh",
        "sagemaker_entrypoint.sh",
        "start_with_right_hostname.sh",
    ]
    shared = next(p for p in venv.context_files if p.name == "start_with_right_hostname.sh")
    assert shared == images_dir() / "standin" / "start_with_right_hostname.sh"


@pytest.mark.parametrize("flavour", list(standin.FLAVOURS))
def test_hash_changes_with_any_input(tmp_path: Path, flavour: str) -> None:
    images = copy_images(tmp_path)
    before = {name: standin.plan_standin(name, images) for name in standin.FLAVOURS}
    dockerfile = images / standin.FLAVOURS[flavour].folder / "Dockerfile"
    dockerfile.write_text(dockerfile.read_text() + "\n# edit\n")
    after = {name: standin.plan_standin(name, images) for name in standin.FLAVOURS}
    assert before[flavour].inputs_hash != after[flavour].inputs_hash
    # Only the edited flavour is rebuilt, and the root filesystem, which depends only on the debootstrap call, is not.
    assert all(before[n].inputs_hash == after[n].inputs_hash for n in standin.FLAVOURS if n != flavour)
    assert before[flavour].rootfs_ref == after[flavour].rootfs_ref


def test_the_shared_hostname_script_rebuilds_both(tmp_path: Path) -> None:
    images = copy_images(tmp_path)
    before = {name: standin.plan_standin(name, images).inputs_hash for name in standin.FLAVOURS}
    script = images / "standin" / "start_with_right_hostname.sh"
    script.write_text(script.read_text() + "# edit\n")
    after = {name: standin.plan_standin(name, images).inputs_hash for name in standin.FLAVOURS}
    assert all(before[n] != after[n] for n in standin.FLAVOURS)


def test_unknown_flavour_names_the_known_ones() -> None:
    with pytest.raises(StandinError) as raised:
        standin.plan_standin("alpine")
    assert "conda, venv" in raised.value.hint


def test_cli_choices_are_the_flavours() -> None:
    assert [f.value for f in Flavour] == list(standin.FLAVOURS)
