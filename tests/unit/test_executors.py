"""Executor logic against the in-memory engine: push retries and verification, build failure explanation,
local-job supervision and clean-up on every exit path. No Docker; each test would fail if the logic regressed."""

from __future__ import annotations

import json
import tarfile
from collections.abc import Sequence
from pathlib import Path

import pytest

import smimg.local.execute as local_executor
import smimg.ship.execute as push_executor
from smimg import build, local, ship
from smimg.adapters import registry
from smimg.adapters.compose import Compose
from smimg.build.explain import explain_failure
from smimg.engine import Image
from smimg.errors import BuildError, DockerUnavailable, PushError, RegistryAuthError
from smimg.spec import PushSpec, load_spec
from smimg_entrypoint import contract
from tests.fakes import FakeContainer, FakeEngine, FakeRegistry, FakeRunner, write_failure

IMAGE_ID = "sha256:" + "1" * 64
DIGEST = "sha256:" + "d" * 64
TARGET = ship.PushTarget("registry.example.com:5000", "ml/trainer")
LABELS = {contract.LABEL_CONTENT_HASH: "f" * 64}


def push_plan(force: bool = False) -> ship.PushPlan:
    image = Image(IMAGE_ID, labels=LABELS)
    return ship.plan_push(source="trainer:ffffffffffff", image=image, target=TARGET, push_spec=PushSpec(), force=force)


def pushed(digest: str = DIGEST) -> list[dict[str, object]]:
    return [
        {"status": "Pushing", "id": "aaa", "progressDetail": {"current": 5, "total": 10}},
        {"status": "Pushed", "id": "aaa"},
        {"status": "Layer already exists", "id": "bbb"},
        {"aux": {"Tag": "ffffffffffff", "Digest": digest, "Size": 1}},
    ]


def good_registry() -> FakeRegistry:
    return FakeRegistry(manifests={DIGEST: (registry.DOCKER_MANIFEST, {"config": {"digest": IMAGE_ID}})})


@pytest.fixture(autouse=True)
def _no_retry_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(push_executor, "RETRY_DELAY", 0.0)


def test_push_retries_a_transient_error_then_verifies() -> None:
    engine = FakeEngine(images={"trainer:ffffffffffff": Image(IMAGE_ID)})
    engine.pushes = [[{"error": "received unexpected HTTP status: 503 Service Unavailable"}], pushed()]
    lines: list[str] = []
    result = ship.push(push_plan(), engine=engine, view=good_registry(), on_line=lines.append)
    assert (result.uri, result.layers_pushed, result.layers_existing, result.bytes_pushed) == (
        f"registry.example.com:5000/ml/trainer@{DIGEST}",
        1,
        1,
        10,
    )
    assert [c[0] for c in engine.calls if c[0] == "push"] == ["push", "push"]
    assert any("retry 1/3" in line for line in lines), lines


def test_push_gives_up_after_the_retries_and_never_retries_auth() -> None:
    engine = FakeEngine(images={"trainer:ffffffffffff": Image(IMAGE_ID)})
    engine.pushes = [[{"error": "connection reset by peer"}]] * push_executor.RETRIES
    with pytest.raises(PushError, match="connection reset by peer"):
        ship.push(push_plan(), engine=engine, view=good_registry())
    assert sum(1 for c in engine.calls if c[0] == "push") == 4
    denied = FakeEngine(
        images={"trainer:ffffffffffff": Image(IMAGE_ID)}, pushes=[[{"error": "denied: requested access"}]]
    )
    with pytest.raises(RegistryAuthError, match=r"registry\.example\.com:5000 refused the push"):
        ship.push(push_plan(), engine=denied, view=good_registry())
    assert sum(1 for c in denied.calls if c[0] == "push") == 1


