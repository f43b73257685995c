"""Real builds on the stand-in: requirements, the torch guard, secrets, labels, content tags and layer caching."""

from __future__ import annotations

import io
import re
import subprocess
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from smimg import build, images
from smimg.adapters.docker_engine import default_engine
from smimg.errors import BuildError
from smimg.spec import load_spec

pytestmark = pytest.mark.docker

SECRET = "file:///tmp/smimg-SuperSecretToken-9f3a7c/simple"


def make_project(root: Path, standin: str, requirements: str, extra: str = "") -> Path:
    (root / "src").mkdir(parents=True, exist_ok=True)
    (root / "src" / "train.py").write_text("print('training')\n")
    (root / "requirements.txt").write_text(requirements)
    (root / "smimg.yaml").write_text(
        f"name: smimg-test/build\nbase: {{image: {standin}}}\nrequirements: [requirements.txt]\n"
        f"code: {{source_dir: src, entry_point: train.py}}\nlabels: {{com.example.team: ml}}\n{extra}"
    )
    return root


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, standin_image: str) -> Path:
    # `torch` unpinned is satisfied by the base's torch: the guard must leave it untouched.
    return make_project(
        tmp_path_factory.mktemp("project"),
        standin_image,
        "tqdm==4.66.5\ntorch\n",
        "pip: {extra_index_url_env: SMIMG_TEST_INDEX}\n",
    )


@pytest.fixture(scope="module", autouse=True)
def _index_secret() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SMIMG_TEST_INDEX", SECRET)
        yield


@pytest.fixture(scope="module")
def first_build(project: Path) -> build.BuildResult:
    # Built, not reused: the code-only test needs this build's layer cache, which an image an earlier run left
    # (its build cache pruned since) would not give.
    return build.build(load_spec(project), force=True)


def test_requirements_installed_base_torch_untouched_labels_present(first_build: build.BuildResult) -> None:
    info = images.inspect_image(first_build.tags[0])
    assert "tqdm==4.66.5" in info.packages
    assert "torch==2.13.0+cpu" in info.packages
    assert info.labels["com.example.team"] == "ml"
    assert info.content_hash == first_build.content_hash
    assert info.base == "smimg-standin:latest"
    assert info.base_digest and info.base_digest.startswith("sha256:")
    assert info.spec is not None and info.spec["name"] == "smimg-test/build"
    report = images.check_image(first_build.tags[0])
    by_name = {c.name: c for c in report.checks}
    assert by_name["torch"].detail == "2.13.0+cpu"
    assert by_name["accelerate"].ok
    assert by_name["/opt/ml/code empty"].ok


def test_secret_never_in_history_or_layers(first_build: build.BuildResult, tmp_path: Path) -> None:
    ref = first_build.tags[0]
    history = subprocess.run(
        ["docker", "history", "--no-trunc", ref], capture_output=True, text=True, check=True
    ).stdout
    assert "SuperSecretToken" not in history
    saved = tmp_path / "image.tar"
    subprocess.run(["docker", "save", "-o", str(saved), ref], check=True)
    with tarfile.open(saved) as outer:
        for member in outer.getmembers():
            if not member.isfile():
                continue
            data = outer.extractfile(member).read()  # type: ignore[union-attr]
            assert b"SuperSecretToken" not in data, member.name
            if member.name.endswith("layer.tar"):
                with tarfile.open(fileobj=io.BytesIO(data)) as layer:
                    for item in layer.getmembers():
                        if item.isfile():
                            content = layer.extractfile(item).read()  # type: ignore[union-attr]
                            assert b"SuperSecretToken" not in content, f"{member.name}:{item.name}"


def test_content_tag_is_stable_and_follows_requirements(first_build: build.BuildResult, project: Path) -> None:
    again = build.build(load_spec(project))
    assert not again.built
    assert again.tags == first_build.tags
    requirements = project / "requirements.txt"
    original = requirements.read_text()
    requirements.write_text(original + "rich\n")
    try:
        assert build.prepare(load_spec(project)).content_tag != first_build.tags[0]
    finally:
        requirements.write_text(original)


