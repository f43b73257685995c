"""Local mode: a multi-node SageMaker training job on this machine, as containers ``algo-1..N`` on one network.

``job`` (inputs → ``LocalJob``) → ``plan`` (pure: ``LocalPlan`` with every /opt/ml file and container)
→ ``run`` (executor). ``from smimg import local``: ``local.run(local.plan_job(local.make_job(ref, instances=2),
run_dir), output=...)``.
"""

from smimg.local.execute import (
    INTERRUPTED,
    MAX_RUNTIME_EXCEEDED,
    Attempt,
    HostResult,
    LocalResult,
    available_gpus,
    run,
    shell,
    write_run_dir,
)
from smimg.local.job import (
    Conditions,
    InstanceGroup,
    LocalJob,
    checkpoints_option,
    default_run_dir,
    hyperparameter_value,
    load_hyperparameters,
    make_job,
)
from smimg.local.jobs import RunningJob, running, stop
from smimg.local.plan import HostPlan, LocalPlan, plan_job

__all__ = [
    "INTERRUPTED",
    "MAX_RUNTIME_EXCEEDED",
    "Attempt",
    "Conditions",
    "HostPlan",
    "HostResult",
    "InstanceGroup",
    "LocalJob",
    "LocalPlan",
    "LocalResult",
    "RunningJob",
    "available_gpus",
    "checkpoints_option",
    "default_run_dir",
    "hyperparameter_value",
    "load_hyperparameters",
    "make_job",
    "plan_job",
    "run",
    "running",
    "shell",
    "stop",
    "write_run_dir",
]
