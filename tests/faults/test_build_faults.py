"""Issue 12's build faults against a real engine: concurrent builds of one image name each get their own content
under their own tag; SIGTERM ends a build with nothing left running and no credential on disk; a failed step on a
real terminal shows smimg's reason (not a rich MarkupError)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from smimg.adapters.docker_engine import default_engine
from smimg.spec import load_spec
from tests.conftest import SMIMG

pytestmark = pytest.mark.docker


def project(folder: Path, base: str, *, code: str = "", extra: str = "", requirements: str = "") -> Path:
    (folder / "src").mkdir(parents=True)
    (folder / "src" / "train.py").write_text(code or "print('hi')\n")
    (folder / "requirements.txt").write_text(requirements)
    (folder / "smimg.yaml").write_text(
        f"name: smimg-test/fault\nbase: {{image: {base}}}\nrequirements: [requirements.txt]\n"
        f"code: {{source_dir: src, entry_point: train.py}}\n{extra}"
    )
    return folder


def test_concurrent_builds_of_one_name_each_tag_their_own_content(standin_image: str, tmp_path: Path) -> None:
    projects = [project(tmp_path / p, standin_image, code=f"print('{p}')\n") for p in ("a", "b")]
    procs = [
        subprocess.Popen([*SMIMG, "build", "-f", str(p), "--force"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for p in projects
    ]
    outputs = [proc.communicate(timeout=600) for proc in procs]
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err.decode()[-3000:]
    tags = [out.decode().strip() for out, _ in outputs]
    assert tags[0] != tags[1]
    engine = default_engine()
    for tag, name in zip(tags, ("a", "b"), strict=True):
        assert engine.read_file(tag, "/opt/smimg/code/train.py") == f"print('{name}')\n"


def test_sigterm_ends_a_build_and_leaves_no_build_running_and_no_secret(standin_image: str, tmp_path: Path) -> None:
    secret = "https://smimg:SECRET-7f3a@127.0.0.1:9/simple"
    extra = "pip: {extra_index_url_env: SMIMG_FAULT_INDEX}\nblocks: {after_system_packages: RUN sleep 120}\n"
    root = project(tmp_path, standin_image, extra=extra)
    before = set(Path("/tmp").glob("smimg-secrets-*"))
    proc = subprocess.Popen(
        [*SMIMG, "build", "-f", str(root), "--force"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "SMIMG_FAULT_INDEX": secret},
    )
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if "RUN sleep 120" in line:
            break
    time.sleep(1)
    proc.send_signal(signal.SIGTERM)
    rest = proc.communicate(timeout=60)[1]
    assert proc.returncode == 143, "".join(seen) + rest
    assert rest.strip().splitlines()[-1] == "interrupted (SIGTERM)"
    assert set(Path("/tmp").glob("smimg-secrets-*")) == before
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    assert "smimg-test_fault-" not in ps, ps
    assert not list((Path.home() / ".cache" / "smimg" / "contexts").glob("smimg-test_fault-*"))
    assert load_spec(root).spec.name == "smimg-test/fault"


def test_a_failed_step_on_a_terminal_shows_the_reason(standin_image: str, tmp_path: Path) -> None:
    root = project(tmp_path, standin_image, requirements="torch==2.5.0\n")
    command = " ".join([*SMIMG, "build", "-f", str(root)])
    proc = subprocess.run(["script", "-qec", command, "/dev/null"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stdout[-3000:]
    assert "MarkupError" not in proc.stdout and "Traceback" not in proc.stdout
    assert "would replace the base image's torch" in proc.stdout, proc.stdout[-3000:]
