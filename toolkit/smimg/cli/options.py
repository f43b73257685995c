"""Options several commands share: where the spec is and which of its fields a flag overrides."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from smimg.ship import PASSWORD_ENV

if TYPE_CHECKING:
    from smimg.spec import LoadedSpec

SpecPath = Annotated[
    Path | None,
    typer.Option(
        "--spec",
        "-f",
        help="smimg.yaml, a pyproject.toml with a tool.smimg table, or their folder. Default: the current folder.",
    ),
]
BaseImage = Annotated[
    str | None,
    typer.Option("--base", help="Build on this image instead of the spec's base (a local image needs no AWS)."),
]
Name = Annotated[str | None, typer.Option("--name", help="Override the image (repository) name.")]
Accelerate = Annotated[str | None, typer.Option("--accelerate", help="Override the accelerate version.")]
Json = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]
Registry = Annotated[
    str | None,
    typer.Option("--registry", help="Push to this OCI registry HOST[:PORT]/NAMESPACE instead of ECR."),
]
Region = Annotated[str | None, typer.Option("--region", help="ECR region. Default: push.region, then AWS config.")]
Repository = Annotated[str | None, typer.Option("--repository", help="Repository. Default: push.repository, name.")]
UpdateRepository = Annotated[
    bool,
    typer.Option(
        "--update-repository", help="Bring an existing ECR repository's mutability, scanning and lifecycle in line."
    ),
]
Username = Annotated[str | None, typer.Option("--username", help="Registry user (non-ECR registries).")]
PasswordStdin = Annotated[
    bool, typer.Option("--password-stdin", help=f"Read the registry password from stdin (or {PASSWORD_ENV}).")
]


def load(
    spec: Path | None, *, base: str | None = None, name: str | None = None, accelerate: str | None = None
) -> LoadedSpec:
    from smimg.spec import load_spec  # pydantic: loaded by the commands that read a spec, not by every start

    return load_spec(spec, {"base.image": base, "name": name, "accelerate": accelerate})


# The job's flags `local run` and `launch` share: one meaning each.
Instances = Annotated[int | None, typer.Option("--instances", "-n", help="Number of hosts (algo-1..N). Default: 1.")]
InstanceGroups = Annotated[
    list[str] | None,
    typer.Option(
        "--instance-group",
        help="A heterogeneous cluster's group NAME=TYPE:COUNT, instead of --instance-type and -n; repeatable (up to "
        "5). Hosts are algo-1..N in the groups' order; each sees its group in SM_CURRENT_INSTANCE_GROUP.",
    ),
]
DistributionGroup = Annotated[
    str | None,
    typer.Option(
        "--distribution-group",
        help="The instance group whose hosts train together (sagemaker_distribution_instance_groups, as the SDK's "
        "distribution sends it); the other groups' hosts run the script alone. Default: each group on its own.",
    ),
]
InputGroups = Annotated[
    list[str] | None,
    typer.Option(
        "--input-group",
        help="CHANNEL=GROUP[,GROUP]: the channel reaches only these instance groups' hosts (InstanceGroupNames); "
        "once one channel names its groups, every one must. Repeatable.",
    ),
]
Hyperparameters = Annotated[
    list[str] | None, typer.Option("--hp", help="Hyperparameter key=value (JSON values: 3, 0.1, true); repeatable.")
]
HyperparameterFile = Annotated[
    Path | None, typer.Option("--hp-file", help="JSON object of hyperparameters; --hp values override it.")
]
EntryPoint = Annotated[str | None, typer.Option("--entry-point", help="Script mode: the script in --source-dir.")]
Env = Annotated[list[str] | None, typer.Option("--env", "-e", help="Environment variable K=V for every host.")]
