"""`smimg render`, `smimg build`, `smimg inspect`, `smimg check`, `smimg init`."""

from __future__ import annotations

import shlex
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from smimg import build as build_lib
from smimg import images, scaffold, ship
from smimg.cli import console
from smimg.cli.options import (
    Accelerate,
    BaseImage,
    Json,
    Name,
    PasswordStdin,
    Region,
    Registry,
    SpecPath,
    UpdateRepository,
    Username,
    load,
)
from smimg.cli.progress import BuildView, push_with_view
from smimg.local import conformance
from smimg_entrypoint import contract


class Progress(str, Enum):
    auto = "auto"
    tty = "tty"
    plain = "plain"


def init(
    folder: Annotated[Path, typer.Argument(help="Project folder (created if missing).")] = Path("."),
    name: Annotated[str | None, typer.Option(help="Image name. Default: the folder's name.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite existing files.")] = False,
) -> None:
    """Scaffold a project: smimg.yaml, requirements.txt and an example src/train.py.

    Then: edit smimg.yaml, `smimg build`, `smimg local run`, `smimg push`.
    """
    written = scaffold.init_project(folder, name=name, force=force)
    for path in written:
        console.err.print(f"[green]wrote[/] {path}")
    console.err.print("next: edit smimg.yaml (base, requirements, code), then [bold]smimg build[/]")


def render_command(
    spec: SpecPath = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write the whole build context here.")] = None,
    base: BaseImage = None,
    name: Name = None,
    accelerate: Accelerate = None,
) -> None:
    """Print the Dockerfile smimg would build (or write the whole build context with --out).

    Resolves the base from the spec's framework versions offline; nothing is pulled or built.
    """
    loaded = load(spec, base=base, name=name, accelerate=accelerate)
    plan = build_lib.prepare(loaded, pull=False, context_dir=out, on_line=console.line_printer())
    if out is None:
        console.out.print(plan.dockerfile, markup=False, end="")
        return
    build_lib.write_context(plan, out)
    console.err.print(f"[green]wrote[/] {len(plan.files)} files to {out} (content tag {plan.content_tag})")


def build_command(
    spec: SpecPath = None,
    base: BaseImage = None,
    name: Name = None,
    accelerate: Accelerate = None,
    tag: Annotated[
        list[str] | None, typer.Option("--tag", "-t", help="Extra tag (e.g. latest) or full reference; repeatable.")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Build even when the content tag already exists.")] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the plan (argv, tags, labels); build nothing.")
    ] = False,
    progress: Annotated[
        Progress, typer.Option(help="auto: live view on a terminal, plain lines otherwise.")
    ] = Progress.auto,
    json: Json = False,
    push: Annotated[bool, typer.Option("--push", help="Then push it, as `smimg push` does.")] = False,
    registry: Registry = None,
    region: Region = None,
    update_repository: UpdateRepository = False,
    username: Username = None,
    password_stdin: PasswordStdin = False,
) -> None:
    """Build the training image: content-tagged, cached layer by layer, labelled with what made it.

    The content tag is a hash of everything that determines the image (Dockerfile, context files, base digest,
    smimg version): an unchanged project is not rebuilt, and a code edit rebuilds one small layer.
    With --push the image then goes to ECR (or --registry) and the digest-pinned URI is printed.
    """
    loaded = load(spec, base=base, name=name, accelerate=accelerate)
    if dry_run:
        plan = build_lib.prepare(loaded, extra_tags=tag or (), pull=False)
        if json:
            console.print_json(plan.as_dict())
        else:
            console.out.print(plan.dockerfile, markup=False)
            console.out.print("# " + shlex.join(plan.argv), markup=False)
        return
    live = progress is Progress.tty or (progress is Progress.auto and console.interactive())
    with BuildView(live) as view:
        result = build_lib.build(loaded, extra_tags=tag or (), force=force, on_line=view)
    if push:
        push_plan = ship.prepare_after_build(result, loaded, tags=tag or (), registry_flag=registry, region=region)
        verb = "built" if result.built else "up to date, reused"
        console.err.print(f"[green]{verb}[/] {result.tags[0]} in {result.seconds:.1f}s")
        push_with_view(
            push_plan, username=username, password_stdin=password_stdin, update_repository=update_repository, json=json
        )
        return
    if json:
        console.print_json(result.as_dict())
        return
    verb = "built" if result.built else "up to date, reused"
    console.err.print(f"[green]{verb}[/] {result.tags[0]} ({result.size / 1e9:.2f} GB) in {result.seconds:.1f}s")
    console.out.print(result.tags[0])


def inspect_command(
    image: Annotated[str, typer.Argument(help="A local image reference.")],
    json: Json = False,
) -> None:
    """Show what smimg built an image from: base and digest, spec, smimg version, installed packages."""
    info = images.inspect_image(image)
    if json:
        console.print_json(info.as_dict())
        return
    if not info.built_by_smimg:
        console.out.print(f"{image}: not built by smimg (no {contract.LABEL_VERSION} label)")
        return
    console.out.print(f"[bold]{image}[/]  {info.image_id[:19]}  {info.size / 1e9:.2f} GB")
    console.out.print(f"  smimg {info.smimg_version}, content hash {info.content_hash}")
    console.out.print(f"  base  {info.base}  {info.base_digest or ''}")
    console.out.print(f"  spec  {info.spec}", markup=False)
    console.out.print(f"  packages ({len(info.packages)}): " + " ".join(info.packages), markup=False)


def check_command(
    image: Annotated[str, typer.Argument(help="A local image reference.")],
    contract_check: Annotated[
        bool,
        typer.Option(
            "--contract",
            help="Run the image as SageMaker would, on local hosts, for any image (not only smimg's): multi-node "
            "torchrun, hyperparameters verbatim, a failing host, host order on 10 hosts, SIGTERM, SDK v3's tools, "
            "/opt/ml/code. A minute or two.",
        ),
    ] = False,
    json: Json = False,
) -> None:
    """Smoke-test an image: torch and accelerate import, the entrypoint answers, /opt/ml/code is empty.

    With --contract, check that it honours SageMaker's runtime contract: each scenario is a local job with a small
    probe script (script mode), reported with its time and evidence. Exit 1 when any fails.
    """
    if contract_check:
        _check_contract(image, json)
        return
    report = images.check_image(image)
    if json:
        console.print_json(report.as_dict())
    else:
        for item in report.checks:
            mark = "[green]ok[/]  " if item.ok else "[red]FAIL[/]"
            console.out.print(f"{mark} {item.name}: {item.detail}", highlight=False)
    if not report.ok:
        raise typer.Exit(1)


def _check_contract(image: str, json: bool) -> None:
    def show(scenario: conformance.Scenario) -> None:
        if not json:
            mark = "[green]ok[/]  " if scenario.ok else "[red]FAIL[/]"
            width = max(map(len, conformance.SCENARIOS))
            console.out.print(f"{mark} {scenario.name:<{width}} {scenario.seconds:5.1f}s  ", end="", highlight=False)
            console.out.print(scenario.evidence, markup=False, highlight=False)

    if not json:
        console.err.print(f"checking {image} against SageMaker's runtime contract (a minute or two)")
    report = conformance.check_contract(image, on_scenario=show)
    if json:
        console.print_json(report.as_dict())
    if not report.ok:
        raise typer.Exit(1)
