"""Local mode: a multi-node SageMaker training job on this machine, as a compose project of ``algo-1..N``.

``plan_job`` is pure: a job description in, a frozen ``LocalPlan`` out, holding every file of the run folder (the
compose file and, per host, the /opt/ml tree SageMaker creates) and what each container mounts. ``run`` executes
it: start the containers, interleave their logs with a host prefix, stop the rest when one fails, judge every
container's exit code, package ``model.tar.gz`` and ``output.tar.gz`` as SageMaker does, and always clean up.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import re
import shutil
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from smimg import compose, docker, images, resources
from smimg.errors import LocalError

GROUP = "homogeneousCluster"
MAX_INSTANCES = 32
SHM_SIZE = "8g"
STOP_GRACE = 15.0  # the entrypoints' own fate sharing usually ends the other hosts well within this
CODE_DIR = "/opt/ml/code"
_CHANNEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class LocalJob:
    """What to run: an image, how many hosts, inputs (already local), hyperparameters, code and environment."""

    image: str
    instances: int = 1
    channels: tuple[tuple[str, Path], ...] = ()
    hyperparameters: tuple[tuple[str, Any], ...] = ()
    source_dir: Path | None = None
    entry_point: str | None = None
    gpus: str | None = None
    env: tuple[tuple[str, str], ...] = ()
    name: str = "smimg-local"


@dataclass(frozen=True)
class HostPlan:
    name: str
    gpu_ids: tuple[str, ...]
    files: tuple[tuple[str, str], ...]  # path inside the host's /opt/ml -> content
    dirs: tuple[str, ...]  # folders inside the host's /opt/ml to create


@dataclass(frozen=True)
class LocalPlan:
    job: LocalJob
    run_dir: Path
    project: str
    hosts: tuple[HostPlan, ...]
    compose: Mapping[str, Any] = field(hash=False)

    @property
    def compose_file(self) -> Path:
        return self.run_dir / "docker-compose.yaml"

    @property
    def network(self) -> str:
        return self.project

    def compose_yaml(self) -> str:
        return yaml.safe_dump(json.loads(json.dumps(self.compose)), sort_keys=False)

    def host_dir(self, host: str) -> Path:
        return self.run_dir / host

    def container(self, host: str) -> str:
        return f"{self.project}-{host}"


def hyperparameter_value(text: str) -> Any:
    """A ``--hp key=value`` value as the SDK would have it: JSON when it parses (3, 0.1, true, [1]), else text."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def job_name(prefix: str = "smimg-local") -> str:
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S-%f")[:-3]
    return f"{prefix}-{stamp}"


def plan_job(job: LocalJob, run_dir: Path, available_gpus: Sequence[str] = ()) -> LocalPlan:
    """Turn a job into the run folder's files and the compose project. Pure.

    Raises:
        LocalError: an invalid instance count, channel name or GPU request.
    """
    if not 1 <= job.instances <= MAX_INSTANCES:
        raise LocalError(
            f"--instances {job.instances} is not a valid instance count", f"use 1 to {MAX_INSTANCES} instances"
        )
    for name, _ in job.channels:
        if not _CHANNEL.match(name) or name == "code":
            raise LocalError(f"channel name {name!r} is not valid", "use letters, digits, '-', '_' (e.g. train)")
    if job.source_dir is not None and not job.entry_point:
        raise LocalError("--source-dir needs --entry-point", "name the script to run, e.g. --entry-point train.py")
    slices = _gpu_slices(job.gpus, job.instances, available_gpus)
    hosts = [f"algo-{i}" for i in range(1, job.instances + 1)]
    project = re.sub(r"[^a-z0-9-]", "-", job.name.lower())
    hyperparameters = dict(job.hyperparameters)
    if job.source_dir is not None:
        # What the SDK's local mode sends for local code: the program and where the mounted code is.
        hyperparameters["sagemaker_program"] = job.entry_point
        hyperparameters["sagemaker_submit_directory"] = CODE_DIR
    encoded = {key: json.dumps(value) for key, value in sorted(hyperparameters.items())}
    data_config = {
        name: {"TrainingInputMode": "File", "S3DistributionType": "FullyReplicated", "RecordWrapperType": "None"}
        for name, _ in job.channels
    }
    host_plans = []
    services: dict[str, Any] = {}
    for host, gpu_ids in zip(hosts, slices, strict=True):
        resource = {
            "current_host": host,
            "current_group_name": GROUP,
            "current_instance_type": "local_gpu" if gpu_ids else "local",
            "hosts": hosts,
            "instance_groups": [{"instance_group_name": GROUP, "instance_type": "local", "hosts": hosts}],
            "network_interface_name": "eth0",
        }
        files = (
            ("input/config/resourceconfig.json", json.dumps(resource, indent=2)),
            ("input/config/hyperparameters.json", json.dumps(encoded, indent=2)),
            ("input/config/inputdataconfig.json", json.dumps(data_config, indent=2)),
        )
        dirs = ("model", "output/data", "checkpoints", *(f"input/data/{name}" for name, _ in job.channels))
        host_plans.append(HostPlan(host, gpu_ids, files, dirs))
        services[host] = _service(job, run_dir / host, host, project, gpu_ids)
    spec = {"services": services, "networks": {"default": {"name": project}}}
    return LocalPlan(job=job, run_dir=run_dir, project=project, hosts=tuple(host_plans), compose=spec)


