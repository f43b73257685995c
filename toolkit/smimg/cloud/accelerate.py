"""accelerate's SageMaker config (what `accelerate config` writes for AMAZON_SAGEMAKER) read as a launch on the
smimg image, with accelerate's launcher: the replacement for `accelerate launch` on SageMaker, which needs SDK v2.

Each field means what accelerate 1.x's ``sagemaker_launcher`` makes of it (``prepare_sagemager_args_inputs``);
``additional_args`` are the SDK v2 Estimator's keyword arguments, of which those with a `smimg launch` flag are
taken. What only chooses a Hugging Face DLC (``pytorch_version``, ...) has no use with an smimg image; what
accelerate itself drops on SageMaker (``gpu_ids``, ``dynamo_config``, ...) is dropped here too.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from smimg.errors import LaunchError
from smimg_entrypoint import contract

SAGEMAKER = "AMAZON_SAGEMAKER"
DISTRIBUTED = ("NO", "DATA_PARALLEL")  # MODEL_PARALLEL: accelerate maps it to nothing and then fails in the job
PRECISIONS = ("no", "fp16", "bf16", "fp8")
# Estimator keyword → make_cloud_job keyword.
ADDITIONAL = {
    "use_spot_instances": "spot",
    "max_wait": "max_wait",
    "max_run": "max_run",
    "enable_network_isolation": "network_isolation",
    "checkpoint_s3_uri": "checkpoints",
    "volume_size": "volume_gb",
    "output_path": "output",
    "subnets": "subnets",
    "security_group_ids": "security_groups",
    "keep_alive_period_in_seconds": "keep_alive",
}
# Fields with no effect on an smimg launch: the DLC's versions, and what accelerate does not send to SageMaker.
UNUSED = (
    "pytorch_version", "transformers_version", "py_version", "gpu_ids", "debug", "dynamo_config",
    "enable_cpu_affinity", "use_cpu", "sagemaker_metrics_file",
)  # fmt: skip
KNOWN = (
    "compute_environment", "distributed_type", "mixed_precision", "ec2_instance_type", "iam_role_name", "image_uri",
    "profile", "region", "num_machines", "base_job_name", "sagemaker_inputs_file", "additional_args", *UNUSED,
)  # fmt: skip


@dataclass(frozen=True)
class AccelerateLaunch:
    """A launch's inputs from an accelerate config: defaults under the command's own flags."""

    values: Mapping[str, Any] = field(default_factory=dict)  # make_cloud_job keyword → value
    env: tuple[tuple[str, str], ...] = ()
    inputs: tuple[str, ...] = ()  # NAME=s3://... from sagemaker_inputs_file
    tags: tuple[str, ...] = ()  # KEY=VALUE
    profile: str | None = None
    base_job_name: str | None = None


def read_accelerate_config(path: Path) -> AccelerateLaunch:
    """
    Raises:
        LaunchError: the file is missing or unreadable, not a SageMaker config, or has a field or value accelerate
            would refuse or smimg cannot honour (each named, with the fix).
    """
    config = _load(path)
    where = f"--accelerate-config {path}"
    if config.get("compute_environment") != SAGEMAKER:
        raise LaunchError(
            f"{where} is not a SageMaker config (compute_environment: {config.get('compute_environment')})",
            "pass the config `accelerate config` wrote for AMAZON_SAGEMAKER",
        )
    unknown = sorted(set(config) - set(KNOWN))
    if unknown:
        raise LaunchError(
            f"{where}: unknown field {unknown[0]}", f"accelerate's SageMaker fields are {', '.join(KNOWN)}"
        )
    # YAML 1.1 reads an unquoted NO or no as false: what a hand-written config means by it.
    distributed = str(config.get("distributed_type") or "NO")
    if distributed not in DISTRIBUTED:
        raise LaunchError(
            f"{where}: distributed_type {distributed} is not run by accelerate on SageMaker either",
            "use DATA_PARALLEL (smimg runs it as PyTorch DDP on every GPU of every instance) or NO",
        )
    precision = str(config.get("mixed_precision") or "no")
    if precision not in PRECISIONS:
        raise LaunchError(f"{where}: mixed_precision {precision} is not one of {', '.join(PRECISIONS)}", "fix it")
    values: dict[str, Any] = {
        key: config[name]
        for name, key in (
            ("ec2_instance_type", "instance_type"),
            ("num_machines", "instances"),
            ("iam_role_name", "role"),
            ("region", "region"),
            ("image_uri", "image"),
        )
        if config.get(name) is not None
    }
    extra, env, tags = _additional(config.get("additional_args") or {}, where)
    launcher = [(contract.LAUNCHER_ENV, contract.ACCELERATE), (contract.ACCELERATE_MIXED_PRECISION, precision)]
    if distributed == "NO":  # as accelerate's launcher runs it on SageMaker: one process per instance
        launcher.append((contract.NPROC_PER_NODE[1], "1"))
    return AccelerateLaunch(
        values={**values, **extra},
        env=(*launcher, *env),
        inputs=_inputs(config.get("sagemaker_inputs_file"), where),
        tags=tags,
        profile=config.get("profile"),
        base_job_name=config.get("base_job_name"),
    )


def _load(path: Path) -> dict[str, Any]:
    import yaml

    try:
        text = path.read_text()
        loaded = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except OSError as exc:
        raise LaunchError(f"cannot read --accelerate-config {path}: {exc.strerror}", "pass the config's path") from None
    except (ValueError, yaml.YAMLError) as exc:  # json's errors are ValueErrors, yaml's are not
        reason = " ".join(str(exc).split())  # yaml's message spans lines: one line here
        raise LaunchError(f"--accelerate-config {path} is not YAML or JSON: {reason}", "fix the file") from None
    if not isinstance(loaded, dict):
        raise LaunchError(f"--accelerate-config {path} holds no fields", "pass the config `accelerate config` wrote")
    return loaded


def _additional(args: Mapping[str, Any], where: str) -> tuple[dict[str, Any], list[tuple[str, str]], tuple[str, ...]]:
    """additional_args: the Estimator's keyword arguments that have a `smimg launch` flag, its environment and
    tags."""
    values: dict[str, Any] = {}
    env: list[tuple[str, str]] = []
    tags: tuple[str, ...] = ()
    for key, value in args.items():
        if key in ADDITIONAL:
            values[ADDITIONAL[key]] = tuple(value) if isinstance(value, list) else value
        elif key == "environment" and isinstance(value, dict):
            env += [(str(k), str(v)) for k, v in value.items()]
        elif key == "tags" and isinstance(value, list):
            tags = tuple(f"{t['Key']}={t['Value']}" for t in value if isinstance(t, dict) and "Key" in t)
        else:
            raise LaunchError(
                f"{where}: additional_args.{key} has no `smimg launch` equivalent",
                f"remove it; smimg takes {', '.join([*ADDITIONAL, 'environment', 'tags'])}",
            )
    return values, env, tags


def _inputs(name: str | None, where: str) -> tuple[str, ...]:
    """sagemaker_inputs_file (from the current folder, as accelerate opens it): a tab-separated table, a header
    line, then channel name and S3 URI per line."""
    if not name:
        return ()
    path = Path(name)
    try:
        lines = path.read_text().splitlines()[1:]
    except OSError as exc:
        raise LaunchError(f"{where}: sagemaker_inputs_file {path}: {exc.strerror}", "fix the path") from None
    rows = [line.split("\t") for line in lines if line.strip()]
    if any(len(row) < 2 for row in rows):
        raise LaunchError(f"{where}: sagemaker_inputs_file {path} has a line without a tab", "write NAME<TAB>s3://...")
    return tuple(f"{row[0]}={row[1]}" for row in rows)
