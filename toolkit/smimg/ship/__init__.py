"""Ship: a local image to ECR (or any OCI registry), checked as SageMaker will pull it.

``from smimg import ship``: ``ship.push(ship.prepare_push(ref, spec))``; ``ship.plan_push`` is the pure planner.
Modules load on first use (``smimg.lazy``).
"""

from typing import TYPE_CHECKING

from smimg import lazy

if TYPE_CHECKING:
    from smimg.ship.execute import LayerEvent as LayerEvent
    from smimg.ship.execute import PushResult as PushResult
    from smimg.ship.execute import login as login
    from smimg.ship.execute import prepare_after_build as prepare_after_build
    from smimg.ship.execute import prepare_push as prepare_push
    from smimg.ship.execute import push as push
    from smimg.ship.execute import resolve_target as resolve_target
    from smimg.ship.plan import PushPlan as PushPlan
    from smimg.ship.plan import PushTarget as PushTarget
    from smimg.ship.plan import RepositorySettings as RepositorySettings
    from smimg.ship.plan import launch_snippets as launch_snippets
    from smimg.ship.plan import plan_push as plan_push

PASSWORD_ENV = "SMIMG_REGISTRY_PASSWORD"  # here, not in execute: the CLI's help names it without loading the push

_WHERE = {
    **dict.fromkeys(
        ("LayerEvent", "PushResult", "login", "prepare_after_build", "prepare_push", "push", "resolve_target"),
        "execute",
    ),
    **dict.fromkeys(("PushPlan", "PushTarget", "RepositorySettings", "launch_snippets", "plan_push"), "plan"),
}
__all__ = ["PASSWORD_ENV", *sorted(_WHERE)]
__getattr__ = lazy.exports(__name__, _WHERE)
