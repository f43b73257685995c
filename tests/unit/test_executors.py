"""Executor logic against the in-memory engine: push retries and verification, build failure explanation,
local-job supervision and clean-up on every exit path. No Docker; each test would fail if the logic regressed."""

from __future__ import annotations

import fcntl
import json
import os
import tarfile
import time
from dataclasses import replace
from pathlib import Path

import pytest

import smimg.local.execute as local_executor
import smimg.local.jobs as local_jobs
import smimg.local.results as local_results
import smimg.ship.execute as push_executor
from smimg import build, local, ship
from smimg.adapters import registry
from smimg.build.explain import explain_failure
from smimg.engine import ContainerState, Image
from smimg.errors import BuildError, DockerUnavailable, LocalError, PushError, RegistryAuthError
from smimg.spec import PushSpec, load_spec
from smimg_entrypoint import contract
from tests.fakes import FakeContainer, FakeEngine, FakeRegistry

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


def local_job(
    tmp_path: Path, containers: dict[str, FakeContainer], writes: dict[str, str] | None = None
) -> tuple[local.LocalPlan, FakeEngine]:
    """A job whose hosts, once started, do what ``containers`` script; the first start writes ``writes`` (path in
    the run folder → text) as the containers would."""
    engine = FakeEngine(images={"job:1": Image(IMAGE_ID)})
    job = local.LocalJob(image="job:1", instances=len(containers), name="fake-job")
    plan = local.plan_job(job, tmp_path / "run")
    engine.scripted = {plan.container(host): c for host, c in containers.items()}

    def write(name: str) -> None:
        if name == plan.containers[0].name:
            for relative, text in (writes or {}).items():
                (plan.run_dir / relative).parent.mkdir(parents=True, exist_ok=True)
                (plan.run_dir / relative).write_text(text)

    engine.on_start = write
    return plan, engine


def verbs(engine: FakeEngine) -> list[str]:
    """The job's network created (up) and removed (down), in order."""
    verb = {"create_network": "up", "remove_network": "down"}
    return [verb[c[0]] for c in engine.calls if c[0] in verb]


def test_the_first_failure_stops_the_other_hosts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local_executor, "STOP_GRACE", 0.0)
    # Left alone, algo-1 and algo-3 would succeed after 20 polls: only the stop makes them 143.
    hosts = {"algo-1": FakeContainer(polls=20), "algo-2": FakeContainer(exit_code=3, polls=2)}
    hosts["algo-3"] = FakeContainer(polls=20)
    plan, engine = local_job(
        tmp_path, hosts, {f"algo-2/{contract.FAILURE_FILE}": "ValueError: rank 3 was told to fail"}
    )
    result = local.run(plan, output=tmp_path / "out", keep=True, engine=engine)
    assert [(h.name, h.exit_code, h.stopped) for h in result.hosts] == [
        ("algo-1", 143, True),
        ("algo-2", 3, False),
        ("algo-3", 143, True),
    ]
    assert result.failed is not None and result.failed.name == "algo-2"
    assert result.failed.failure == "ValueError: rank 3 was told to fail"
    assert sorted(c[1] for c in engine.calls if c[0] == "stop") == ["fake-job-algo-1", "fake-job-algo-3"]
    assert result.model is None and (tmp_path / "out" / "output.tar.gz").is_file()
    assert verbs(engine) == ["up", "down"]


def test_success_packages_the_merged_model(tmp_path: Path) -> None:
    writes = {"algo-1/model/a.bin": "algo-1", "algo-2/model/b.bin": "algo-2"}
    plan, engine = local_job(tmp_path, {"algo-1": FakeContainer(), "algo-2": FakeContainer(polls=3)}, writes)
    result = local.run(plan, output=tmp_path / "out", engine=engine)
    assert result.ok and result.model is not None
    with tarfile.open(result.model) as archive:
        assert sorted(archive.getnames()) == ["a.bin", "b.bin"]
    assert verbs(engine) == ["up", "down"] and not plan.run_dir.exists()


@pytest.mark.parametrize("fault", [KeyboardInterrupt(), DockerUnavailable("lost the connection to the Docker engine")])
def test_every_exit_path_cleans_up(tmp_path: Path, fault: BaseException) -> None:
    plan, engine = local_job(tmp_path, {"algo-1": FakeContainer(polls=10**6)})
    state = engine.container_state
    faults = [fault]

    def broken(name: str) -> ContainerState:  # the fault strikes while the job runs, once
        if faults:
            raise faults.pop()
        return state(name)

    engine.container_state = broken  # type: ignore[method-assign]
    with pytest.raises(type(fault)):
        local.run(plan, output=tmp_path / "out", engine=engine)
    assert verbs(engine) == ["up", "down"]
    # The host still running got SIGTERM and time to save its work, then was removed.
    assert [c for c in engine.calls if c[0] in {"kill", "remove_container"}] == [
        ("kill", "fake-job-algo-1", "SIGTERM"),
        ("remove_container", "fake-job-algo-1"),
    ]
    assert not plan.run_dir.exists() and not engine.containers
    watched = f"{contract.LABEL_JOB}={plan.project}"
    assert engine.watches == [watched, f"stopped {watched}"]  # the engine's events are not left streaming


