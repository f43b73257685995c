"""One training job of the local API, run to its end with smimg's local mode: image, channels and code resolved, the
hosts' lines sent to CloudWatch Logs as SageMaker names its streams, the model uploaded, the record kept current."""

from __future__ import annotations

import contextlib
import re
import tarfile
import threading
import time
from collections import defaultdict
from pathlib import Path

from smimg import local, refs
from smimg.adapters import aws, ecr, registry
from smimg.engine import Engine
from smimg.errors import AwsError, SmimgError
from smimg.local import results
from smimg.local.channels import resolve_channel
from smimg.local.job import Conditions, LocalJob, Verbatim, check_conditions
from smimg.training_api import store as records
from smimg.training_api.plan import GPUS, TrainingPlan, gpu_request

LOG_GROUP = "/aws/sagemaker/TrainingJobs"
STOP_GRACE = 120.0  # StopTrainingJob: SIGTERM, then SIGKILL this much later
_HOST_LINE = re.compile(r"^(algo-\d+)\s*\| ?(.*)$")


class Run:
    """A job's run; ``stop`` may come from another thread (StopTrainingJob)."""

    def __init__(
        self,
        plan: TrainingPlan,
        store: records.Store,
        engine: Engine,
        folder: Path,
        spot_interrupt_after: float | None = None,
    ) -> None:
        self.plan = plan
        self.spot_interrupt_after = spot_interrupt_after if plan.spot else None
        self.store = store
        self.engine = engine
        self.folder = folder
        self.stopping = threading.Event()
        self._local: local.LocalPlan | None = None
        self._gpus: list[str] = []  # this machine's, when the instance type has GPUs

    def stop(self) -> None:
        """SIGTERM to every host now, SIGKILL after the grace, as StopTrainingJob does."""
        self.store.mark_stopping(self.plan.name)
        self.stopping.set()
        self._signal("SIGTERM")
        kill = threading.Timer(STOP_GRACE, self._signal, ("SIGKILL",))
        kill.daemon = True  # a run that ended needs no SIGKILL; the timer must not hold the process
        kill.start()

    def _signal(self, signal: str) -> None:
        planned = self._local
        if planned is None:
            return
        for host in planned.hosts:
            with contextlib.suppress(SmimgError):  # that host has ended already
                self.engine.kill(planned.container(host.name), signal)

    def __call__(self) -> None:
        name = self.plan.name
        try:
            job = self._prepare()
            if self.stopping.is_set():
                self.store.finish(name, records.STOPPED, "Stopped")
                return
            self.store.secondary(name, "Training")
            result = self._train(job)
            self.store.secondary(name, "Uploading")
            artifacts = self._upload(result)
        except Exception as exc:  # a job must end, never stay InProgress behind a dead thread
            reason = (
                exc.message if isinstance(exc, SmimgError) else f"{records.INTERNAL_ERROR}: {type(exc).__name__}: {exc}"
            )
            self.store.finish(name, records.FAILED, "Failed", reason)
            return
        self._end(result, artifacts)

    def _end(self, result: local.LocalResult, artifacts: str | None) -> None:
        name = self.plan.name
        if artifacts:
            self.store.update(name, ModelArtifacts={"S3ModelArtifacts": artifacts})
        if self.stopping.is_set():
            self.store.finish(name, records.STOPPED, "Stopped")
        elif result.ended_by == local.MAX_RUNTIME_EXCEEDED:
            self.store.finish(name, records.STOPPED, local.MAX_RUNTIME_EXCEEDED)
        elif result.ok:
            self.store.finish(name, records.COMPLETED, "Completed")
        else:
            failed = result.failed
            reason = (failed.failure if failed else None) or f"{failed.name if failed else 'a host'} failed"
            self.store.finish(name, records.FAILED, "Failed", reason)

    def _prepare(self) -> LocalJob:
        """Downloading: the image found locally, channels and the script-mode code fetched from S3."""
        self.store.secondary(self.plan.name, "Downloading")
        image = local_image(self.plan.image, self.engine)
        work = self.folder / "work"
        channels = tuple(
            (name, resolve_channel(name, uri, self.folder / "channels")) for name, uri in self.plan.channels
        )
        source_dir = None
        if self.plan.submit_directory and self.plan.submit_directory.startswith("s3://"):
            source_dir = _code(self.plan.submit_directory, work / "code")
        conditions = Conditions(
            max_run=float(self.plan.max_run),
            spot_interrupt_after=self.spot_interrupt_after,
            network_isolation=self.plan.network_isolation,
            checkpoints_s3=self.plan.checkpoint_s3,
        )
        self._gpus = local.available_gpus() if GPUS.get(self.plan.instance_type) else []
        hyperparameters = tuple((k, Verbatim(v)) for k, v in self.plan.hyperparameters)
        if source_dir is None:  # the code is in the image: the reserved values go to it as sent
            hyperparameters += tuple((k, Verbatim(v)) for k, v in self.plan.reserved)
        return LocalJob(
            image=image,
            instances=self.plan.instances,
            groups=self.plan.groups,
            channel_groups=self.plan.channel_groups,
            channels=channels,
            hyperparameters=tuple(sorted(hyperparameters)),
            source_dir=source_dir,
            entry_point=self.plan.program if source_dir else None,
            env=self.plan.env,
            name=self.plan.name,
            conditions=check_conditions(conditions, self.plan.name),
            entrypoint=self.plan.entrypoint,
            arguments=self.plan.arguments,
            writable_channels=True,  # downloaded for this job alone
            gpus=gpu_request(self.plan, self._gpus),
        )

    def _train(self, job: LocalJob) -> local.LocalResult:
        planned = local.plan_job(job, self.folder / "work" / "run", self._gpus)
        self._local = planned
        with CloudWatchLines(self.plan.name) as lines:
            return local.run(
                planned, output=self.folder / "output", engine=self.engine, on_line=lines, on_restart=self._restarted
            )

    def _restarted(self) -> None:
        """As SageMaker shows a spot interruption: Interrupted, then the job starts and trains again."""
        for status in (local.INTERRUPTED, "Starting", "Training"):
            self.store.secondary(self.plan.name, status)

    def _upload(self, result: local.LocalResult) -> str | None:
        """model.tar.gz and output.tar.gz to S3OutputPath/JOB/output/, as SageMaker puts them."""
        prefix = f"{self.plan.output_path}/{self.plan.name}/output"
        uploaded = None
        for path in (result.model, result.output):
            if path is not None and path.is_file():
                aws.upload_files(path.parent, [path.name], prefix)
                if path.name == results.MODEL:
                    uploaded = f"{prefix}/{path.name}"
        return uploaded