def test_a_tag_already_in_the_registry_is_not_uploaded_but_still_verified() -> None:
    engine = FakeEngine()
    view = good_registry()
    view.tags["ml/trainer:ffffffffffff"] = DIGEST
    result = ship.push(push_plan(), engine=engine, view=view)
    assert result.skipped and result.digest == DIGEST
    assert not [c for c in engine.calls if c[0] in {"push", "tag"}]


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        ((registry.OCI_INDEX, {"manifests": []}), "holds an image index"),
        ((registry.OCI_MANIFEST, {"config": {"digest": IMAGE_ID}}), "SageMaker expects"),
        ((registry.DOCKER_MANIFEST, {"config": {"digest": "sha256:" + "9" * 64}}), "not the local image"),
        (None, "is not in the registry after the push"),
    ],
)
def test_verification_refuses_what_sagemaker_would_reject(manifest: object, message: str) -> None:
    view = FakeRegistry(manifests={DIGEST: manifest} if manifest else {})  # type: ignore[dict-item]
    with pytest.raises(PushError, match=message):
        push_executor.verify(push_plan(), DIGEST, view)


INSTALLER_FAILURE = """#12 [5/9] RUN /opt/smimg/bin/python /opt/smimg/installer.py /opt/smimg/requirements/install.json
#12 1.203 smimg: /usr/bin/python -m pip install -c /opt/smimg/base-constraints.txt accelerate -r r.txt
#12 4.501 ERROR: Could not find a version that satisfies the requirement nosuchpkg==9.9 (from versions: none)
#12 4.502 ERROR: No matching distribution found for nosuchpkg==9.9
#12 4.530 {marker} {report}
#12 ERROR: process "/bin/sh -c /opt/smimg/bin/python /opt/smimg/installer.py" did not complete: exit code: 1
------
 > [5/9] RUN /opt/smimg/bin/python /opt/smimg/installer.py /opt/smimg/requirements/install.json:
4.502 ERROR: No matching distribution found for nosuchpkg==9.9
------
"""


def test_build_failure_names_the_requirement_pips_reason_and_the_fix() -> None:
    report = {
        "what": "requirements",
        "requirement": "nosuchpkg==9.9",
        "base_package": None,
        "reason": "ERROR: No matching distribution found for nosuchpkg==9.9",
        "fix": "check the name and version of nosuchpkg==9.9 on your index",
    }
    output = INSTALLER_FAILURE.format(marker=contract.INSTALL_FAILURE_MARKER, report=json.dumps(report))
    message, hint = explain_failure(output)
    assert message.splitlines() == [
        "installing the requirements failed at nosuchpkg==9.9",
        "  pip: ERROR: No matching distribution found for nosuchpkg==9.9",
        "  failing step: [5/9] RUN /opt/smimg/bin/python /opt/smimg/installer.py /opt/smimg/requirements/install.json",
    ]
    assert hint == report["fix"]


def test_a_failure_outside_the_installer_shows_the_failing_step() -> None:
    output = "#7 [3/9] RUN apt-get install nope\n#7 0.5 E: Unable to locate package nope\n#7 ERROR: exit code: 100\n"
    message, hint = explain_failure(output)
    assert message.startswith("the image build failed\n  failing step: [3/9] RUN apt-get install nope")
    assert "E: Unable to locate package nope" in message
    assert "fix it and build again" in hint


def test_build_reuses_an_existing_content_tag_and_explains_a_failed_one(tmp_path: Path) -> None:
    (tmp_path / "smimg.yaml").write_text("name: fake/job\nbase: {image: base:1}\n")
    engine = FakeEngine(images={"base:1": Image("sha256:" + "a" * 64)})
    loaded = load_spec(tmp_path)
    tag = build.prepare(loaded, engine=engine).content_tag
    engine.images[tag] = Image("sha256:" + "c" * 64, tags=(tag,))
    reused = build.build(loaded, extra_tags=["latest"], engine=engine)
    assert not reused.built and ("tag", tag, "fake/job:latest") in engine.calls
    assert not [c for c in engine.calls if c[0] == "build"]
    del engine.images[tag]
    engine.build_output = INSTALLER_FAILURE.format(marker="", report="")
    with pytest.raises(BuildError, match="failing step: \\[5/9\\]"):
        build.build(loaded, engine=engine)


# --- local mode -------------------------------------------------------------------------------------------------


def local_job(tmp_path: Path, containers: dict[str, FakeContainer]) -> tuple[local.LocalPlan, FakeEngine, FakeRunner]:
    engine = FakeEngine(images={"job:1": Image(IMAGE_ID)})
    job = local.LocalJob(image="job:1", instances=len(containers), name="fake-job")
    plan = local.plan_job(job, tmp_path / "run")

    def compose_acts(argv: Sequence[str]) -> None:
        if "up" in argv:
            engine.containers.update({plan.container(host): c for host, c in containers.items()})

    return plan, engine, FakeRunner(compose_acts)