def test_code_only_edit_rebuilds_only_the_code_layer(first_build: build.BuildResult, project: Path) -> None:
    token = uuid.uuid4().hex
    (project / "src" / "train.py").write_text(f"print('training, edited {token}')\n")
    lines: list[str] = []
    edited = build.build(load_spec(project), on_line=lines.append)
    assert edited.built and edited.tags[0] != first_build.tags[0]
    steps: dict[str, str] = {}
    state: dict[str, str] = {}
    for line in lines:
        if match := re.match(r"^#(\d+) \[stage-0 \d+/\d+\] (.*)$", line):
            steps[match[1]] = match[2]
        elif match := re.match(r"^#(\d+) (CACHED|DONE)", line):
            state.setdefault(match[1], match[2])
    # FROM is resolved on every build (DONE, never CACHED); every other step before the code must be a cache hit.
    rebuilt = [steps[n] for n in steps if state.get(n) != "CACHED" and not steps[n].startswith("FROM ")]
    assert rebuilt == ["COPY code/ /opt/smimg/code/"], rebuilt
    output = default_engine().sdk.containers.run(
        edited.tags[0], entrypoint=["cat", "/opt/smimg/code/train.py"], remove=True
    )
    assert token.encode() in output


def test_torch_requirement_is_refused_with_the_fix(tmp_path: Path, standin_image: str) -> None:
    project = make_project(tmp_path, standin_image, "tqdm==4.66.5\ntorch==2.5.0\n")
    with pytest.raises(BuildError) as caught:
        build.build(load_spec(project))
    message = str(caught.value)
    assert "would replace the base image's torch==2.13.0+cpu" in message
    assert "The user requested torch==2.5.0" in message
    assert caught.value.hint.endswith("base_overrides: [torch] in smimg.yaml")


def test_a_missing_package_names_it_with_pips_reason(tmp_path: Path, standin_image: str) -> None:
    # Before the installer's report line, this said only "installing the requirements failed (pip exit 1)".
    project = make_project(tmp_path, standin_image, "smimg-no-such-package-zz9==1.0\n")
    with pytest.raises(BuildError) as caught:
        build.build(load_spec(project))
    assert caught.value.message.startswith("installing the requirements failed at smimg-no-such-package-zz9==1.0")
    assert "pip: ERROR: No matching distribution found for smimg-no-such-package-zz9==1.0" in caught.value.message
    assert "check the name and version of smimg-no-such-package-zz9==1.0" in caught.value.hint


def test_cli_dry_run_json_and_render_out(project: Path, tmp_path: Path) -> None:
    import json

    from typer.testing import CliRunner

    from smimg.cli.main import app

    runner = CliRunner()
    result = runner.invoke(app, ["build", "--spec", str(project), "--dry-run", "--json", "--tag", "latest"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert plan["tags"][1] == "smimg-test/build:latest"
    assert "id=pip-extra-index-url,src=$SMIMG_TEST_INDEX" in plan["argv"]
    assert SECRET not in result.stdout
    out = tmp_path / "context"
    rendered = runner.invoke(app, ["render", "--spec", str(project), "--out", str(out)])
    assert rendered.exit_code == 0, rendered.output
    assert (out / "Dockerfile").read_text() == plan["dockerfile"]
    assert (out / "code" / "train.py").is_file()


def test_dlc_base_without_aws_credentials_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    (tmp_path / "smimg.yaml").write_text(
        "name: dlc\nbase: {transformers: 4.56.2, pytorch: 2.8.0, python: py312, region: us-west-2}\n"
    )
    from smimg.errors import AwsError

    with pytest.raises(AwsError) as caught:
        build.build(load_spec(tmp_path))
    assert "no AWS credentials to log in to ECR registry 763104351884 (us-west-2)" in caught.value.message
    assert "--base" in caught.value.hint