def _service(job: LocalJob, host_dir: Path, host: str, project: str, gpu_ids: tuple[str, ...]) -> dict[str, Any]:
    volumes = [f"{host_dir}:/opt/ml"]
    volumes += [f"{source}:/opt/ml/input/data/{name}:ro" for name, source in job.channels]
    if job.source_dir is not None:
        volumes.append(f"{job.source_dir}:{CODE_DIR}:ro")
    service: dict[str, Any] = {
        "image": job.image,
        "container_name": f"{project}-{host}",
        "hostname": host,
        "command": "train",
        "shm_size": SHM_SIZE,
        "environment": {"TRAINING_JOB_NAME": job.name, **dict(job.env)},
        "volumes": volumes,
        "networks": {"default": {"aliases": [host]}},
    }
    if gpu_ids:
        device = {"driver": "nvidia", "device_ids": list(gpu_ids), "capabilities": ["gpu"]}
        service["deploy"] = {"resources": {"reservations": {"devices": [device]}}}
    return service


def _gpu_slices(gpus: str | None, instances: int, available: Sequence[str]) -> list[tuple[str, ...]]:
    if gpus is None:
        return [()] * instances
    if gpus == "all":
        wanted = len(available)
    elif gpus.isdigit() and int(gpus) > 0:
        wanted = int(gpus)
    else:
        raise LocalError(f"--gpus {gpus!r} is not valid", "use --gpus all, or a total count such as --gpus 4")
    if wanted == 0 or wanted > len(available):
        raise LocalError(
            f"--gpus {gpus} asks for {wanted or 'all'} GPUs but this machine has {len(available)}",
            "leave --gpus out to run on CPU, or ask for at most the GPUs `nvidia-smi -L` lists",
        )
    if wanted % instances:
        raise LocalError(
            f"{wanted} GPUs do not split evenly over {instances} instances",
            "use a GPU count that is a multiple of --instances (SageMaker instances have equal GPUs)",
        )
    per = wanted // instances
    return [tuple(available[i * per : (i + 1) * per]) for i in range(instances)]


def write_run_dir(plan: LocalPlan) -> None:
    """Write the compose file and every host's /opt/ml tree."""
    plan.run_dir.mkdir(parents=True, exist_ok=True)
    plan.compose_file.write_text(plan.compose_yaml())
    for host in plan.hosts:
        base = plan.host_dir(host.name)
        for folder in host.dirs:
            (base / folder).mkdir(parents=True, exist_ok=True)
        for relative, content in host.files:
            (base / relative).parent.mkdir(parents=True, exist_ok=True)
            (base / relative).write_text(content)


