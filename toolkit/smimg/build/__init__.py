"""Build: a spec becomes a content-tagged image (plan in ``plan``, executor in ``execute``).

``from smimg import build``: ``build.build(spec.load_spec("."))``, ``build.prepare(...)`` for the plan. Modules load
on first use (``smimg.lazy``).
"""

from typing import TYPE_CHECKING

from smimg import lazy

if TYPE_CHECKING:
    from smimg.build.execute import BuildResult as BuildResult
    from smimg.build.execute import build as build
    from smimg.build.execute import current_tag as current_tag
    from smimg.build.execute import default_image as default_image
    from smimg.build.execute import prepare as prepare
    from smimg.build.execute import write_context as write_context
    from smimg.build.plan import BuildPlan as BuildPlan
    from smimg.build.plan import ContextFile as ContextFile
    from smimg.build.plan import Secret as Secret
    from smimg.build.plan import plan_build as plan_build

_WHERE = {
    **dict.fromkeys(("BuildResult", "build", "current_tag", "default_image", "prepare", "write_context"), "execute"),
    **dict.fromkeys(("BuildPlan", "ContextFile", "Secret", "plan_build"), "plan"),
}
__all__ = sorted(_WHERE)
__getattr__ = lazy.exports(__name__, _WHERE)
