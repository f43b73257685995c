"""Requests checked against botocore's service model as the service checks them, before anything is sent.

botocore checks types, required members and minimums on the client; lengths beyond a maximum, counts, ranges and
patterns are checked by the service, after the call — for a launch, after the code was uploaded. Here every member
of a request is checked against the model's limits and worded as the service words a member's ValidationException
(``Value 'x' at 'trainingJobName' failed to satisfy constraint: ...``). Enums are left to the service, as botocore
leaves them: it adds values (instance types) that an older model here would wrongly refuse.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any

# The model's patterns are Java regular expressions; these Unicode classes have no spelling in Python's ``re``. The
# stand-ins only widen what matches (never a false refusal), and the bare ranges are right only inside [...], where
# the model writes them.
_JAVA_CLASSES = {r"\p{Alnum}": "a-zA-Z0-9", r"\p{L}": r"\w", r"\p{N}": r"\d", r"\p{Z}": r"\s"}


def violations(service: str, operation: str, params: Mapping[str, Any]) -> list[str]:
    """Each member of ``params`` that breaks its shape's limits, as the service would report it."""
    found: list[str] = []
    _check(_input_shape(service, operation), params, "", found)
    return found


def summary(found: list[str]) -> str:
    """The service's one-line report of its validation errors."""
    count = f"{len(found)} validation error{'s' if len(found) != 1 else ''} detected"
    return f"{count}: {'; '.join(found)}"


@functools.lru_cache(maxsize=8)
def _input_shape(service: str, operation: str) -> Any:
    import botocore.session

    return botocore.session.get_session().get_service_model(service).operation_model(operation).input_shape


def _check(shape: Any, value: Any, path: str, found: list[str]) -> None:
    kind, limits = shape.type_name, shape.metadata
    if kind == "structure" and isinstance(value, Mapping):
        for name, member in shape.members.items():
            if name in value:
                _check(member, value[name], _join(path, name[:1].lower() + name[1:]), found)
    elif kind == "list" and isinstance(value, list):
        _count(value, limits, path, found)
        for i, item in enumerate(value, start=1):
            _check(shape.member, item, f"{path}.{i}.member", found)
    elif kind == "map" and isinstance(value, Mapping):
        _count(value, limits, path, found)
        for key, item in value.items():
            _check(shape.key, key, path, found)
            _check(shape.value, item, path, found)
    elif kind == "string" and isinstance(value, str):
        _string(value, limits, path, found)
    elif kind in ("integer", "long") and isinstance(value, int) and not isinstance(value, bool):
        if "min" in limits and value < limits["min"]:
            found.append(_said(value, path, f"Member must have value greater than or equal to {limits['min']}"))
        if "max" in limits and value > limits["max"]:
            found.append(_said(value, path, f"Member must have value less than or equal to {limits['max']}"))


def _string(value: str, limits: Mapping[str, Any], path: str, found: list[str]) -> None:
    if "min" in limits and len(value) < limits["min"]:
        found.append(_said(value, path, f"Member must have length greater than or equal to {limits['min']}"))
    if "max" in limits and len(value) > limits["max"]:
        found.append(_said(value, path, f"Member must have length less than or equal to {limits['max']}"))
    pattern = _pattern(limits.get("pattern", ""))
    if pattern is not None and not pattern.fullmatch(value):
        found.append(_said(value, path, f"Member must satisfy regular expression pattern: {limits['pattern']}"))


def _count(value: Any, limits: Mapping[str, Any], path: str, found: list[str]) -> None:
    if "max" in limits and len(value) > limits["max"]:
        found.append(f"Value at '{path}' failed to satisfy constraint: Member must have length less than or equal to "
                     f"{limits['max']}")  # fmt: skip
    if "min" in limits and len(value) < limits["min"]:
        found.append(f"Value at '{path}' failed to satisfy constraint: Member must have length greater than or "
                     f"equal to {limits['min']}")  # fmt: skip


@functools.lru_cache(maxsize=512)
def _pattern(text: str) -> re.Pattern[str] | None:
    """The model's pattern in Python's spelling; None for none, or one Python cannot read (it is not checked)."""
    if not text:
        return None
    for java, python in _JAVA_CLASSES.items():
        text = text.replace(java, python)
    try:
        return re.compile(text)  # Java's "." stops at a newline, as Python's does
    except re.error:
        return None


def _said(value: object, path: str, constraint: str) -> str:
    shown = value if isinstance(value, int) else f"'{value}'"
    return f"Value {shown} at '{path}' failed to satisfy constraint: {constraint}"


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name
