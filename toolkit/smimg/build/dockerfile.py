"""The Dockerfile template (``images/Dockerfile.j2``) rendered with Jinja2. Pure.

The template gets the contract's paths and names through the context, so no path the entrypoint relies on is
spelled in the template itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jinja2

from smimg.resources import images_dir
from smimg_entrypoint import contract

TEMPLATE = "Dockerfile.j2"


def dockerquote(value: object) -> str:
    """A double-quoted Dockerfile value (ENV): backslashes, quotes and ``$`` escaped."""
    text = str(value)
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$")
    return f'"{escaped}"'


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(images_dir())),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters["dockerquote"] = dockerquote
    return env


def render_dockerfile(context: Mapping[str, Any]) -> str:
    """The Dockerfile for one build; ``context`` holds the build's values, the contract is added here."""
    return _environment().get_template(TEMPLATE).render(contract=contract, **context)
