"""The local SageMaker training API: one HTTP endpoint on 127.0.0.1 that answers SageMaker's training-job calls
(CreateTrainingJob, DescribeTrainingJob, ListTrainingJobs, StopTrainingJob) with real local jobs, and every other
call (S3, CloudWatch Logs, STS) with moto's in-process services, so that launch code pointed at it with
``AWS_ENDPOINT_URL`` runs unchanged."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smimg import interrupts
from smimg.adapters import service_model
from smimg.engine import Engine
from smimg.errors import LocalError
from smimg.training_api import plan as planner
from smimg.training_api import store as records
from smimg.training_api.plan import ApiError
from smimg.training_api.runner import Run

TARGET_PREFIX = "SageMaker."
LOCAL_ACCOUNT = "123456789012"  # moto's account: ARNs look as they would in one account
WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class TrainingApi:
    """SageMaker's training-job operations over a ``Store``; each job runs in its own thread."""

    def __init__(self, state: Path, engine: Engine, region: str, spot_interrupt_after: float | None = None) -> None:
        self.state = state
        self.spot_interrupt_after = spot_interrupt_after  # managed spot jobs are interrupted once, this far in
        self.engine = engine
        self.store = records.Store(state / "jobs", region, LOCAL_ACCOUNT)
        self.runs: dict[str, Run] = {}
        self.threads: list[threading.Thread] = []
        self.closing = False

    def shutdown(self) -> None:
        """Stop every job still running (SIGTERM, as StopTrainingJob) and wait for each to clean up its hosts."""
        self.closing = True
        for run in list(self.runs.values()):
            with contextlib.suppress(ApiError):  # ended already
                run.stop()
        for thread in list(self.threads):
            thread.join()

    def call(self, operation: str, body: Mapping[str, Any]) -> dict[str, Any]:
        handler = getattr(self, f"_{operation}", None)
        if handler is None:
            raise ApiError("UnknownOperationException", f"the local SageMaker API does not offer {operation}")
        # The limits the service checks and botocore does not (maximum lengths, counts, ranges, patterns), from its
        # model; enums are left out, as botocore leaves them.
        if found := service_model.violations("sagemaker", operation, body):
            raise ApiError("ValidationException", service_model.summary(found))
        return handler(body)  # type: ignore[no-any-return]

    def _CreateTrainingJob(self, body: Mapping[str, Any]) -> dict[str, Any]:
        if self.closing:
            raise ApiError("ServiceUnavailable", "the local SageMaker API is shutting down", 503)
        plan = planner.plan_training(body)
        record = self.store.create(body)
        run = Run(plan, self.store, self.engine, self.state / "runs" / plan.name, self.spot_interrupt_after)
        self.runs[plan.name] = run
        thread = threading.Thread(target=run, name=f"job-{plan.name}", daemon=True)
        self.threads.append(thread)
        thread.start()
        return {"TrainingJobArn": record["TrainingJobArn"]}

    def _DescribeTrainingJob(self, body: Mapping[str, Any]) -> dict[str, Any]:
        return self.store.get(str(body.get("TrainingJobName", "")))

    def _ListTrainingJobs(self, body: Mapping[str, Any]) -> dict[str, Any]:
        names = self.store.names()
        wanted, pool = body.get("StatusEquals"), body.get("WarmPoolStatusEquals")
        contains = str(body.get("NameContains", ""))
        found = [records.summary(self.store.get(n)) for n in names if contains in n]
        found = [job for job in found if wanted is None or job["TrainingJobStatus"] == wanted]
        found = [job for job in found if pool is None or (job.get("WarmPoolStatus") or {}).get("Status") == pool]
        return {"TrainingJobSummaries": found[: int(body.get("MaxResults", 100))]}

    def _StopTrainingJob(self, body: Mapping[str, Any]) -> dict[str, Any]:
        name = str(body.get("TrainingJobName", ""))
        self.store.get(name)  # ValidationException when there is no such job
        run = self.runs.get(name)
        if run is None:  # an earlier server's job: it has ended, which mark_stopping answers as SageMaker does
            self.store.mark_stopping(name)
        else:
            run.stop()
        return {}

    def _UpdateTrainingJob(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Recorded as SageMaker records it, for launch code that calls it: a warm pool's new keep-alive (0 ends
        it) counts from its job's end; locally, no profiler runs and no SSM session opens."""
        name = str(body.get("TrainingJobName", ""))
        record = self.store.get(name)  # ValidationException when there is no such job
        changes: dict[str, Any] = {}
        keep_alive = (body.get("ResourceConfig") or {}).get("KeepAlivePeriodInSeconds")
        if keep_alive is not None:
            changes["ResourceConfig"] = {
                **record["ResourceConfig"],
                "KeepAlivePeriodInSeconds": planner.keep_alive({"KeepAlivePeriodInSeconds": keep_alive}),
            }
        for member in ("ProfilerConfig", "RemoteDebugConfig"):
            if member in body:
                changes[member] = {**(record.get(member) or {}), **body[member]}
        self.store.update(name, **changes)
        return {"TrainingJobArn": record["TrainingJobArn"]}