def test_an_interrupt_after_the_hosts_finished_keeps_the_unpackaged_model(tmp_path: Path) -> None:
    plan, engine = local_job(tmp_path, {"algo-1": FakeContainer(polls=10**6)}, {"algo-1/model/m.bin": "w"})
    state, interrupts = engine.container_state, [KeyboardInterrupt()]

    def interrupted(name: str) -> ContainerState:
        if interrupts:
            raise interrupts.pop()
        return state(name)

    engine.container_state = interrupted  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        local.run(plan, output=tmp_path / "out", engine=engine)
    assert (plan.run_dir / "algo-1" / "model" / "m.bin").read_text() == "w"
    assert (tmp_path / "out" / "output.tar.gz").is_file() and not (tmp_path / "out" / "model.tar.gz").exists()


def test_a_rerun_clears_what_an_interrupted_run_of_its_name_left_and_keeps_its_results(tmp_path: Path) -> None:
    plan, engine = local_job(tmp_path, {"algo-1": FakeContainer()}, {"algo-1/model/new.bin": "new"})
    # What a 3-host run killed mid-way leaves: stopped containers, the network, a run folder with a checkpoint.
    for host in ("algo-1", "algo-3"):
        engine.containers[plan.container(host)] = FakeContainer(polls=0)
        engine.labels[plan.container(host)] = plan.labels
    engine.networks[plan.network] = plan.labels
    local.write_run_dir(plan)
    (plan.run_dir / "algo-1" / "checkpoints" / "step-9.pt").write_text("old")
    lines: list[str] = []
    result = local.run(plan, output=tmp_path / "out", engine=engine, on_line=lines.append)
    assert result.ok and verbs(engine) == ["down", "up", "down"]
    assert plan.container("algo-3") not in engine.containers  # a host this run does not have, removed too
    [kept] = [p for p in tmp_path.iterdir() if p.name.startswith("run.")]
    assert (kept / "algo-1" / "checkpoints" / "step-9.pt").read_text() == "old"
    assert any(str(kept) in line for line in lines) and not plan.run_dir.exists()
    with tarfile.open(tmp_path / "out" / "model.tar.gz") as archive:
        assert archive.getnames() == ["new.bin"]  # nothing of the earlier run mixed in


def test_a_running_container_of_the_name_or_a_live_run_is_refused_before_anything_starts(tmp_path: Path) -> None:
    plan, engine = local_job(tmp_path, {"algo-1": FakeContainer()})
    engine.containers[plan.container("algo-1")] = FakeContainer(polls=10**6)
    engine.labels[plan.container("algo-1")] = plan.labels
    with pytest.raises(LocalError, match="running outside smimg's control: fake-job-algo-1"):
        local.run(plan, output=tmp_path / "out", engine=engine)
    assert verbs(engine) == [] and not plan.run_dir.exists()
    del engine.containers[plan.container("algo-1")], engine.labels[plan.container("algo-1")]
    with local_executor.job_lock(plan), pytest.raises(LocalError, match="already running here"):
        local.run(plan, output=tmp_path / "out", engine=engine)
    assert verbs(engine) == []


@pytest.mark.parametrize("stranger", ["container", "network"])
def test_a_container_or_network_of_the_jobs_names_that_smimg_did_not_make_is_refused_never_removed(
    tmp_path: Path, stranger: str
) -> None:
    plan, engine = local_job(tmp_path, {"algo-1": FakeContainer()})
    if stranger == "container":
        engine.containers[plan.container("algo-1")] = FakeContainer(polls=0)  # someone's own, unlabelled
    else:
        engine.networks[plan.network] = {}
    with pytest.raises(LocalError, match="smimg did not make them for job fake-job"):
        local.run(plan, output=tmp_path / "out", engine=engine)
    assert not [c for c in engine.calls if c[0].startswith("remove")]


def test_a_host_the_engine_refuses_to_create_leaves_nothing_behind(tmp_path: Path) -> None:
    plan, engine = local_job(tmp_path, {"algo-1": FakeContainer(), "algo-2": FakeContainer()})
    engine.refuse_create = plan.container("algo-2")
    with pytest.raises(LocalError, match="could not create container fake-job-algo-2"):
        local.run(plan, output=tmp_path / "out", engine=engine)
    assert engine.created == {} and engine.networks == {} and not plan.run_dir.exists()


