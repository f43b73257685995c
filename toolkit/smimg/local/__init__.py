"""Local mode: a multi-node SageMaker training job on this machine, as a compose project of ``algo-1..N``.

``job`` (inputs → ``LocalJob``) → ``plan`` (pure: ``LocalPlan`` with every /opt/ml file and the compose project)
→ ``run`` (executor). ``from smimg import local``: ``local.run(local.plan_job(local.make_job(ref, instances=2),
run_dir), output=...)``.
"""

from smimg.local.execute import HostResult, LocalResult, available_gpus, run, shell, supervise, write_run_dir
from smimg.local.job import LocalJob, default_run_dir, hyperparameter_value, load_hyperparameters, make_job
from smimg.local.plan import HostPlan, LocalPlan, plan_job

__all__ = [
    "HostPlan",
    "HostResult",
    "LocalJob",
    "LocalPlan",
    "LocalResult",
    "available_gpus",
    "default_run_dir",
    "hyperparameter_value",
    "load_hyperparameters",
    "make_job",
    "plan_job",
    "run",
    "shell",
    "supervise",
    "write_run_dir",
]
