"""Issue 12's input faults: a user's mistake is one or two lines naming the input and the fix, never a traceback,
and nothing unsafe (an injected instruction, a credential, a user's folder) gets past validation. No Docker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from smimg import build, interrupts
from smimg.build import plan as build_plan
from smimg.build.code import code_paths
from smimg.build.execute import write_context
from smimg.engine import Builder, BuilderKind, Image
from smimg.errors import BuildError, LocalError, SpecError
from smimg.local import job as local_job
from smimg.spec import load_spec
from tests.conftest import smimg_cli
from tests.fakes import FakeEngine

SPEC = "name: demo\nbase: {image: smimg-standin:latest}\n"


def project(tmp_path: Path, spec: str = SPEC, **files: str) -> Path:
    (tmp_path / "smimg.yaml").write_text(spec)
    for name, text in files.items():
        path = tmp_path / name.replace("__", "/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def problems(folder: Path) -> list[str]:
    with pytest.raises(SpecError) as caught:
        load_spec(folder)
    return [str(p) for p in caught.value.problems]


def assert_short_error(proc: object, *needles: str) -> None:
    """Exit non-zero with an error and a hint naming the input; no traceback."""
    out = proc.stderr  # type: ignore[attr-defined]
    assert proc.returncode != 0, out  # type: ignore[attr-defined]
    assert "Traceback" not in out and "error:" in out, out
    for needle in needles:
        assert needle in out, out


def test_a_malformed_pyproject_is_named_not_a_traceback(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[tool.smimg\nname = 'x'\n")
    proc = smimg_cli("render", "-f", str(tmp_path))
    assert_short_error(proc, "pyproject.toml", "not valid TOML")


@pytest.mark.parametrize("field", ["name", "base.image"])
def test_a_trailing_newline_in_a_name_is_refused(tmp_path: Path, field: str) -> None:
    spec = 'name: "demo\\n"\nbase: {image: x}\n' if field == "name" else 'name: demo\nbase: {image: "x:1\\n"}\n'
    assert any(p.startswith(f"{field}: ") for p in problems(project(tmp_path, spec)))


def test_a_wrong_type_says_what_was_given_and_how_to_write_it(tmp_path: Path) -> None:
    [found] = problems(project(tmp_path, SPEC + "packages: 3\n"))
    assert "got 3" in found and "write a list" in found


@pytest.mark.parametrize(
    "line",
    [
        "pkg @ https://user:SECRET@host/x.whl",
        "git+https://ghp_TOKEN@github.com/org/repo.git#egg=repo",
        "pkg @ HTTPS://user:SECRET@host/x.whl",
    ],
)
def test_credentials_in_requirements_or_packages_are_refused(tmp_path: Path, line: str) -> None:
    spec = SPEC + f"requirements: [requirements.txt]\npackages: [{json.dumps(line)}]\n"
    found = problems(project(tmp_path, spec, **{"requirements.txt": f"tqdm\n{line}\n"}))
    assert [p.split(":")[0] for p in found] == ["requirements.0 (requirements.txt", "packages.0"]
    assert all("holds credentials" in p and "pip.index_url_env" in p for p in found)


def test_an_ssh_user_is_no_credential(tmp_path: Path) -> None:
    line = "repo @ git+ssh://git@github.com/org/repo.git"
    assert load_spec(project(tmp_path, SPEC + f"packages: [{json.dumps(line)}]\n")).spec.packages == (line,)


def test_code_exclusion_adds_to_the_defaults_and_reads_gitignore_and_dockerignore(tmp_path: Path) -> None:
    files = {
        "train.py": "",
        "pkg__model.py": "",
        "pkg__cache.pyc": "",
        ".git__HEAD": "",
        ".venv__bin__python": "",
        "smimg-output__job__model.tar.gz": "",
        "data__big.bin": "",
        "logs__run.log": "",
        "notes.md": "",
        ".gitignore": "logs/\n",
        ".dockerignore": "data/\n",
    }
    root = project(tmp_path, **files)
    kept = [p.as_posix() for p in code_paths(root, ["*.md", "/pkg/**/*.py", "!pkg/model.py"])]
    assert kept == [".dockerignore", ".gitignore", "pkg/model.py", "smimg.yaml", "train.py"]


def test_render_out_never_replaces_a_users_folder(tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    plan = build_plan.plan_build(
        load_spec(project(tmp_path)),
        base_ref="smimg-standin:latest",
        base_digest=None,
        builder=Builder(BuilderKind.BUILDX, "docker"),
        context_dir=out,
    )
    with pytest.raises(BuildError, match="holds no build context smimg wrote"):
        write_context(plan)
    assert (out / "thesis.tex").read_text() == "years of work"
    (out / "thesis.tex").unlink()
    write_context(plan)
    write_context(plan)  # a context smimg wrote is replaced
    assert (out / "Dockerfile").is_file()


def test_a_file_edited_between_plan_and_build_is_refused(tmp_path: Path) -> None:
    spec = SPEC + "code: {source_dir: src, entry_point: train.py}\n"
    root = project(tmp_path, spec, **{"src__train.py": "print(1)\n"})
    plan = build_plan.plan_build(
        load_spec(root),
        base_ref="smimg-standin:latest",
        base_digest=None,
        builder=Builder(BuilderKind.BUILDX, "docker"),
        context_dir=tmp_path / "ctx",
    )
    (root / "src" / "train.py").write_text("print(2)\n")
    with pytest.raises(BuildError, match=r"train\.py changed while smimg was building"):
        write_context(plan)


def test_render_needs_no_engine(tmp_path: Path) -> None:
    root = project(tmp_path)
    env = {**os.environ, "DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock"}
    proc = subprocess.run(
        [sys.executable, "-m", "smimg", "render", "-f", str(root)], capture_output=True, text=True, env=env, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("# syntax=") or "FROM smimg-standin:latest" in proc.stdout
    assert "no Docker engine answers" in proc.stderr


@pytest.mark.parametrize(
    ("typed", "arrives"),
    [("1.10", "1.10"), ("1e3", "1e3"), ("007", "007"), ("3", 3), ("[64,64]", [64, 64]), ('"héllo"', "héllo")],
)
def test_a_hyperparameter_keeps_the_users_text_where_json_would_change_it(typed: str, arrives: object) -> None:
    assert local_job.hyperparameter_value(typed) == arrives


def test_a_hyperparameter_beyond_sagemakers_limit_is_refused_before_the_job(tmp_path: Path) -> None:
    with pytest.raises(LocalError, match="hyperparameter blob is 200,002 characters") as caught:
        local_job.make_job("img", hyperparameters=["blob=" + "x" * 200_000])
    assert "--input" in caught.value.hint


def test_output_under_a_file_fails_before_anything_starts(tmp_path: Path) -> None:
    (tmp_path / "FILE").write_text("")
    proc = smimg_cli("local", "run", "no-such-image:1", "--output", str(tmp_path / "FILE" / "out"))
    assert_short_error(proc, f"{tmp_path / 'FILE'} is a file")


def test_each_build_writes_a_private_context_and_removes_it(tmp_path: Path) -> None:
    loaded = load_spec(project(tmp_path, "name: smimg-test/race\nbase: {image: base:1}\n"))
    engine = FakeEngine(images={"base:1": Image("sha256:" + "b" * 64)})
    plans = [build.prepare(loaded, engine=engine) for _ in range(2)]
    assert plans[0].content_tag == plans[1].content_tag and plans[0].context_dir != plans[1].context_dir
    build.build(loaded, engine=engine, force=True)
    [argv] = [call[1] for call in engine.calls if call[0] == "build"]
    assert Path(argv[-1]).name.startswith("smimg-test_race-") and not Path(argv[-1]).exists()


def test_an_entry_point_left_out_by_an_ignore_rule_is_refused(tmp_path: Path) -> None:
    spec = SPEC + "code: {source_dir: src, entry_point: train.py}\n"
    root = project(tmp_path, spec, **{"src__train.py": "", "src__.dockerignore": "*\n!src/\n"})
    with pytest.raises(BuildError, match=r"code\.entry_point train\.py is left out") as caught:
        build.prepare(load_spec(root), engine=FakeEngine())
    assert "!train.py" in caught.value.hint


def test_nohup_keeps_sighup_ignored() -> None:
    script = (
        "import signal; signal.signal(signal.SIGHUP, signal.SIG_IGN); from smimg import interrupts; "
        "interrupts.install(); print(signal.getsignal(signal.SIGHUP) is signal.SIG_IGN)"
    )
    assert subprocess.run([sys.executable, "-c", script], capture_output=True, text=True).stdout.strip() == "True"


def test_a_signal_during_clean_up_neither_cuts_it_nor_hides_the_error_in_flight() -> None:
    heard: list[int] = []
    with pytest.raises(ValueError, match="compose refused"), interrupts.shielded(heard.append):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.1)
        raise ValueError("compose refused")
    assert heard == [signal.SIGTERM]
    with pytest.raises(interrupts.Interrupted), interrupts.shielded(heard.append):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.1)
