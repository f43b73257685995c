"""Hyperparameters as SageMaker delivers them (all strings, JSON-encoded by the SDK) to an argument list.

No shell is involved anywhere: values with spaces, quotes or ``; rm -rf /`` arrive in the script verbatim.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from smimg_entrypoint.contract import BOOL_FLAG, BOOL_STYLE, BOOL_STYLES, BOOL_VALUE, RESERVED_KEYS, RESERVED_PREFIXES


@dataclass(frozen=True)
class Hyperparameters:
    """The job's hyperparameters, decoded: the script's own, and the reserved ones that configure the launch."""

    user: Mapping[str, Any]
    reserved: Mapping[str, Any]


def parse(raw: Mapping[str, str]) -> Hyperparameters:
    """Decode and split ``hyperparameters.json``'s values, once per launch."""
    user, reserved = split(decode(raw))
    return Hyperparameters(user, reserved)


def decode(raw: Mapping[str, str]) -> dict[str, Any]:
    """JSON-decode each value as the SDK encodes it; a value that is not JSON stays the raw string."""
    decoded: dict[str, Any] = {}
    for key, value in raw.items():
        try:
            decoded[key] = json.loads(value)
        except (TypeError, ValueError):
            decoded[key] = value
    return decoded


def split(decoded: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(user hyperparameters, reserved ones)."""
    user, reserved = {}, {}
    for key, value in decoded.items():
        if key.startswith(RESERVED_PREFIXES) or key in RESERVED_KEYS:
            reserved[key] = value
        else:
            user[key] = value
    return user, reserved


def to_args(user: Mapping[str, Any], bool_style: str = BOOL_VALUE) -> list[str]:
    """Arguments in sorted key order, spelled as sagemaker-training spells them (``mapping.to_cmd_args``), so that
    scripts written for the DLCs parse them unchanged: ``--key value``, ``-k value`` for a one-letter key, a
    mapping as ``a=1,b=x``, a list as Python prints it, None as an empty value.

    Booleans: ``value`` gives ``--flag True``/``--flag False`` (the toolkit's, and what HfArgumentParser expects);
    ``flag`` gives a bare ``--flag`` for True and nothing for False (argparse ``store_true``).
    """
    if bool_style not in BOOL_STYLES:
        raise ValueError(f"{BOOL_STYLE[0]} must be one of {', '.join(BOOL_STYLES)}, not {bool_style!r}")
    args: list[str] = []
    for key in sorted(user):
        value = user[key]
        name = f"--{key}" if len(key) > 1 else f"-{key}"
        if isinstance(value, bool) and bool_style == BOOL_FLAG:
            args += [name] if value else []
        elif isinstance(value, dict):
            args += [name, ",".join(f"{k}={v}" for k, v in sorted(value.items()))]
        else:
            args += [name, "" if value is None else str(value)]
    return args
