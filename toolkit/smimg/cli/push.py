"""`smimg push` and `smimg login`."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from smimg import push as push_lib
from smimg.cli import console
from smimg.cli.options import (
    Json,
    PasswordStdin,
    Region,
    Registry,
    Repository,
    SpecPath,
    UpdateRepository,
    Username,
    load_optional,
)
from smimg.cli.progress import PushView


def push_command(
    image: Annotated[
        str | None, typer.Argument(help="Local image to push. Default: the image the spec builds now.")
    ] = None,
    spec: SpecPath = None,
    registry: Registry = None,
    region: Region = None,
    repository: Repository = None,
    tag: Annotated[
        list[str] | None, typer.Option("--tag", "-t", help="Also push under this human tag (e.g. latest); repeatable.")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Upload even when the content tag is already there.")] = False,
    update_repository: UpdateRepository = False,
    username: Username = None,
    password_stdin: PasswordStdin = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan; push nothing.")] = False,
    json: Json = False,
) -> None:
    """Push an image to ECR (or any OCI registry) and print its digest-pinned URI and launch snippets.

    ECR: the account comes from STS (standard credential chain, AWS_PROFILE); the repository is created when missing
    with immutable tags, scan on push, a lifecycle policy and encryption; credentials go to the engine in memory,
    never to ~/.docker/config.json. An upload is skipped when the content tag is already in the repository.
    """
    loaded_spec = load_optional(spec, required=image is None)
    if image is None:
        from smimg import build as build_lib

        assert loaded_spec is not None
        image = build_lib.current_tag(loaded_spec)
    plan = push_lib.prepare_push(
        image,
        loaded_spec.spec if loaded_spec else None,
        registry_flag=registry,
        region=region,
        repository=repository,
        extra_tags=tag or (),
        force=force,
    )
    if dry_run:
        console.print_json(plan.as_dict())
        return
    run_push(plan, username=username, password_stdin=password_stdin, update_repository=update_repository, json=json)


def run_push(
    plan: push_lib.PushPlan, *, username: str | None, password_stdin: bool, update_repository: bool, json: bool
) -> None:
    """Execute and render a push (shared by `smimg push` and `smimg build --push`)."""
    password = sys.stdin.readline().rstrip("\n") if password_stdin else None
    with PushView(console.interactive()) as view:
        result = push_lib.push(
            plan,
            username=username,
            password=password,
            update_repository=update_repository,
            on_event=view.layer,
            on_line=view.line,
        )
    if json:
        console.print_json(result.as_dict())
        return
    if result.skipped:
        console.err.print(f"[green]already pushed[/] {result.refs[0]}")
    else:
        console.err.print(
            f"[green]pushed[/] {', '.join(result.refs)}: {result.layers_pushed} layers uploaded "
            f"({result.bytes_pushed / 1e6:.1f} MB), {result.layers_existing} already there, {result.seconds:.1f}s"
        )
    snippets = result.snippets()
    console.err.print("\n[bold]SageMaker Python SDK v2[/]")
    console.err.print(snippets["sdk_v2"], markup=False)
    console.err.print("[bold]SageMaker Python SDK v3[/]")
    console.err.print(snippets["sdk_v3"], markup=False)
    console.out.print(result.uri)


def login_command(
    spec: SpecPath = None,
    region: Region = None,
) -> None:
    """Store an ECR login in ~/.docker/config.json (through `docker login`), for tools other than smimg.

    smimg itself never needs this: it hands fresh credentials to the engine on every push. The login lasts 12 hours.
    """
    from smimg import docker, ecr

    loaded = load_optional(spec, required=False)
    target = push_lib.resolve_target(loaded.spec if loaded else None, "x", region=region)
    if not target.is_ecr:
        console.err.print(f"{target.registry} is not ECR: run `docker login {target.registry}`")
        raise typer.Exit(2)
    assert target.account and target.region
    auth = ecr.registry_auth(target.account, target.region)
    docker.login(auth.registry, auth.username, auth.password)
    console.err.print(f"[green]logged in[/] to {auth.registry} (valid until {auth.expires_at or 'in 12 hours'})")
