"""The CLI's only output layer: status and progress on stderr, results on stdout."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from rich.console import Console

err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)


def interactive() -> bool:
    return err.is_terminal and os.environ.get("CI", "").lower() not in {"1", "true"}


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def line_printer(prefix: str = "") -> Any:
    def emit(line: str) -> None:
        err.print(f"{prefix}{line}", markup=False)

    return emit
