"""Build: a spec becomes a content-tagged image (plan in ``plan``, executor in ``execute``).

``from smimg import build``: ``build.build(spec.load_spec("."))``, ``build.prepare(...)`` for the plan.
"""

from smimg.build.execute import BuildResult, build, current_tag, default_image, execute, prepare, write_context
from smimg.build.plan import BuildPlan, ContextFile, Secret, plan_build

__all__ = [
    "BuildPlan",
    "BuildResult",
    "ContextFile",
    "Secret",
    "build",
    "current_tag",
    "default_image",
    "execute",
    "plan_build",
    "prepare",
    "write_context",
]