@dataclass
class Dispatcher:
    """The WSGI application: SageMaker's JSON 1.1 calls to the ``TrainingApi``, everything else to moto."""

    api: TrainingApi
    others: WsgiApp

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        target = str(environ.get("HTTP_X_AMZ_TARGET", ""))
        if not target.startswith(TARGET_PREFIX):
            return self.others(environ, start_response)
        length = int(environ.get("CONTENT_LENGTH") or 0)
        try:
            body = json.loads(environ["wsgi.input"].read(length) or b"{}")
            status, answer = 200, self.api.call(target.removeprefix(TARGET_PREFIX), body)
        except ApiError as exc:
            status, answer = exc.status, {"__type": exc.code, "message": exc.message}
        except Exception as exc:
            status, answer = 500, {"__type": "InternalFailure", "message": f"{type(exc).__name__}: {exc}"}
        payload = json.dumps(answer).encode()
        start_response(
            f"{status} {'OK' if status == 200 else 'Bad Request'}",
            [("Content-Type", "application/x-amz-json-1.1"), ("Content-Length", str(len(payload)))],
        )
        return [payload]


def make_app(state: Path, engine: Engine, region: str, spot_interrupt_after: float | None = None) -> Dispatcher:
    """
    Raises:
        LocalError: moto, which serves S3, CloudWatch Logs and STS here, is not installed.
    """
    try:
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
    except ImportError:
        raise LocalError(
            "the local SageMaker API serves S3, CloudWatch Logs and STS with moto, which is not installed",
            "pip install 'smimg[api]'",
        ) from None

    api = TrainingApi(state, engine, region, spot_interrupt_after)
    return Dispatcher(api, DomainDispatcherApplication(create_backend_app))


def serve(
    state: Path,
    engine: Engine,
    host: str,
    port: int,
    on_ready: Callable[[str], None],
    spot_interrupt_after: float | None = None,
) -> None:
    """Answer on ``host:port`` until interrupted. The process's own AWS calls (S3 downloads and uploads, logs) go
    to this endpoint: nothing reaches AWS."""
    region = os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    try:
        app = make_app(state, engine, region, spot_interrupt_after)
    except OSError as exc:
        raise LocalError(
            f"cannot keep jobs in --state {state}: {exc.strerror}", "pass a folder you can write"
        ) from None
    from moto.moto_server.werkzeug_app import MotoRequestHandler
    from werkzeug.serving import make_server

    try:  # werkzeug reports a taken port itself and exits; asked first, the answer is ours
        socket.create_server((host, port)).close()
    except OSError as exc:
        raise LocalError(
            f"cannot listen on {host}:{port}: {exc.strerror}", "pick another --port (0: any free)"
        ) from None
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        # werkzeug logs every request at INFO unless told otherwise: noise to a user, and a stderr nobody drains
        # (a pipe) fills and blocks every request behind its log lock.
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = make_server(host, port, app, threaded=True, request_handler=MotoRequestHandler)
    endpoint = f"http://{host}:{server.server_port}"
    for variable in [v for v in os.environ if v.startswith("AWS_ENDPOINT_URL_")]:
        del os.environ[variable]  # a service's own endpoint would send this process's calls elsewhere
    os.environ["AWS_ENDPOINT_URL"] = endpoint
    for variable, value in (("AWS_ACCESS_KEY_ID", "local"), ("AWS_SECRET_ACCESS_KEY", "local")):
        os.environ.setdefault(variable, value)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    on_ready(endpoint)
    try:
        thread.join()
    finally:
        with interrupts.shielded(lambda _signum: None):
            app.api.shutdown()  # nothing left running behind the server
            server.shutdown()
            server.server_close()