# --- inputs ---------------------------------------------------------------------------------------------------


def parse_pairs(items: Iterable[str], what: str) -> list[tuple[str, str]]:
    """``KEY=VALUE`` strings to pairs.

    Raises:
        LocalError: an item without ``=``.
    """
    pairs = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise LocalError(f"{what} {item!r} is not KEY=VALUE", f"write it as {what} name=value")
        pairs.append((key, value))
    return pairs


def load_hyperparameters(path: Path | None, pairs: Iterable[tuple[str, str]]) -> tuple[tuple[str, Any], ...]:
    """A JSON file of hyperparameters (optional), then ``--hp`` pairs over it.

    Raises:
        LocalError: the file is missing, not JSON, or not an object.
    """
    values: dict[str, Any] = {}
    if path is not None:
        if not path.is_file():
            raise LocalError(f"hyperparameter file {path} does not exist", "pass the path of a JSON object file")
        try:
            loaded = json.loads(path.read_text())
        except ValueError as exc:
            raise LocalError(f"hyperparameter file {path} is not JSON: {exc}", "write one JSON object") from None
        if not isinstance(loaded, dict):
            raise LocalError(f"hyperparameter file {path} holds no JSON object", 'write e.g. {"epochs": 3}')
        values.update(loaded)
    values.update((key, hyperparameter_value(value)) for key, value in pairs)
    return tuple(sorted(values.items()))


def make_job(
    image: str,
    *,
    instances: int = 1,
    inputs: Iterable[str] = (),
    hyperparameters: Iterable[str] = (),
    hyperparameter_file: Path | None = None,
    source_dir: Path | None = None,
    entry_point: str | None = None,
    gpus: str | None = None,
    env: Iterable[str] = (),
    name: str | None = None,
    on_line: Callable[[str], None] | None = None,
) -> LocalJob:
    """A job from command-line style inputs (``NAME=PATH|file://|s3://``, ``key=value``), checked and resolved.

    Raises:
        LocalError: a malformed pair, a missing path or hyperparameter file.
    """
    cache = resources.cache_dir() / "channels"
    channels = tuple(
        (key, resolve_channel(key, value, cache, on_line)) for key, value in parse_pairs(inputs, "--input")
    )
    if source_dir is not None:
        source_dir = source_dir.expanduser().resolve()
        if not source_dir.is_dir():
            raise LocalError(f"--source-dir {source_dir} is not a folder", "pass the folder that holds your script")
        if entry_point and not (source_dir / entry_point).is_file():
            raise LocalError(f"--entry-point {entry_point} is not in {source_dir}", "name a script in --source-dir")
    return LocalJob(
        image=image,
        instances=instances,
        channels=channels,
        hyperparameters=load_hyperparameters(hyperparameter_file, parse_pairs(hyperparameters, "--hp")),
        source_dir=source_dir,
        entry_point=entry_point,
        gpus=gpus,
        env=tuple(parse_pairs(env, "--env")),
        name=name or job_name(),
    )


def default_run_dir(job: LocalJob) -> Path:
    return resources.cache_dir() / "runs" / job.name


def resolve_channel(name: str, source: str, cache: Path, on_line: Callable[[str], None] | None = None) -> Path:
    """A channel's local folder: a path or file:// URI as it is, an s3:// prefix downloaded once into ``cache``.

    Raises:
        LocalError: the path does not exist.
        AwsError: the S3 download failed.
    """
    if source.startswith("s3://"):
        return _download_s3(source, cache, on_line)
    path = Path(source.removeprefix("file://")).expanduser().resolve()
    if not path.exists():
        raise LocalError(f"channel {name!r}: {path} does not exist", f"pass --input {name}=EXISTING_FOLDER")
    return path


