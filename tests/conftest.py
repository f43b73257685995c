"""Shared fixtures: a real Docker engine, the stand-in base, a real local registry and moto for AWS APIs.

Integration tests carry the markers ``docker``, ``registry`` or ``aws``. When what they need is missing they
skip with the reason locally, and FAIL under ``CI=true`` or ``--require-docker``: CI must never go green by
skipping the tests that matter.
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--require-docker",
        action="store_true",
        default=os.environ.get("CI", "").lower() in {"1", "true"},
        help="fail, rather than skip, tests whose Docker engine or registry is missing (default under CI=true)",
    )


def _missing(config: pytest.Config, reason: str) -> None:
    if config.getoption("--require-docker"):
        pytest.fail(f"{reason} (required: CI=true or --require-docker)", pytrace=False)
    pytest.skip(reason)


_engine_error: list[str] = []


def _engine_problem() -> str | None:
    if not _engine_error:
        from smimg.adapters.docker_engine import default_engine
        from smimg.errors import SmimgError

        try:
            default_engine().sdk  # noqa: B018 - connects, or raises DockerUnavailable
            _engine_error.append("")
        except SmimgError as exc:
            _engine_error.append(f"no Docker engine: {exc.message}; run `make setup`")
    return _engine_error[0] or None


def pytest_runtest_setup(item: pytest.Item) -> None:
    needs_engine = any(item.get_closest_marker(name) for name in ("docker", "registry"))
    if needs_engine and (problem := _engine_problem()):
        _missing(item.config, problem)
    if item.get_closest_marker("registry") and shutil.which("docker-registry") is None:
        _missing(item.config, "docker-registry is not installed; run `make setup`")


SMIMG = [sys.executable, "-m", "smimg"]


@pytest.fixture(scope="session", autouse=True)
def own_cache() -> Iterator[Path]:
    """smimg's cache (run folders, locks, build contexts) in a folder of this session's own, for this process and
    every `smimg` it starts: runs, locks and folders an earlier session (or the user) left must not change what a
    test sees. Under the home folder, not /tmp, which a snap-packaged Docker cannot mount."""
    cache = Path.home() / ".cache" / "smimg-tests" / f"{os.getpid()}"
    cache.mkdir(parents=True, exist_ok=True)
    before = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(cache)
    yield cache
    if before is None:
        del os.environ["XDG_CACHE_HOME"]
    else:
        os.environ["XDG_CACHE_HOME"] = before
    shutil.rmtree(cache, ignore_errors=True)  # what a container wrote as another user may stay


def smimg_cli(*args: str, stdin: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the `smimg` command as a user would, in a fresh process; output captured as text."""
    return subprocess.run([*SMIMG, *args], input=stdin, capture_output=True, text=True, timeout=timeout)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except urllib.error.HTTPError:
            return  # it answers, if only with 401
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@pytest.fixture(scope="session")
def standin_image() -> str:
    """The stand-in DLC image (built once by `make test`; reused here when its inputs are unchanged)."""
    from smimg.build import standin

    return standin.ensure_standin().ref


@pytest.fixture(scope="session")
def job_image(standin_image: str) -> str:
    """tests/fixtures/job built on the stand-in: the 2-host gloo job the local-mode, parity, rehearsal and contract
    tests run."""
    from smimg import build
    from smimg.spec import load_spec

    return build.build(load_spec(Path(__file__).parent / "fixtures" / "job")).tags[0]


SDK_V3 = "sagemaker==3.27.0"


@pytest.fixture(scope="session")
def sdk_v3_python() -> str:
    """A venv with SDK v3 (it cannot share one with v2), made once per machine and kept: installing takes minutes."""
    venv = Path.home() / ".cache" / "smimg-tests" / "venvs" / SDK_V3.replace("==", "-")
    python = venv / "bin" / "python"
    if not (venv / "ready").is_file():
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        installed = subprocess.run([str(python), "-m", "pip", "install", "-q", SDK_V3], capture_output=True, text=True)
        assert installed.returncode == 0, installed.stderr[-3000:]
        (venv / "ready").touch()
    return str(python)