def test_a_run_folder_smimg_did_not_make_is_refused_never_removed(tmp_path: Path) -> None:
    plan, engine = local_job(tmp_path, {"algo-1": FakeContainer()})
    plan.run_dir.mkdir()
    (plan.run_dir / "thesis.tex").write_text("years of work")
    with pytest.raises(LocalError, match="is not one smimg made"):
        local.run(plan, output=tmp_path / "out", engine=engine)
    assert (plan.run_dir / "thesis.tex").read_text() == "years of work" and verbs(engine) == []


@pytest.mark.parametrize("blocker", ["file", "parent-file", "earlier-results"])
def test_a_bad_output_is_refused_before_the_job_starts(tmp_path: Path, blocker: str) -> None:
    plan, engine = local_job(tmp_path, {"algo-1": FakeContainer()})
    output = {"file": tmp_path / "f", "parent-file": tmp_path / "f" / "out", "earlier-results": tmp_path / "old"}[
        blocker
    ]
    if blocker == "earlier-results":
        output.mkdir()
        (output / "model.tar.gz").write_text("an earlier job's model")
    else:
        (tmp_path / "f").write_text("a file")
    with pytest.raises(LocalError, match="--output"):
        local.run(plan, output=output, engine=engine)
    assert verbs(engine) == [] and not plan.run_dir.exists()


def test_results_that_cannot_be_written_keep_the_run_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plan, engine = local_job(tmp_path, {"algo-1": FakeContainer()}, {"algo-1/model/m.bin": "weights"})

    def full_disk(*_: object) -> Path:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(local_results, "_merged_tar", full_disk)
    with pytest.raises(LocalError, match=f"kept in {plan.run_dir}"):
        local.run(plan, output=tmp_path / "out", engine=engine)
    assert (plan.run_dir / "algo-1" / "model" / "m.bin").read_text() == "weights"
    assert verbs(engine) == ["up", "down"]


def test_a_lost_engine_names_what_is_left_and_the_command_that_removes_it(tmp_path: Path) -> None:
    plan, engine = local_job(tmp_path, {"algo-1": FakeContainer(polls=10**6)}, {"algo-1/output/data/m": "1"})
    started = engine.on_start
    assert started is not None

    def lose_engine(name: str) -> None:
        started(name)
        engine.lost = True

    engine.on_start = lose_engine
    with pytest.raises(LocalError) as caught:
        local.run(plan, output=tmp_path / "out", engine=engine)
    assert "the Docker engine stopped answering" in caught.value.message
    assert "lost the connection to the Docker engine" in caught.value.message
    assert "docker rm -f fake-job-algo-1 && docker network rm fake-job" in caught.value.hint
    with tarfile.open(tmp_path / "out" / "output.tar.gz") as archive:
        assert "data/m" in archive.getnames()  # results saved although the engine is gone


def test_the_root_cause_is_the_host_that_blames_no_peer() -> None:
    echo = local.HostResult("algo-1", 1, "peer algo-2 failed: ValueError: boom", False, "2026-11-21T00:00:01Z")
    root = local.HostResult("algo-2", 1, "ExitCode 1 on algo-2 local rank 1: ValueError: boom", False, "T00:00:02Z")
    result = local.LocalResult("j", 1.0, (echo, root), None, None, None, None)
    assert result.failed == root


def test_max_run_signals_every_host_then_kills_and_the_job_is_stopped(tmp_path: Path) -> None:
    # Neither host would end by itself: only the timed stop's SIGTERM (a kill) ends them.
    plan, engine = local_job(tmp_path, {"algo-1": FakeContainer(polls=10**6), "algo-2": FakeContainer(polls=10**6)})
    plan = local.plan_job(replace(plan.job, conditions=local.Conditions(max_run=0.3, stop_grace=5)), plan.run_dir)
    result = local.run(plan, output=tmp_path / "out", engine=engine)
    assert (result.status, result.ended_by, result.ok) == ("Stopped", "MaxRuntimeExceeded", False)
    kills = [call for call in engine.calls if call[0] == "kill"]
    assert kills == [("kill", plan.container("algo-1"), "SIGTERM"), ("kill", plan.container("algo-2"), "SIGTERM")]
    assert result.attempts[0].stop_seconds is not None and result.attempts[0].stop_seconds < 5