def _download_s3(uri: str, cache: Path, on_line: Callable[[str], None] | None) -> Path:
    from smimg import ecr

    target = cache / hashlib.sha256(uri.encode()).hexdigest()[:16]
    if (target / ".complete").exists():
        return target
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    s3 = ecr.client("s3", None)
    partial = target.with_suffix(".partial")
    shutil.rmtree(partial, ignore_errors=True)
    count = 0
    for page in ecr.call(s3.get_paginator("list_objects_v2").paginate, f"list {uri}", Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            key = item["Key"]
            relative = key[len(prefix) :].lstrip("/") or Path(key).name
            destination = partial / relative
            destination.parent.mkdir(parents=True, exist_ok=True)
            ecr.call(
                s3.download_file, f"download s3://{bucket}/{key}", Bucket=bucket, Key=key, Filename=str(destination)
            )
            count += 1
    if count == 0:
        raise LocalError(f"nothing under {uri}", "check the bucket and prefix")
    if on_line:
        on_line(f"downloaded {count} objects from {uri} into {target}")
    partial.rename(target)
    (target / ".complete").touch()
    return target


def available_gpus() -> list[str]:
    """GPU indices `nvidia-smi` reports on this machine; none without the NVIDIA driver."""
    import subprocess

    if shutil.which("nvidia-smi") is None:
        return []
    proc = subprocess.run(
        ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"], capture_output=True, text=True, check=False
    )
    return [line.strip() for line in proc.stdout.splitlines() if line.strip()] if proc.returncode == 0 else []


# --- execution ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HostResult:
    name: str
    exit_code: int
    failure: str | None
    stopped: bool  # smimg stopped it after another host failed
    finished_at: str  # the engine's RFC 3339 time; the first host to fail is the likeliest root cause


@dataclass(frozen=True)
class LocalResult:
    job_name: str
    seconds: float
    hosts: tuple[HostResult, ...]
    model: Path | None
    output: Path | None
    run_dir: Path | None

    @property
    def ok(self) -> bool:
        return all(h.exit_code == 0 for h in self.hosts)

    @property
    def failed(self) -> HostResult | None:
        """The host whose failure ended the job (not one smimg stopped afterwards)."""
        failed = sorted((h for h in self.hosts if h.exit_code != 0), key=lambda h: (h.stopped, h.finished_at))
        return failed[0] if failed else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "job_name": self.job_name,
            "ok": self.ok,
            "seconds": round(self.seconds, 2),
            "hosts": [h.__dict__ for h in self.hosts],
            "model": str(self.model) if self.model else None,
            "output": str(self.output) if self.output else None,
            "run_dir": str(self.run_dir) if self.run_dir else None,
        }


def prepare(plan: LocalPlan) -> compose.Compose:
    """Check what a run needs before anything starts, and write the run folder.

    Raises:
        ImageNotFound: the image is not local.
        LocalError: no compose, or a network or container of the same name exists.
    """
    from docker.errors import NotFound

    images.require(plan.job.image, "to run", "build it with `smimg build` (local mode never pulls)")
    tool = compose.find_compose()
    client = docker.client()
    if client.networks.list(names=[plan.network]):
        raise LocalError(
            f"a Docker network named {plan.network} already exists",
            f"remove it (`docker network rm {plan.network}`) or choose another --job-name",
        )
    for host in plan.hosts:
        try:
            client.containers.get(plan.container(host.name))
        except NotFound:
            continue
        raise LocalError(
            f"a container named {plan.container(host.name)} already exists",
            f"remove it (`docker rm -f {plan.container(host.name)}`) or choose another --job-name",
        )
    write_run_dir(plan)
    return tool


def run(
    plan: LocalPlan,
    *,
    output: Path,
    keep: bool = False,
    on_line: Callable[[str], None] | None = None,
) -> LocalResult:
    """Run a planned job to the end; containers and network are removed whatever happens (Ctrl-C included).

    Raises:
        ImageNotFound, LocalError: the job could not start.
    """
    say = on_line or (lambda _line: None)
    tool = prepare(plan)
    started = time.monotonic()
    try:
        compose.up(tool, plan.project, plan.compose_file)
        hosts = _watch(plan, say)
        model, out = _package(plan, output, success=all(h.exit_code == 0 for h in hosts))
    finally:
        compose.down(tool, plan.project, plan.compose_file)
        if not keep:
            shutil.rmtree(plan.run_dir, ignore_errors=True)
    return LocalResult(
        job_name=plan.job.name,
        seconds=time.monotonic() - started,
        hosts=tuple(hosts),
        model=model,
        output=out,
        run_dir=plan.run_dir if keep else None,
    )


