"""Run in the cloud: the same job as ``smimg local run``, as a SageMaker training job, watched to its end.

``plan`` (pure: ``CloudJob`` → the CreateTrainingJob request, checked with SageMaker's limits) → ``execute``
(inputs checked, code uploaded, the job created, ``watch`` follows its status and every host's log lines).
"""

from smimg.cloud import plan, watch
from smimg.cloud.execute import CloudResult, attach, describe, download, jobs, launch, logs, resolve_region, stop
from smimg.cloud.job import make_cloud_job
from smimg.cloud.plan import CloudJob, LaunchPlan, plan_launch

__all__ = [
    "CloudJob",
    "CloudResult",
    "LaunchPlan",
    "attach",
    "describe",
    "download",
    "jobs",
    "launch",
    "logs",
    "make_cloud_job",
    "plan",
    "plan_launch",
    "resolve_region",
    "stop",
    "watch",
]