def test_checkpoints_kept_are_each_hosts_newest_not_a_restored_copy(tmp_path: Path) -> None:
    # Every host was restored with both files; each then wrote its own: a later host's untouched copy of an
    # earlier host's file must not win (SageMaker syncs up changed files only).
    conditions = local.Conditions(checkpoints=tmp_path / "ckpt")
    plan = local.plan_job(
        local.LocalJob(image="job:1", instances=2, name="ck", conditions=conditions), tmp_path / "run"
    )
    for host, own in (("algo-1", "algo-1.json"), ("algo-2", "algo-2.json")):
        folder = plan.host_dir(host) / contract.CHECKPOINTS_DIR
        folder.mkdir(parents=True)
        for name in ("algo-1.json", "algo-2.json"):
            (folder / name).write_text("restored")
            os.utime(folder / name, (1_000_000, 1_000_000))
        (folder / own).write_text(f"{host} saved")
    local_results.keep_checkpoints(plan)
    assert {p.name: p.read_text() for p in (tmp_path / "ckpt").iterdir()} == {
        "algo-1.json": "algo-1 saved",
        "algo-2.json": "algo-2 saved",
    }
    (tmp_path / "out").mkdir()
    saved = local_results.save(plan, tmp_path / "out", success=True)
    assert saved.checkpoints is not None and (saved.checkpoints / "algo-1.json").read_text() == "algo-1 saved"


def test_running_jobs_are_listed_while_they_hold_their_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    job = local_jobs.this_process("job-1", "job-1", 2, tmp_path / "run", tmp_path / "out")
    assert local.running() == []
    with local_jobs.hold(job):
        assert local.running() == [job]
        with pytest.raises(LocalError, match="smimg local stop job-1"), local_jobs.hold(job):
            pass
    assert local.running() == []
    with pytest.raises(LocalError, match=r"no local job named job-2 is running \(running: none\)"):
        local.stop("job-2")


def test_a_host_failing_before_the_run_limit_is_a_failure_not_a_stop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(local_executor, "STOP_GRACE", 1.0)
    hosts = {"algo-1": FakeContainer(polls=10**6), "algo-2": FakeContainer(exit_code=1, polls=2)}
    plan, engine = local_job(tmp_path, hosts)
    plan = local.plan_job(replace(plan.job, conditions=local.Conditions(max_run=0.5, stop_grace=5)), plan.run_dir)
    result = local.run(plan, output=tmp_path / "out", keep=True, engine=engine)
    assert (result.status, result.ended_by) == ("Failed", None)
    assert not [call for call in engine.calls if call[0] == "kill"]  # the failure path stopped algo-1, not --max-run
    assert result.model is None


def test_a_partial_copy_never_passes_for_the_newest_checkpoint(tmp_path: Path) -> None:
    conditions = local.Conditions(checkpoints=tmp_path / "ckpt")
    plan = local.plan_job(local.LocalJob(image="job:1", name="ck", conditions=conditions), tmp_path / "run")
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "model.pt").write_text("good")
    assert local_results.restore_checkpoints(plan) == ("model.pt",)
    folder = plan.host_dir("algo-1") / contract.CHECKPOINTS_DIR
    (folder / f".model.pt{local_results.PARTIAL}").write_text("trunc")  # an interrupted copy, newer than all
    local_results.keep_checkpoints(plan)
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["model.pt"]
    assert (tmp_path / "ckpt" / "model.pt").read_text() == "good"


def test_a_checkpoint_location_inside_the_output_is_refused_before_the_job(tmp_path: Path) -> None:
    conditions = local.Conditions(checkpoints=tmp_path / "out" / "checkpoints")
    plan = local.plan_job(local.LocalJob(image="job:1", name="ck", conditions=conditions), tmp_path / "run")
    with pytest.raises(LocalError, match="overlaps --output"):
        local_results.check_checkpoints(plan, tmp_path / "out")


def test_a_lock_taken_but_not_yet_written_is_not_a_crash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    locks = tmp_path / "cache" / "smimg" / "locks"
    locks.mkdir(parents=True)
    with open(locks / "local-starting.lock", "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert local.running() == []


def test_the_supervisor_sleeps_until_a_stream_ends_or_something_is_due() -> None:
    wait, now = local_executor._wait, time.monotonic()
    idle, ending = local_executor.IDLE_POLL, local_executor.ENDING_POLL
    assert wait(["algo-1", "algo-2"], {}, []) == idle  # the engine is not asked while every stream runs
    assert wait(["algo-2"], {"algo-1": now, "algo-2": now}, []) == ending  # its stream ended, the engine lags
    assert wait(["algo-2"], {"algo-2": now - 60}, []) == idle  # a stream lost long ago: back to the idle pace
    assert wait(["algo-1"], {}, [now + 0.3]) == pytest.approx(0.31, abs=0.02)  # a timed stop or a grace's end
    assert wait(["algo-1"], {}, [now - 5]) == 0.0
