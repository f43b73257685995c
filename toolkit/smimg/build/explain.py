"""Why a build failed, from its output: the installer's report line when there is one, else BuildKit's step.

Pure. The installer (``images/installer.py``) ends a failure with ``contract.INSTALL_FAILURE_MARKER`` and a JSON
object; anything else (a system package, a user's block) is explained by the failing step and its last lines.
"""

from __future__ import annotations

import json
import re
from typing import Any

from smimg_entrypoint import contract

_PREFIX = re.compile(r"^#\d+ \d+\.\d+ ")  # BuildKit's "#12 3.45 " before a step's output line
_GENERIC_FIX = "read the failing step's output above, fix it and build again"


def installer_report(output: str) -> dict[str, Any] | None:
    """The installer's last failure report in a build's output, or None."""
    report = None
    for line in output.splitlines():
        text = _PREFIX.sub("", line)
        if text.startswith(contract.INSTALL_FAILURE_MARKER + " "):
            try:
                report = json.loads(text[len(contract.INSTALL_FAILURE_MARKER) + 1 :])
            except ValueError:
                continue
    return report if isinstance(report, dict) else None


def explain_failure(output: str) -> tuple[str, str]:
    """(message, hint) for a failed build."""
    step, detail = _failing_step(output)
    report = installer_report(output)
    if report is None:
        return f"the image build failed\n  failing step: {step}\n" + "\n".join(detail), _GENERIC_FIX
    if report.get("base_package"):
        headline = (
            f"a requirement would replace the base image's {report['base_package']} (the DLC's torch/CUDA stack): "
            f"{report.get('requirement')}"
        )
    elif report.get("requirement"):
        headline = f"installing the {report.get('what')} failed at {report['requirement']}"
    else:
        headline = f"installing the {report.get('what')} failed"
    reason = "\n".join(f"  pip: {line}" for line in str(report.get("reason") or "").splitlines())
    return f"{headline}\n{reason}\n  failing step: {step}", str(report.get("fix") or _GENERIC_FIX)


def _failing_step(output: str) -> tuple[str, list[str]]:
    raw = output.splitlines()
    lines = [_PREFIX.sub("", line) for line in raw]
    step = ""
    for line in raw:
        match = re.match(r"^#\d+ (\[[^\]]+\] .*)$", line) or re.match(r"^(Step \d+/\d+ : .*)$", line)
        if match:
            step = match[1]
    markers = [i for i, line in enumerate(lines) if line.startswith("------")]
    block = lines[markers[0] + 1 : markers[1]] if len(markers) >= 2 else lines[-20:]
    step = next((b.strip(" >:") for b in block if b.startswith(" > [")), step)
    detail = [b for b in block if not b.startswith(" > [") and contract.INSTALL_FAILURE_MARKER not in b][-15:]
    return step, detail
