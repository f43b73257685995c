from __future__ import annotations

from pathlib import Path

import pytest

from smimg.build.bases import resolve_base
from smimg.errors import SpecError
from smimg.refs import ImageRef
from smimg.spec import load_spec


def write(folder: Path, text: str) -> Path:
    (folder / "smimg.yaml").write_text(text)
    return folder


def problems(folder: Path, **overrides: object) -> list[str]:
    with pytest.raises(SpecError) as caught:
        load_spec(folder, overrides)
    return [str(p) for p in caught.value.problems]


def test_minimal_spec_loads(tmp_path: Path) -> None:
    loaded = load_spec(write(tmp_path, "name: demo\nbase: {image: smimg-standin:latest}\n"))
    assert loaded.spec.name == "demo"
    assert loaded.spec.base.image == "smimg-standin:latest"
    assert loaded.spec.platform == "linux/amd64"
    assert loaded.root == tmp_path.resolve()


def test_unknown_keys_name_the_field_and_the_valid_ones(tmp_path: Path) -> None:
    found = problems(write(tmp_path, "name: demo\nbase: {image: x, transformer: '4.56'}\nrequirments: []\n"))
    assert any(p.startswith("requirments: unknown field") and "requirements" in p for p in found)
    assert any(p.startswith("base.transformer: unknown field") and "transformers" in p for p in found)


def test_every_problem_is_listed_at_once(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    found = problems(
        write(
            tmp_path,
            "name: Demo Image\n"
            "base: {image: 'UPPER/Case::bad'}\n"
            "requirements: [missing.txt]\n"
            "packages: ['numpy; rm -rf /', 'ok-package>=1']\n"
            "system_packages: ['git && curl evil | sh']\n"
            "env: {'BAD KEY': x}\n"
            "pip: {index_url: 'https://user:token@pypi.example.com/simple'}\n"
            "code: {source_dir: src, entry_point: nope.py}\n"
            "platform: windows/amd64\n"
            "blocks: {final: 'FROM alpine'}\n",
        )
    )
    fields = [p.split(":")[0] for p in found]
    assert fields == [
        "name",
        "base.image",
        "requirements.0",
        "packages.0",
        "system_packages.0",
        "env.BAD KEY",
        "platform",
        "pip.index_url",
        "code.entry_point",
        "blocks.final",
    ]
    assert any("PEP 508" in p for p in found)
    assert any("pip.index_url_env" in p for p in found)


def test_requirements_file_may_not_carry_an_index(tmp_path: Path) -> None:
    (tmp_path / "requirements.txt").write_text("tqdm\n--extra-index-url https://u:p@example.com/simple\n-r other.txt\n")
    found = problems(write(tmp_path, "name: d\nbase: {image: b}\nrequirements: [requirements.txt]\n"))
    assert found[0].startswith("requirements.0 (requirements.txt:2): sets a package index")
    assert found[1].startswith("requirements.0 (requirements.txt:3): includes another file")


def test_pyproject_table_and_cli_overrides(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\n[tool.smimg]\nname = "from-pyproject"\n'
        '[tool.smimg.base]\ntransformers = "4.56.2"\npytorch = "2.8.0"\npython = "py312"\n'
    )
    loaded = load_spec(tmp_path, {"base.image": "local/base:1", "accelerate": "1.10.1", "name": None})
    assert loaded.spec.name == "from-pyproject"
    # --base replaces the framework versions instead of conflicting with them.
    assert loaded.spec.base.image == "local/base:1"
    assert loaded.spec.base.transformers is None
    assert loaded.spec.accelerate == "1.10.1"
    assert loaded.source.endswith("pyproject.toml")


def test_no_spec_here_says_run_init(tmp_path: Path) -> None:
    assert problems(tmp_path) == [
        "(file): no smimg.yaml or [tool.smimg] in pyproject.toml here (fix: run `smimg init`)"
    ]


def test_framework_versions_resolve_through_the_sdk_tables(tmp_path: Path) -> None:
    spec = load_spec(
        write(tmp_path, "name: d\nbase: {transformers: 4.56.2, pytorch: 2.8.0, python: py312, region: us-west-2}\n")
    ).spec
    base = resolve_base(spec.base)
    assert base.ref == (
        "763104351884.dkr.ecr.us-west-2.amazonaws.com/huggingface-pytorch-training:"
        "2.8.0-transformers4.56.2-gpu-py312-cu129-ubuntu22.04"
    )
    assert ImageRef.parse(base.ref).ecr == ("763104351884", "us-west-2")


def test_unknown_framework_version_lists_the_valid_ones(tmp_path: Path) -> None:
    spec = load_spec(
        write(tmp_path, "name: d\nbase: {transformers: 9.9.9, pytorch: 2.8.0, python: py312, region: us-west-2}\n")
    ).spec
    with pytest.raises(SpecError) as caught:
        resolve_base(spec.base)
    (problem,) = caught.value.problems
    assert problem.field == "base.transformers"
    assert "9.9.9" in problem.problem
    assert "4.56.2" in problem.fix


def test_missing_region_is_a_spec_problem(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    spec = load_spec(write(tmp_path, "name: d\nbase: {transformers: 4.56.2, pytorch: 2.8.0, python: py312}\n")).spec
    with pytest.raises(SpecError, match=r"base\.region"):
        resolve_base(spec.base)


def test_push_section_is_checked(tmp_path: Path) -> None:
    found = problems(
        write(
            tmp_path,
            "name: demo\nbase: {image: x}\npush:\n  registry: https://reg.example.com\n  repository: Bad_Name\n"
            "  mutable_tags: ['latest', 'no spaces']\n",
        )
    )
    assert any(p.startswith("push.registry: 'https://reg.example.com' is not a registry") for p in found), found
    assert any(p.startswith("push.repository: 'Bad_Name' is not a valid repository name") for p in found), found
    assert any(p.startswith("push.mutable_tags.1: 'no spaces'") for p in found), found
    schema = problems(
        write(tmp_path, "name: demo\nbase: {image: x}\npush: {lifecycle: {keep_last: 0, enabeld: true}}\n")
    )
    assert any(p.startswith("push.lifecycle.keep_last:") for p in schema), schema
    assert any(p.startswith("push.lifecycle.enabeld: unknown field") and "enabled" in p for p in schema), schema


def test_values_that_would_inject_dockerfile_lines_or_leak_credentials_are_refused(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "train.py").write_text("")
    (tmp_path / "smimg.yaml").write_text(
        "name: x\nbase: {image: b:1}\n"
        'code: {entry_point: "train.py\\nRUN touch /pwned-ep"}\n'
        'pip: {index_url: "https://pypi.org/simple\\nRUN touch /pwned", '
        'extra_index_urls: ["HTTPS://user:SECRET@host.example/simple"]}\n'
    )
    with pytest.raises(SpecError) as caught:
        load_spec(tmp_path)
    found = [str(p) for p in caught.value.problems]
    assert "code.entry_point: spans several lines (fix: name one script, or '-m package.module')" in found, found
    assert any(p.startswith("pip.index_url: is not a single URL") for p in found), found
    assert any(p.startswith("pip.extra_index_urls.0: holds credentials") for p in found), found
