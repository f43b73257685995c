"""`smimg push` and `smimg login`."""

from __future__ import annotations

from typing import Annotated

import typer

from smimg import build as build_lib
from smimg import ship
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
)
from smimg.cli.progress import push_with_view


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
    from smimg.spec import load_optional

    loaded_spec = load_optional(spec, required=image is None)
    if image is None:
        assert loaded_spec is not None
        image = build_lib.current_tag(loaded_spec)
    plan = ship.prepare_push(
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
    push_with_view(
        plan, username=username, password_stdin=password_stdin, update_repository=update_repository, json=json
    )


def login_command(
    spec: SpecPath = None,
    region: Region = None,
) -> None:
    """Store an ECR login in ~/.docker/config.json (through `docker login`), for tools other than smimg.

    smimg itself never needs this: it hands fresh credentials to the engine on every push. The login lasts 12 hours.
    """
    from smimg.spec import load_optional

    loaded = load_optional(spec, required=False)
    auth = ship.login(loaded.spec if loaded else None, region=region)
    console.err.print(f"[green]logged in[/] to {auth.registry} (valid until {auth.expires_at or 'in 12 hours'})")
