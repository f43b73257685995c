"""Ship: a local image to ECR (or any OCI registry), checked as SageMaker will pull it.

``from smimg import ship``: ``ship.push(ship.prepare_push(ref, spec))``; ``ship.plan_push`` is the pure planner.
"""

from smimg.ship.execute import (
    PASSWORD_ENV,
    LayerEvent,
    PushResult,
    login,
    prepare_after_build,
    prepare_push,
    push,
    resolve_target,
)
from smimg.ship.plan import PushPlan, PushTarget, RepositorySettings, launch_snippets, plan_push

__all__ = [
    "PASSWORD_ENV",
    "LayerEvent",
    "PushPlan",
    "PushResult",
    "PushTarget",
    "RepositorySettings",
    "launch_snippets",
    "login",
    "plan_push",
    "prepare_after_build",
    "prepare_push",
    "push",
    "resolve_target",
]
