"""Run in the cloud: the same job as ``smimg local run``, as a SageMaker training job, watched to its end.

``image`` (the image pinned to its digest once ECR shows SageMaker can pull it, a local one pushed first) →
``plan`` (pure: ``CloudJob`` → the CreateTrainingJob request, checked with SageMaker's limits) → ``execute``
(inputs checked, code uploaded, the job created, ``watch`` follows its status and every host's log lines).
Modules load on first use (``smimg.lazy``): `smimg local run` needs none of them.
"""

from typing import TYPE_CHECKING

from smimg import lazy

if TYPE_CHECKING:
    from smimg.cloud import plan as plan
    from smimg.cloud import watch as watch
    from smimg.cloud.accelerate import read_accelerate_config as read_accelerate_config
    from smimg.cloud.execute import CloudResult as CloudResult
    from smimg.cloud.execute import attach as attach
    from smimg.cloud.execute import describe as describe
    from smimg.cloud.execute import download as download
    from smimg.cloud.execute import jobs as jobs
    from smimg.cloud.execute import launch as launch
    from smimg.cloud.execute import logs as logs
    from smimg.cloud.execute import resolve_region as resolve_region
    from smimg.cloud.execute import stop as stop
    from smimg.cloud.image import ChosenImage as ChosenImage
    from smimg.cloud.image import choose_image as choose_image
    from smimg.cloud.image import pin_image as pin_image
    from smimg.cloud.image import ship_image as ship_image
    from smimg.cloud.job import LaunchFlags as LaunchFlags
    from smimg.cloud.job import make_cloud_job as make_cloud_job
    from smimg.cloud.job import prepare_launch as prepare_launch
    from smimg.cloud.plan import CloudJob as CloudJob
    from smimg.cloud.plan import LaunchPlan as LaunchPlan
    from smimg.cloud.plan import plan_launch as plan_launch

DEFAULT_VOLUME_GB = 30  # here, not in plan: the CLI's help names it without loading the planner

_WHERE = {
    "plan": "plan",
    "watch": "watch",
    "read_accelerate_config": "accelerate",
    **dict.fromkeys(
        ("CloudResult", "attach", "describe", "download", "jobs", "launch", "logs", "resolve_region", "stop"),
        "execute",
    ),
    **dict.fromkeys(("ChosenImage", "choose_image", "pin_image", "ship_image"), "image"),
    **dict.fromkeys(("LaunchFlags", "make_cloud_job", "prepare_launch"), "job"),
    **dict.fromkeys(("CloudJob", "LaunchPlan", "plan_launch"), "plan"),
}
__all__ = ["DEFAULT_VOLUME_GB", *sorted(_WHERE)]
__getattr__ = lazy.exports(__name__, _WHERE)
