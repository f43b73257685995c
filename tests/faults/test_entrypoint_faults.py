"""The entrypoint's launch faults, without processes: a rank's own exit code read from torchrun's failure summary,
and a launch that cannot start (too long for Linux, launcher missing) refused with a reason and a fix."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest

from smimg_entrypoint.cluster import Paths, parse_cluster
from smimg_entrypoint.hyperparameters import parse
from smimg_entrypoint.main import RankFailure, launch_error, rank_failures
from smimg_entrypoint.plan import Code, Devices, LaunchPlan, plan_launch
from smimg_entrypoint.settings import PlanError, Settings

# The end of torchrun's stderr (torch 2.13) after rank 1 called sys.exit(3) and torchrun stopped rank 0.
SUMMARY = """\
[default0]:Failures: my own line, which must not confuse the parser
torch.distributed.elastic.multiprocessing.errors.ChildFailedError:
============================================================
train.py FAILED
------------------------------------------------------------
Failures:
[1]:
  time      : 2026-11-22_00:18:19
  host      : algo-1
  rank      : 4 (local_rank: 0)
  exitcode  : -15 (pid: 26471)  (SIGTERM)
  error_file: <N/A>
  traceback : Signal 15 (SIGTERM) received by PID 26471
[2]:
  time      : 2026-11-22_00:18:19
  host      : algo-1
  rank      : 6 (local_rank: 2)
  exitcode  : -9 (pid: 26473)  (SIGKILL)
  error_file: <N/A>
  traceback : Signal 9 (SIGKILL) received by PID 26473
------------------------------------------------------------
Root Cause (first observed failure):
[0]:
  time      : 2026-11-22_00:18:19
  host      : algo-1
  rank      : 5 (local_rank: 1)
  exitcode  : 3 (pid: 26472)
  error_file: <N/A>
  traceback : To enable traceback see: https://pytorch.org/docs/stable/elastic/errors.html
============================================================
"""


def plan(hyperparameters: dict[str, str]) -> LaunchPlan:
    job = parse_cluster({"current_host": "algo-1", "hosts": ["algo-1"]}, hyperparameters, {})
    decoded = parse(job.hyperparameters)
    settings = Settings.load(decoded.reserved, {})
    code = Code("/opt/smimg/code", "train.py")
    return plan_launch(job, decoded, settings, {}, Devices(), code, "/tmp/logs", Paths(Path("/opt/ml")))


def test_torchrun_summary_gives_each_failed_rank_and_its_code_first_failure_first() -> None:
    failures = rank_failures("[default0]:starting\n" + SUMMARY)
    assert failures == [RankFailure(5, 1, 3), RankFailure(4, 0, -15), RankFailure(6, 2, -9)]
    assert [failure.status for failure in failures] == [3, 143, 137]
    assert failures[0].describe() == "rank 5 (local rank 1) exited with code 3"
    assert failures[2].describe() == "rank 6 (local rank 2) was killed by SIGKILL"
    assert rank_failures("Traceback (most recent call last):\nValueError: boom\n") == []


def test_a_hyperparameter_too_long_for_linux_is_refused_by_name() -> None:
    with pytest.raises(PlanError) as refused:
        plan({"prompt": json.dumps("x" * 200_000), "epochs": "3"})
    assert str(refused.value).startswith(
        "hyperparameter 'prompt' (200,000 characters) is too long to pass to the training script: "
    )
    assert "SageMaker allows at most 2,500 characters per hyperparameter value" in str(refused.value)
    assert "pass large values as a file in an input channel" in str(refused.value)


def test_hyperparameters_too_long_only_once_in_the_environment_are_refused() -> None:
    # 40,000 characters pass as one argument (120,000 bytes), but SM_HPS escapes each as \\uXXXX (6 bytes).
    with pytest.raises(PlanError, match=r"^hyperparameter 'text' \(40,000 characters\) is too long .*: SM_"):
        plan({"text": json.dumps("語" * 40_000)})
    # Sixty values within SageMaker's limit, too long together for the variables that carry them all.
    many = {f"value_{i:02}": json.dumps("v" * 2_400) for i in range(60)}
    with pytest.raises(PlanError, match=r"^the training script's arguments and environment are too long: SM_"):
        plan(many)
    assert plan({"prompt": json.dumps("x" * 2_500)}).argv[-1] == "x" * 2_500


def test_a_launch_that_cannot_start_says_why_and_what_to_change() -> None:
    launch = plan({"prompt": json.dumps("x" * 3_000)})
    too_long = launch_error(OSError(errno.E2BIG, "Argument list too long"), launch)
    assert too_long.startswith("hyperparameter 'prompt' (3,000 characters) is too long to pass to the training script")
    assert "(E2BIG)" in too_long and "input channel" in too_long
    missing = launch_error(FileNotFoundError(errno.ENOENT, "No such file or directory", "torchrun"), launch)
    assert missing.startswith("torchrun is not installed in this image (not found on PATH)")
    denied = launch_error(PermissionError(errno.EACCES, "Permission denied", "/opt/smimg/code"), launch)
    assert denied == "torchrun could not start: [Errno 13] Permission denied: '/opt/smimg/code'"


def test_the_reason_names_five_hyperparameters_at_most_so_that_the_fix_fits_the_failure_file() -> None:
    many = {f"value_{i:02}": json.dumps("v" * (3_000 + i)) for i in range(60)}
    with pytest.raises(PlanError) as refused:
        plan(many)
    reason = f"smimg: cannot launch: {refused.value}"
    assert "'value_59' (3,059 characters), 'value_58' (3,058 characters)" in reason
    assert "'value_55' (3,055 characters) and 55 more are too long" in reason
    assert len(reason) < 1024 and reason.endswith("SM_CHANNEL_<NAME> names")
