"""Run in the cloud: the same job as ``smimg local run``, as a SageMaker training job, watched to its end.

``image`` (the image pinned to its digest once ECR shows SageMaker can pull it, a local one pushed first) →
``plan`` (pure: ``CloudJob`` → the CreateTrainingJob request, checked with SageMaker's limits) → ``execute``
(inputs checked, code uploaded, the job created, ``watch`` follows its status and every host's log lines).
"""

from smimg.cloud import plan, watch
from smimg.cloud.accelerate import read_accelerate_config
from smimg.cloud.execute import CloudResult, attach, describe, download, jobs, launch, logs, resolve_region, stop
from smimg.cloud.image import ChosenImage, choose_image, pin_image, ship_image
from smimg.cloud.job import LaunchFlags, make_cloud_job, prepare_launch
from smimg.cloud.plan import CloudJob, LaunchPlan, plan_launch

__all__ = [
    "ChosenImage",
    "CloudJob",
    "CloudResult",
    "LaunchFlags",
    "LaunchPlan",
    "attach",
    "choose_image",
    "describe",
    "download",
    "jobs",
    "launch",
    "logs",
    "make_cloud_job",
    "pin_image",
    "plan",
    "plan_launch",
    "prepare_launch",
    "read_accelerate_config",
    "resolve_region",
    "ship_image",
    "stop",
    "watch",
]
