"""Builder detection against real executables named docker on a temporary PATH."""

from __future__ import annotations

from pathlib import Path

import pytest

from smimg.adapters.docker_engine import find_builder as detect
from smimg.adapters.runner import Runner
from smimg.engine import Builder, BuilderKind
from smimg.errors import DockerUnavailable


def _fake_docker(folder: Path, *, buildx: bool, version: str) -> str:
    folder.mkdir(parents=True)
    script = folder / "docker"
    script.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = buildx ]; then {"exit 0" if buildx else "echo missing >&2; exit 1"}; fi\n'
        f'if [ "$1" = version ]; then echo {version}; exit 0; fi\n'
        "exit 2\n"
    )
    script.chmod(0o755)
    return str(script)


def find_builder() -> Builder:
    return detect(Runner())


def test_prefers_buildx_anywhere_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = _fake_docker(tmp_path / "a", buildx=False, version="28.2.2")
    second = _fake_docker(tmp_path / "b", buildx=True, version="27.0.0")
    monkeypatch.setenv("PATH", f"{Path(first).parent}:{Path(second).parent}")
    builder = find_builder()
    assert builder == Builder(BuilderKind.BUILDX, second)
    assert builder.build_argv() == [second, "buildx", "build", "--load", "--provenance=false", "--sbom=false"]


def test_old_client_has_builtin_buildkit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    new = _fake_docker(tmp_path / "new", buildx=False, version="28.2.2")
    old = _fake_docker(tmp_path / "old", buildx=False, version="20.10.24+dfsg1")
    monkeypatch.setenv("PATH", f"{Path(new).parent}:{Path(old).parent}")
    builder = find_builder()
    assert builder == Builder(BuilderKind.BUILTIN_BUILDKIT, old)
    assert builder.env()["DOCKER_BUILDKIT"] == "1"
    assert builder.supports_secrets


def test_legacy_fallback_warns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    new = _fake_docker(tmp_path / "new", buildx=False, version="28.2.2")
    monkeypatch.setenv("PATH", str(Path(new).parent))
    builder = find_builder()
    assert builder.kind is BuilderKind.LEGACY
    assert not builder.supports_secrets
    assert "legacy builder" in caplog.text


def test_no_docker_at_all(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(DockerUnavailable, match="no `docker` command"):
        find_builder()