def _watch(plan: LocalPlan, say: Callable[[str], None]) -> list[HostResult]:
    client = docker.client()
    containers = {h.name: client.containers.get(plan.container(h.name)) for h in plan.hosts}
    width = max(len(name) for name in containers)
    lock = threading.Lock()

    def follow(name: str, container: Any) -> None:
        pending = b""
        for chunk in container.logs(stream=True, follow=True):
            pending += chunk
            *lines, pending = pending.split(b"\n")
            with lock:
                for line in lines:
                    say(f"{name:<{width}} | {line.decode('utf-8', 'replace')}")
        if pending:
            with lock:
                say(f"{name:<{width}} | {pending.decode('utf-8', 'replace')}")

    threads = [threading.Thread(target=follow, args=item, daemon=True) for item in containers.items()]
    for thread in threads:
        thread.start()
    codes: dict[str, int] = {}
    finished: dict[str, str] = {}
    stopped: set[str] = set()
    deadline: float | None = None
    while len(codes) < len(containers):
        for name, container in containers.items():
            if name in codes:
                continue
            container.reload()
            if container.status in {"exited", "dead"}:
                codes[name] = int(container.attrs["State"]["ExitCode"])
                finished[name] = str(container.attrs["State"]["FinishedAt"])
                if codes[name] != 0 and deadline is None:
                    deadline = time.monotonic() + STOP_GRACE
        if deadline is not None and time.monotonic() > deadline:
            for name, container in containers.items():
                if name not in codes:
                    say(f"{name:<{width}} | smimg: stopping this host: another host failed {STOP_GRACE:.0f}s ago")
                    container.stop(timeout=10)
                    stopped.add(name)
        time.sleep(0.2)
    for thread in threads:
        thread.join(timeout=5)
    return [
        HostResult(name, codes[name], _failure(plan.host_dir(name)), name in stopped, finished[name])
        for name in sorted(containers)
    ]


def _failure(host_dir: Path) -> str | None:
    path = host_dir / "output" / "failure"
    return path.read_text(errors="replace").strip() or None if path.is_file() else None


def _package(plan: LocalPlan, output: Path, *, success: bool) -> tuple[Path | None, Path]:
    """model.tar.gz (hosts' model folders merged, as SDK local mode does) on success; output.tar.gz always."""
    output.mkdir(parents=True, exist_ok=True)
    model = None
    if success:
        model = _merged_tar([plan.host_dir(h.name) / "model" for h in plan.hosts], output / "model.tar.gz")
    return model, _merged_tar([plan.host_dir(h.name) / "output" for h in plan.hosts], output / "output.tar.gz")


def _merged_tar(folders: Sequence[Path], target: Path) -> Path:
    with tempfile.TemporaryDirectory(prefix="smimg-merge-") as tmp:
        for folder in folders:
            if folder.is_dir():
                shutil.copytree(folder, tmp, dirs_exist_ok=True)
        with tarfile.open(target, "w:gz") as archive:
            for item in sorted(Path(tmp).iterdir()):
                archive.add(item, arcname=item.name)
    return target


def shell(plan: LocalPlan, command: Sequence[str] = ("/bin/bash",)) -> int:
    """An interactive command in an ``algo-1`` container with the job's mounts and env (entrypoint bypassed).

    Raises:
        ImageNotFound, LocalError: as for ``run``.
    """
    tool = prepare(plan)
    try:
        return compose.shell(tool, plan.project, plan.compose_file, plan.hosts[0].name, command)
    finally:
        compose.down(tool, plan.project, plan.compose_file)
        shutil.rmtree(plan.run_dir, ignore_errors=True)