def local_image(uri: str, engine: Engine) -> str:
    """The local image an ECR (or any) URI names: the reference itself, else its repository:tag without the
    registry, else (a digest-pinned URI, as `smimg launch` sends) the local image that ECR's manifest for that
    digest is the config of. Never pulled.

    Raises:
        SmimgError: no such local image, naming how to make one.
    """
    candidates = [uri]
    try:
        parsed = refs.ImageRef.parse(uri)
    except refs.InvalidRef as exc:
        raise SmimgError(f"AlgorithmSpecification.TrainingImage: {exc}", "pass an image URI") from None
    if parsed.tag:
        candidates.append(f"{parsed.path}:{parsed.tag}")
    for candidate in candidates:
        if engine.image(candidate) is not None:
            return candidate
    config = _config_of(parsed, parsed.digest) if parsed.digest and parsed.ecr else ""
    if config and engine.image(config) is not None:
        return config
    raise SmimgError(
        f"AlgorithmSpecification.TrainingImage {uri}: no such image on this machine (the local API never pulls)",
        f"build it (`smimg build`) and launch it by {parsed.path}:TAG, or put its manifest in the local API's ECR",
    )


def _config_of(ref: refs.ImageRef, digest: str) -> str:
    """The image ID (config digest) of the manifest ECR holds for ``digest``; "" when it holds none."""
    assert ref.ecr is not None
    client = aws.client("ecr", ref.ecr[1])
    found = ecr.manifest(client, ref.path, digest, [registry.DOCKER_MANIFEST], registry_id=ref.ecr[0])
    return str((found[1].get("config") or {}).get("digest", "")) if found else ""


def _code(uri: str, into: Path) -> Path:
    """sagemaker_submit_directory: the SDK's sourcedir.tar.gz, extracted."""
    bucket, key = aws.split_s3_uri(uri)
    into.mkdir(parents=True, exist_ok=True)
    archive = into.parent / "sourcedir.tar.gz"
    aws.download_file(aws.client("s3", None), bucket, key, archive)
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    return into


class CloudWatchLines:
    """The hosts' lines into one log stream per host, ``JOB/algo-N-EPOCH`` in ``/aws/sagemaker/TrainingJobs``,
    sent about every second (a stream appears when its host first writes, as on SageMaker)."""

    def __init__(self, job: str) -> None:
        self.job = job
        self.logs = aws.client("logs", None)
        self.epoch = int(time.time())
        self.pending: dict[str, list[dict[str, object]]] = defaultdict(list)
        self.streams: set[str] = set()
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._flush_every_second, daemon=True)

    def __enter__(self) -> CloudWatchLines:
        exists = frozenset({"ResourceAlreadyExistsException"})
        aws.call(self.logs.create_log_group, "create the log group", missing=exists, logGroupName=LOG_GROUP)
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join()
        self.flush()

    def __call__(self, line: str) -> None:
        match = _HOST_LINE.match(line)
        if match is None:
            return  # smimg's own lines: not the containers'
        with self.lock:
            # CloudWatch refuses an empty message; an empty line is still a line of the host's log.
            self.pending[match[1]].append({"timestamp": int(time.time() * 1000), "message": match[2] or " "})

    def _flush_every_second(self) -> None:
        while not self.done.wait(1.0):
            self.flush()

    def flush(self) -> None:
        """Send what the hosts wrote since the last flush; a failure to send loses those lines, never the job."""
        with self.lock:
            batches, self.pending = self.pending, defaultdict(list)
        with contextlib.suppress(AwsError):
            self._send(batches)

    def _send(self, batches: dict[str, list[dict[str, object]]]) -> None:
        for host, events in batches.items():
            stream = f"{self.job}/{host}-{self.epoch}"
            if stream not in self.streams:
                aws.call(self.logs.create_log_stream, "create a log stream", logGroupName=LOG_GROUP,
                         logStreamName=stream, missing=frozenset({"ResourceAlreadyExistsException"}))  # fmt: skip
                self.streams.add(stream)
            aws.call(self.logs.put_log_events, "send log lines", logGroupName=LOG_GROUP, logStreamName=stream,
                     logEvents=events)  # fmt: skip