def compose_verbs(runner: FakeRunner) -> list[str]:
    return [argv[6] for argv in runner.commands]  # docker compose --project-name P --file F VERB


def test_the_first_failure_stops_the_other_hosts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local_executor, "STOP_GRACE", 0.0)
    # Left alone, algo-1 and algo-3 would succeed after 20 polls: only the stop makes them 143.
    hosts = {"algo-1": FakeContainer(polls=20), "algo-2": FakeContainer(exit_code=3, polls=2)}
    hosts["algo-3"] = FakeContainer(polls=20)
    plan, engine, runner = local_job(tmp_path, hosts)
    write_failure(plan.run_dir, "algo-2", "ValueError: rank 3 was told to fail")
    result = local.run(
        plan, output=tmp_path / "out", keep=True, engine=engine, compose=Compose(("docker", "compose"), "2", runner)
    )
    assert [(h.name, h.exit_code, h.stopped) for h in result.hosts] == [
        ("algo-1", 143, True),
        ("algo-2", 3, False),
        ("algo-3", 143, True),
    ]
    assert result.failed is not None and result.failed.name == "algo-2"
    assert result.failed.failure == "ValueError: rank 3 was told to fail"
    assert sorted(c[1] for c in engine.calls if c[0] == "stop") == ["fake-job-algo-1", "fake-job-algo-3"]
    assert result.model is None and (tmp_path / "out" / "output.tar.gz").is_file()
    assert compose_verbs(runner) == ["up", "down"]


def test_success_packages_the_merged_model(tmp_path: Path) -> None:
    plan, engine, runner = local_job(tmp_path, {"algo-1": FakeContainer(), "algo-2": FakeContainer(polls=3)})
    for host, name in (("algo-1", "a.bin"), ("algo-2", "b.bin")):
        (plan.run_dir / host / "model").mkdir(parents=True)
        (plan.run_dir / host / "model" / name).write_text(host)
    result = local.run(
        plan, output=tmp_path / "out", engine=engine, compose=Compose(("docker", "compose"), "2", runner)
    )
    assert result.ok and result.model is not None
    with tarfile.open(result.model) as archive:
        assert sorted(archive.getnames()) == ["a.bin", "b.bin"]
    assert compose_verbs(runner) == ["up", "down"] and not plan.run_dir.exists()


@pytest.mark.parametrize("fault", [KeyboardInterrupt(), DockerUnavailable("lost the connection to the Docker engine")])
def test_every_exit_path_cleans_up(tmp_path: Path, fault: BaseException) -> None:
    plan, engine, runner = local_job(tmp_path, {"algo-1": FakeContainer(polls=10**6)})

    def broken(name: str) -> None:
        raise fault

    engine.container_state = broken  # type: ignore[assignment,method-assign]
    with pytest.raises(type(fault)):
        local.run(plan, output=tmp_path / "out", engine=engine, compose=Compose(("docker", "compose"), "2", runner))
    assert compose_verbs(runner) == ["up", "down"]
    assert not plan.run_dir.exists()


def test_a_name_clash_is_refused_before_anything_starts(tmp_path: Path) -> None:
    plan, engine, runner = local_job(tmp_path, {"algo-1": FakeContainer()})
    engine.networks.add(plan.network)
    with pytest.raises(Exception, match="network named fake-job already exists"):
        local.run(plan, output=tmp_path / "out", engine=engine, compose=Compose(("docker", "compose"), "2", runner))
    assert runner.commands == [] and not plan.run_dir.exists()


def test_the_root_cause_is_the_host_that_blames_no_peer() -> None:
    echo = local.HostResult("algo-1", 1, "peer algo-2 failed: ValueError: boom", False, "2026-11-21T00:00:01Z")
    root = local.HostResult("algo-2", 1, "ExitCode 1 on algo-2 local rank 1: ValueError: boom", False, "T00:00:02Z")
    result = local.LocalResult("j", 1.0, (echo, root), None, None, None)
    assert result.failed == root
