"""Packages that import their modules on first use.

``smimg --version`` or ``smimg local run`` need neither pydantic nor jinja2 nor the build's planners, which were most
of the CLI's start-up; a package lists what it exports and where each name lives, and the module is imported the
first time one of its names is read.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping


def exports(package: str, where: Mapping[str, str]) -> Callable[[str], object]:
    """A module ``__getattr__`` for ``package``: ``where`` maps each exported name to its module, relative; a
    submodule exported by its own name maps to itself."""

    def __getattr__(name: str) -> object:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        loaded = importlib.import_module(f"{package}.{module}")
        value = loaded if module == name else getattr(loaded, name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__
