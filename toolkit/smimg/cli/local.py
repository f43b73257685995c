"""`smimg local run` and `smimg local shell`: a multi-node SageMaker job on this machine."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from smimg import build as build_lib
from smimg import local as local_lib
from smimg import resources
from smimg.cli import console
from smimg.cli.options import (
    DistributionGroup,
    EntryPoint,
    Env,
    HyperparameterFile,
    Hyperparameters,
    InputGroups,
    InstanceGroups,
    Instances,
    Json,
    SpecPath,
)

app = typer.Typer(
    help="Run an image as a SageMaker job on this machine: N `algo-i` containers with SageMaker's /opt/ml tree.",
    no_args_is_help=True,
)

Image = Annotated[str | None, typer.Argument(help="Local image. Default: the image the spec builds now.")]
Inputs = Annotated[
    list[str] | None,
    typer.Option("--input", "-i", help="Channel NAME=PATH, NAME=file://PATH or NAME=s3://bucket/prefix; repeatable."),
]
SourceDir = Annotated[
    Path | None, typer.Option("--source-dir", help="Script mode: mount this code folder (no rebuild for edits).")
]
Gpus = Annotated[
    str | None, typer.Option("--gpus", help="all, or a total count; split into equal disjoint per-host slices.")
]
JobName = Annotated[
    str | None, typer.Option("--job-name", help="TRAINING_JOB_NAME, and the prefix of its containers' names.")
]


DEFAULT_API_PORT = 7171


@app.command("run")
def run_command(
    image: Image = None,
    spec: SpecPath = None,
    instances: Instances = None,
    inputs: Inputs = None,
    hp: Hyperparameters = None,
    hp_file: HyperparameterFile = None,
    source_dir: SourceDir = None,
    entry_point: EntryPoint = None,
    gpus: Gpus = None,
    env: Env = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Where model.tar.gz and output.tar.gz go.")
    ] = None,
    job_name: JobName = None,
    run_dir: Annotated[
        Path | None, typer.Option("--run-dir", help="The run folder. Default: ~/.cache/smimg/runs/JOB.")
    ] = None,
    keep: Annotated[bool, typer.Option("--keep", help="Keep the run folder (per-host /opt/ml trees).")] = False,
    compose_only: Annotated[
        bool,
        typer.Option(
            "--compose-only", help="Write the run folder (each host's /opt/ml tree, the job's compose file), then stop."
        ),
    ] = False,
    max_run: Annotated[
        float | None,
        typer.Option(
            "--max-run",
            help="Rehearse StoppingCondition.MaxRuntimeInSeconds: at this many seconds every host gets SIGTERM, then "
            "SIGKILL after --stop-grace; the job ends Stopped (MaxRuntimeExceeded), its model saved, exit 124.",
        ),
    ] = None,
    spot_interrupt_after: Annotated[
        float | None,
        typer.Option(
            "--spot-interrupt-after",
            help="Rehearse a managed-spot reclaim: at this many seconds every host gets SIGTERM (SIGKILL after "
            "--stop-grace); once they exit the job restarts on fresh hosts with --checkpoints restored into each "
            "/opt/ml/checkpoints. The result reports both attempts.",
        ),
    ] = None,
    checkpoints: Annotated[
        str | None,
        typer.Option(
            "--checkpoints",
            help="CheckpointConfig.S3Uri: an s3:// URI, or a folder standing for one. Restored into every host's "
            "/opt/ml/checkpoints when the job starts (and restarts); the hosts' new and changed checkpoints are kept "
            "there after. Reuse it to resume.",
        ),
    ] = None,
    stop_grace: Annotated[
        float, typer.Option("--stop-grace", help="Seconds from SIGTERM to SIGKILL in a rehearsed stop.")
    ] = 120.0,
    network_isolation: Annotated[
        bool,
        typer.Option(
            "--network-isolation",
            help="Rehearse EnableNetworkIsolation: the hosts reach each other and nothing else (no PyPI, S3 or "
            "metadata endpoint).",
        ),
    ] = False,
    instance_group: InstanceGroups = None,
    distribution_group: DistributionGroup = None,
    input_group: InputGroups = None,
    json: Json = False,
) -> None:
    """Run IMAGE as a SageMaker training job of N hosts, here, before paying for the cloud.

    Each host gets the /opt/ml tree SageMaker creates (resourceconfig, hyperparameters, inputdataconfig, channels
    mounted read-only, model, output, checkpoints) and runs `train`, as on SageMaker. Logs are interleaved with a
    host prefix; when one host fails the others are stopped, the command exits non-zero and prints the failure
    reason. However the job ends (Ctrl-C and SIGTERM included) its containers and network are removed and its
    results saved to --output: model.tar.gz (on success), output.tar.gz, and checkpoints/ when any were written.
    A rerun with the same --job-name first clears what an interrupted run left.

    Rehearse the cloud's conditions before paying for them: --network-isolation, --max-run, and
    --spot-interrupt-after with --checkpoints (does your script save on SIGTERM and resume from
    /opt/ml/checkpoints?).

    Example: `smimg local run -n 2 --input train=./data --hp epochs=1`

    Example: `smimg local run -n 2 --spot-interrupt-after 60 --checkpoints ./ckpt`
    """
    checkpoint_folder, checkpoints_s3 = local_lib.checkpoints_option(checkpoints)
    job = local_lib.make_job(
        _image(image, spec),
        instances=instances,
        inputs=inputs or (),
        hyperparameters=hp or (),
        hyperparameter_file=hp_file,
        source_dir=source_dir,
        entry_point=entry_point,
        gpus=gpus,
        env=env or (),
        name=job_name,
        instance_groups=instance_group or (),
        distribution_group=distribution_group,
        input_groups=input_group or (),
        conditions=local_lib.Conditions(
            max_run=max_run,
            spot_interrupt_after=spot_interrupt_after,
            stop_grace=stop_grace,
            network_isolation=network_isolation,
            checkpoints=checkpoint_folder,
            checkpoints_s3=checkpoints_s3,
        ),
        on_line=console.line_printer(),
    )
    gpu_ids = local_lib.available_gpus() if gpus else []
    plan = local_lib.plan_job(job, (run_dir or local_lib.default_run_dir(job)).resolve(), gpu_ids)
    if compose_only:
        local_lib.write_run_dir(plan)
        console.err.print(f"wrote {plan.compose_file} and the /opt/ml trees of {len(plan.hosts)} hosts")
        console.out.print(str(plan.run_dir))
        return
    result = local_lib.run(
        plan, output=(output or Path("smimg-output") / job.name).resolve(), keep=keep, on_line=console.line_printer()
    )
    if json:
        console.print_json(result.as_dict())
    else:
        _report(result, job.conditions)
    if result.ended_by == local_lib.MAX_RUNTIME_EXCEEDED:
        raise typer.Exit(124)  # as timeout(1) reports a command it stopped
    failed = result.failed
    if failed is not None:
        reason = failed.failure or "no failure file; see the host's log lines above"
        console.err.print(f"[bold red]{failed.name} failed (exit {failed.exit_code}):[/] ", end="")
        console.err.print(reason, markup=False)
        if job.conditions.network_isolation:
            console.err.print(ISOLATION_HINT)
        raise typer.Exit(failed.exit_code if 0 < failed.exit_code < 256 else 1)
    if not json and result.model:
        console.out.print(str(result.model))


def _image(image: str | None, spec: Path | None) -> str:
    # Only without an image is the spec read: that loads the build library (pydantic, jinja2), a tenth of a second.
    return image if image is not None else build_lib.default_image(None, spec)


ISOLATION_HINT = (
    "the job ran with --network-isolation, as EnableNetworkIsolation: nothing outside its hosts is reachable, so a "
    "pip install or a download at run time fails. Bake packages into the image (smimg.yaml requirements) and pass "
    "data as input channels"
)


def _report(result: local_lib.LocalResult, conditions: local_lib.Conditions) -> None:
    codes = ", ".join(f"{h.name}={h.exit_code}" + (" (stopped)" if h.stopped else "") for h in result.hosts)
    verdict = {"Completed": "[green]succeeded[/]", "Stopped": "[yellow]stopped (MaxRuntimeExceeded)[/]"}
    console.err.print(
        f"job {result.job_name} {verdict.get(result.status, '[bold red]failed[/]')} in {result.seconds:.1f}s on "
        f"{len(result.hosts)} hosts: {codes}"
    )
    if conditions.spot_interrupt_after is not None:
        for number, attempt in enumerate(result.attempts, 1):
            console.err.print(f"  attempt {number}: {_attempt_line(attempt)}")
    paths = {"model": result.model, "output": result.output, "checkpoints": result.checkpoints}
    for name, path in paths.items():
        if path:
            console.err.print(f"  {name}: {path}")
    if conditions.checkpoint_location is not None:
        console.err.print(f"  checkpoints kept in {conditions.checkpoint_location} (pass it again to resume)")
    if result.run_dir:
        console.err.print(f"  run folder kept: {result.run_dir}")


def _attempt_line(attempt: local_lib.Attempt) -> str:
    started = f"started with {len(attempt.restored)} checkpoint file(s) restored; " if attempt.restored else ""
    ended = "ran to its end"
    if attempt.ended_by is not None and attempt.stop_seconds is not None:
        ended = f"{attempt.ended_by}: every host exited {attempt.stop_seconds:.1f}s after SIGTERM"
    return f"{started}{ended} after {attempt.seconds:.1f}s; {len(attempt.checkpoints)} checkpoint file(s) at its end"


@app.command("ps")
def ps_command(json: Json = False) -> None:
    """The local jobs running on this machine (started in any terminal), oldest first."""
    jobs = local_lib.running()
    if json:
        console.print_json([job.__dict__ for job in jobs])
        return
    if not jobs:
        console.err.print("no local jobs running")
        return
    for job in jobs:
        console.out.print(
            f"{job.name}  pid {job.pid}  {job.hosts} host(s)  since {job.started}  output {job.output}", markup=False
        )


@app.command("stop")
def stop_command(
    job_name: Annotated[str, typer.Argument(help="The job's name (TRAINING_JOB_NAME), as `smimg local ps` lists it.")],
) -> None:
    """Stop a local job running in another terminal, as Ctrl-C there would: its smimg process removes the
    containers and network and saves the results to its --output. Waits until it has."""
    job = local_lib.stop(job_name)
    console.err.print(
        f"stopped {job.name} as Ctrl-C would: output.tar.gz and checkpoints in {job.output}; a model it had saved "
        f"stays in {job.run_dir}"
    )


@app.command("shell")
def shell_command(
    image: Image = None,
    spec: SpecPath = None,
    instances: Instances = None,
    inputs: Inputs = None,
    hp: Hyperparameters = None,
    hp_file: HyperparameterFile = None,
    source_dir: SourceDir = None,
    entry_point: EntryPoint = None,
    env: Env = None,
) -> None:
    """An interactive shell in an `algo-1` container with the job's mounts and env, to debug the entrypoint.

    Inside, `smimg-train train` runs the entrypoint by hand; /opt/ml is what SageMaker would give host algo-1.
    """
    job = local_lib.make_job(
        _image(image, spec),
        instances=instances,
        inputs=inputs or (),
        hyperparameters=hp or (),
        hyperparameter_file=hp_file,
        source_dir=source_dir,
        entry_point=entry_point,
        env=env or (),
    )
    plan = local_lib.plan_job(job, local_lib.default_run_dir(job).resolve())
    raise typer.Exit(local_lib.shell(plan))


@app.command("api")
def api_command(
    port: Annotated[int, typer.Option("--port", help="The port on 127.0.0.1 (0: any free port).")] = DEFAULT_API_PORT,
    state: Annotated[
        Path | None,
        typer.Option("--state", help="Where jobs, their records and results are kept. Default: ~/.cache/smimg/api."),
    ] = None,
    spot_interrupt_after: Annotated[
        float | None,
        typer.Option(
            "--spot-interrupt-after",
            help="Simulate spot reclaims: a job with EnableManagedSpotTraining is interrupted once, this many seconds "
            "in (SIGTERM to every host, Interrupted), then restarts with its CheckpointConfig restored.",
        ),
    ] = None,
) -> None:
    """A local SageMaker training API: unchanged launch code runs its job here, on this machine's Docker.

    Point boto3 or the SageMaker SDK at it with `export AWS_ENDPOINT_URL=http://127.0.0.1:PORT`. CreateTrainingJob
    runs the job with local mode (its image found locally, never pulled; S3 channels and the SDK's sourcedir.tar.gz
    downloaded); DescribeTrainingJob shows the real lifecycle (Starting, Downloading, Training, Uploading; Completed,
    Failed with FailureReason, Stopped, MaxRuntimeExceeded); each host's lines go to CloudWatch Logs as
    /aws/sagemaker/TrainingJobs JOB/algo-N-EPOCH; the model lands in S3OutputPath/JOB/output/model.tar.gz. S3,
    CloudWatch Logs and STS are served here too (moto, in this process): nothing reaches AWS.

    Ctrl-C stops the jobs still running (SIGTERM, as StopTrainingJob) and waits for their clean-up.
    """
    from smimg.adapters.docker_engine import default_engine
    from smimg.training_api.server import serve

    def ready(endpoint: str) -> None:
        console.err.print(f"local SageMaker training API on {endpoint}; in another terminal:")
        console.out.print(f"export AWS_ENDPOINT_URL={endpoint}", markup=False)

    folder = (state or resources.cache_dir() / "api").resolve()
    serve(folder, default_engine(), "127.0.0.1", port, ready, spot_interrupt_after)
