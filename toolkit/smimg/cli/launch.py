"""`smimg launch` and `smimg jobs`: the job `smimg local run` rehearsed, on SageMaker, watched to its end."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from smimg import cloud
from smimg.cli import console
from smimg.cli.options import (
    DistributionGroup,
    EntryPoint,
    Env,
    HyperparameterFile,
    Hyperparameters,
    InputGroups,
    InstanceGroups,
    Json,
    SpecPath,
)
from smimg.cli.progress import JobView
from smimg.errors import LaunchError

Inputs = Annotated[list[str] | None, typer.Option("--input", "-i", help="Channel NAME=s3://bucket/prefix; repeatable.")]
SourceDir = Annotated[
    Path | None, typer.Option("--source-dir", help="Script mode: this code folder, uploaded (no rebuild for edits).")
]
Download = Annotated[
    Path | None, typer.Option("--download", help="Once the job completes, fetch its model.tar.gz into this folder.")
]
Region = Annotated[str | None, typer.Option("--region", help="AWS region. Default: AWS_REGION, then the profile's.")]

jobs_app = typer.Typer(help="SageMaker training jobs: watch one again, or stop it.", no_args_is_help=True)


def launch_command(
    image: Annotated[
        str | None,
        typer.Argument(
            help="An ECR URI (pinned to its digest once checked), or a local image (pushed first). Default: the "
            "image the spec builds now, pushed first."
        ),
    ] = None,
    image_option: Annotated[
        str | None, typer.Option("--image", help="IMAGE, as an option.", show_default=False)
    ] = None,
    spec: SpecPath = None,
    instance_type: Annotated[str | None, typer.Option("--instance-type", help="e.g. ml.g5.2xlarge.")] = None,
    role: Annotated[
        str | None,
        typer.Option(
            "--role",
            help="IAM role SageMaker assumes: an ARN or a name. Default: an accelerate config's, then SMIMG_ROLE, "
            "then the spec's launch.role.",
        ),
    ] = None,
    instances: Annotated[int | None, typer.Option("--instances", "-n", help="Number of hosts (algo-1..N).")] = None,
    inputs: Inputs = None,
    hp: Hyperparameters = None,
    hp_file: HyperparameterFile = None,
    source_dir: SourceDir = None,
    entry_point: EntryPoint = None,
    env: Env = None,
    output: Annotated[
        str | None,
        typer.Option("--output", help="S3OutputPath. Default: s3://sagemaker-REGION-ACCOUNT/smimg (the SDK's bucket)."),
    ] = None,
    job_name: Annotated[str | None, typer.Option("--job-name", help="TrainingJobName. Default: smimg-TIME.")] = None,
    max_run: Annotated[
        int | None, typer.Option("--max-run", help="MaxRuntimeInSeconds. Default: 86400 (SageMaker's).")
    ] = None,
    spot: Annotated[
        bool | None,
        typer.Option(
            "--spot/--no-spot", help="Managed spot training (save checkpoints on SIGTERM).", show_default=False
        ),
    ] = None,
    max_wait: Annotated[
        int | None, typer.Option("--max-wait", help="Spot: MaxWaitTimeInSeconds (>= --max-run). Default: --max-run.")
    ] = None,
    checkpoints: Annotated[
        str | None, typer.Option("--checkpoints", help="CheckpointConfig.S3Uri: synced with /opt/ml/checkpoints.")
    ] = None,
    network_isolation: Annotated[
        bool | None,
        typer.Option(
            "--network-isolation/--no-network-isolation",
            help="EnableNetworkIsolation: the hosts reach only each other.",
            show_default=False,
        ),
    ] = None,
    volume_size: Annotated[
        int | None,
        typer.Option("--volume-size", help=f"VolumeSizeInGB per instance. Default: {cloud.DEFAULT_VOLUME_GB}."),
    ] = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", help="KEY=VALUE tag on the job; repeatable.")] = None,
    subnets: Annotated[
        str | None,
        typer.Option("--subnets", help="VpcConfig: subnet-... IDs, comma-separated (with --security-groups)."),
    ] = None,
    security_groups: Annotated[
        str | None, typer.Option("--security-groups", help="VpcConfig: sg-... IDs, comma-separated (with --subnets).")
    ] = None,
    keep_alive: Annotated[
        int | None,
        typer.Option(
            "--keep-alive",
            help="Warm pool: keep the instances this many seconds after the job (KeepAlivePeriodInSeconds), for "
            "the next launch with the same instance type, count, volume, role, VPC and isolation to start on.",
        ),
    ] = None,
    instance_group: InstanceGroups = None,
    distribution_group: DistributionGroup = None,
    input_group: InputGroups = None,
    accelerate_config: Annotated[
        Path | None,
        typer.Option(
            "--accelerate-config",
            help="accelerate's SageMaker config (`accelerate config`, AMAZON_SAGEMAKER): its instance type, count, "
            "role, region, profile, job name, mixed precision, inputs file and additional_args (spot, max_wait, "
            "...) as defaults under these flags; the job runs accelerate's launcher on this image.",
        ),
    ] = None,
    region: Region = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the CreateTrainingJob request; launch nothing.")
    ] = False,
    stop_on_interrupt: Annotated[
        bool, typer.Option("--stop-on-interrupt", help="Ctrl-C stops the job (default: it detaches, the job runs on).")
    ] = False,
    download: Download = None,
    json: Json = False,
) -> None:
    """Run IMAGE as a SageMaker training job and watch it to its end: status changes and every host's lines.

    Defaults for the cloud-only flags (role, instance type and count, output, spot, ...) come from the spec's
    `launch:` section (smimg.yaml here, or --spec), under an accelerate config and the flags.

    The job is given as to `smimg local run` (-n, --input, --hp, --hp-file, --env, --source-dir with --entry-point:
    the code is uploaded, so an edit needs no rebuild), with what only the cloud needs. It is checked against
    SageMaker's limits before anything is uploaded or billed (`--dry-run` prints the request). The exit code
    mirrors the job: 0 Completed, 1 Failed or Stopped (its FailureReason printed), 124 MaxRuntimeExceeded. Ctrl-C
    detaches: the job keeps running and `smimg jobs attach JOB` watches it again.

    Example: `smimg launch ACCOUNT.dkr.ecr.REGION.amazonaws.com/team/bert:abc -n 2 --instance-type ml.g5.2xlarge
    --input train=s3://bucket/train --source-dir src --entry-point train.py`. Instead of `accelerate launch` with a
    SageMaker config (which needs SDK v2): `smimg launch --accelerate-config CONFIG --source-dir . --entry-point
    train.py --hp lr=3e-5`.
    """
    flags = cloud.LaunchFlags(
        instance_type=instance_type,
        role=role,
        output=output,
        instances=instances,
        inputs=tuple(inputs or ()),
        hyperparameters=tuple(hp or ()),
        hyperparameter_file=hp_file,
        source_dir=source_dir,
        entry_point=entry_point,
        env=tuple(env or ()),
        name=job_name,
        max_run=max_run,
        volume_gb=volume_size,
        network_isolation=network_isolation,
        checkpoints=checkpoints,
        spot=spot,
        max_wait=max_wait,
        tags=tuple(tag or ()),
        subnets=tuple(s for s in subnets.split(",") if s) if subnets else None,
        security_groups=tuple(g for g in security_groups.split(",") if g) if security_groups else None,
        keep_alive=keep_alive,
        instance_groups=tuple(instance_group or ()),
        distribution_group=distribution_group,
        input_groups=tuple(input_group or ()),
    )
    if image and image_option and image != image_option:
        raise LaunchError(f"IMAGE {image} and --image {image_option} name two images", "give one of them")
    image = image or image_option
    say = console.line_printer()
    plan, where = cloud.prepare_launch(
        image, flags, say, spec=spec, region=region, accelerate_config=accelerate_config, check=not dry_run
    )
    if dry_run:
        console.out.print(plan.as_json(), markup=False)
        return
    with JobView(console.interactive()) as view:
        result = cloud.launch(
            plan, view.line, region=where, stop_on_interrupt=stop_on_interrupt, progress=view.progress
        )
    _report(result, json, download, where)


@jobs_app.command("attach")
def attach_command(
    job: Annotated[str, typer.Argument(help="TrainingJobName.")],
    region: Region = None,
    stop_on_interrupt: Annotated[bool, typer.Option("--stop-on-interrupt", help="Ctrl-C stops the job.")] = False,
    download: Download = None,
    json: Json = False,
) -> None:
    """Watch a training job (launched here or anywhere) to its end, from its first log line; exit as it ended."""
    where = cloud.resolve_region(region)
    with JobView(console.interactive()) as view:
        result = cloud.attach(job, view.line, region=where, stop_on_interrupt=stop_on_interrupt, progress=view.progress)
    _report(result, json, download, where)


@jobs_app.command("list")
def list_command(
    region: Region = None,
    limit: Annotated[int, typer.Option("--limit", help="How many, newest first.")] = 20,
    name_contains: Annotated[str | None, typer.Option("--name-contains", help="Only names containing this.")] = None,
    json: Json = False,
) -> None:
    """The newest training jobs: name, status, secondary status, creation time."""
    found = cloud.jobs(cloud.resolve_region(region), limit, name_contains)
    if json:
        console.print_json(found)
        return
    for job in found:
        console.out.print(
            f"{job['TrainingJobName']}  {job['TrainingJobStatus']}  {job.get('SecondaryStatus', '')}  "
            f"{job['CreationTime']}",
            markup=False,
        )


@jobs_app.command("describe")
def describe_command(job: Annotated[str, typer.Argument(help="TrainingJobName.")], region: Region = None) -> None:
    """DescribeTrainingJob, as JSON."""
    console.print_json(cloud.describe(job, cloud.resolve_region(region)))


@jobs_app.command("logs")
def logs_command(
    job: Annotated[str, typer.Argument(help="TrainingJobName.")],
    region: Region = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Follow to the job's end (as attach).")] = False,
) -> None:
    """Every host's lines so far, merged by time as `algo-2 | ...`; with -f, on to the job's end."""
    where = cloud.resolve_region(region)
    if follow:
        with JobView(console.interactive()) as view:
            result = cloud.attach(job, view.line, region=where, progress=view.progress)
        _report(result, False, None, where)
        return
    for line in cloud.logs(job, where):
        console.out.print(line, markup=False)


@jobs_app.command("stop")
def stop_command(job: Annotated[str, typer.Argument(help="TrainingJobName.")], region: Region = None) -> None:
    """Stop a training job: SageMaker sends every host SIGTERM, then SIGKILL 120 s later."""
    cloud.stop(job, cloud.resolve_region(region))
    console.err.print(f"stopping {job}; `smimg jobs attach {job}` watches it end")


def _report(result: cloud.CloudResult, json: bool, download: Path | None, region: str) -> None:
    if download is not None and result.exit_code == 0:
        console.err.print(f"model downloaded to {cloud.download(result, download, region)}")
    if json:
        console.print_json({**result.__dict__, "exit_code": result.exit_code})
    else:
        verdict = "[green]completed[/]" if result.exit_code == 0 else f"[bold red]{result.status.lower()}[/]"
        seconds = ""
        if result.billable_seconds is not None and result.training_seconds:
            seconds = f" ({result.training_seconds} s training, {result.billable_seconds} s billable"
            saved = 1 - result.billable_seconds / result.training_seconds
            seconds += f", spot savings {saved:.0%})" if saved > 0 else ")"
        console.err.print(f"job {result.name} {verdict}: {result.secondary}{seconds}")
        if result.warm_pool == "Available":
            console.err.print(
                f"warm pool: its instances are kept {result.keep_alive} s; a launch with --keep-alive and the same "
                "instance type, count, volume, role, VPC and isolation starts on them"
            )
        if result.failure:
            console.err.print("[bold red]failure reason:[/] ", end="")
            console.err.print(result.failure, markup=False)
        if result.model:
            console.out.print(result.model, markup=False)
    if result.exit_code:
        raise typer.Exit(result.exit_code)