@pytest.fixture(scope="session")
def local_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`smimg local api` in a subprocess, as a user runs it: its AWS_ENDPOINT_URL. Jobs named smimg-api-* run
    there; at the end Ctrl-C must stop what still runs and leave none of their containers."""
    yield from api_server(tmp_path_factory.mktemp("api"))


def local_api_env(endpoint: str) -> dict[str, str]:
    """Launch code's environment for the local API: AWS_ENDPOINT_URL at it (the one change), dummy credentials, no
    instance metadata, none of this machine's own AWS settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    return env | {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "a",
        "AWS_SECRET_ACCESS_KEY": "b",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }


def api_server(state: Path, *args: str) -> Iterator[str]:
    """A local API server's endpoint while it serves; then Ctrl-C, which must leave no smimg-api-* container."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    server = subprocess.Popen(
        [*SMIMG, "local", "api", "--port", "0", "--state", str(state), *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    assert server.stdout is not None
    line = server.stdout.readline()
    assert line.startswith("export AWS_ENDPOINT_URL="), line + server.communicate(timeout=30)[1]
    yield line.strip().split("=", 1)[1]
    server.send_signal(signal.SIGINT)  # Ctrl-C: jobs still running are stopped, their hosts removed
    _, err = server.communicate(timeout=200)
    assert server.returncode == 130, err
    from smimg.adapters.docker_engine import default_engine

    assert not default_engine().sdk.containers.list(all=True, filters={"name": "smimg-api-"}), err


@pytest.fixture(scope="session")
def standin_venv_image() -> str:
    """The venv flavour of the stand-in (the Amazon Linux 2023 DLC layout); built by `make test` like the other."""
    from smimg.build import standin

    return standin.ensure_standin(flavour="venv").ref


@dataclass(frozen=True)
class Registry:
    host: str
    username: str | None
    password: str | None

    def auth_header(self) -> dict[str, str]:
        if self.username is None:
            return {}
        token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        return {"Authorization": f"Basic {token}"}


def _start_registry(tmp: Path, username: str | None, password: str | None) -> tuple[subprocess.Popen[bytes], Registry]:
    port = free_port()
    auth = ""
    if username is not None:
        import bcrypt

        assert password is not None
        hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=5)).decode()
        (tmp / "htpasswd").write_text(f"{username}:{hashed}\n")
        auth = f"auth:\n  htpasswd:\n    realm: smimg-test\n    path: {tmp / 'htpasswd'}\n"
    config = tmp / "config.yml"
    config.write_text(
        "version: 0.1\nlog:\n  level: warn\nstorage:\n"
        f"  filesystem:\n    rootdirectory: {tmp / 'data'}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n{auth}"
    )
    with open(tmp / "log", "wb") as log:
        proc = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=subprocess.DEVNULL, stderr=log)
    wait_http(f"http://127.0.0.1:{port}/v2/")
    return proc, Registry(f"127.0.0.1:{port}", username, password)


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """A real OCI registry (Debian's docker-registry) on a free loopback port, with htpasswd auth."""
    if shutil.which("docker-registry") is None:
        pytest.skip("docker-registry is not installed")
    proc, reg = _start_registry(tmp_path_factory.mktemp("registry"), "smimg", "s3cret-Pass")
    yield reg
    proc.terminate()
    proc.wait(10)


@dataclass(frozen=True)
class Moto:
    endpoint: str


@pytest.fixture(scope="session")
def moto_server() -> Iterator[Moto]:
    """moto in server mode on a free loopback port: the ECR, STS and S3 APIs without AWS."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield Moto(f"http://127.0.0.1:{port}")
    server.stop()


@pytest.fixture
def aws_env(moto_server: Moto, monkeypatch: pytest.MonkeyPatch) -> Moto:
    """Dummy credentials and endpoints pointing at moto, in this test's process only."""
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for service in ("ECR", "STS", "S3"):
        monkeypatch.setenv(f"AWS_ENDPOINT_URL_{service}", moto_server.endpoint)
    return moto_server
