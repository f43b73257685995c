"""plan_training: a CreateTrainingJob request checked as the API checks it, and planned for a local run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from smimg import local
from smimg.local.job import Verbatim
from smimg.training_api.plan import ApiError, TrainingPlan, gpu_request, plan_training

GROUP = {"InstanceGroupName": "train", "InstanceType": "ml.m5.xlarge", "InstanceCount": 2}


def channel(name: str, groups: list[str] | None = None) -> dict[str, Any]:
    source: dict[str, Any] = {"S3DataType": "S3Prefix", "S3Uri": f"s3://bucket/{name}"}
    return {"ChannelName": name, "DataSource": {"S3DataSource": {**source, "InstanceGroupNames": groups or []}}}


REQUEST: dict[str, Any] = {
    "TrainingJobName": "bert-1",
    "AlgorithmSpecification": {
        "TrainingImage": "1.dkr.ecr.us-east-1.amazonaws.com/bert:1",
        "TrainingInputMode": "File",
    },
    "RoleArn": "arn:aws:iam::123456789012:role/r",
    "HyperParameters": {
        "sagemaker_program": '"train.py"',
        "sagemaker_submit_directory": '"s3://b/c.tar.gz"',
        "lr": "0.1",
        "name": "plain text",
        "layers": "[1,2]",
    },
    "Environment": {"WANDB_MODE": "offline"},
    "InputDataConfig": [{"ChannelName": "train", "DataSource": {"S3DataSource": {"S3Uri": "s3://b/train"}}}],
    "OutputDataConfig": {"S3OutputPath": "s3://b/out/"},
    "ResourceConfig": {"InstanceType": "ml.g5.2xlarge", "InstanceCount": 2, "VolumeSizeInGB": 50},
    "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
    "CheckpointConfig": {"S3Uri": "s3://b/ckpt"},
}


def test_a_request_becomes_its_plan_with_hyperparameters_verbatim() -> None:
    assert plan_training(REQUEST) == TrainingPlan(
        name="bert-1",
        image="1.dkr.ecr.us-east-1.amazonaws.com/bert:1",
        instances=2,
        instance_type="ml.g5.2xlarge",
        channels=(("train", "s3://b/train"),),
        hyperparameters=(("layers", "[1,2]"), ("lr", "0.1"), ("name", "plain text")),
        program="train.py",
        submit_directory="s3://b/c.tar.gz",
        reserved=(("sagemaker_program", '"train.py"'), ("sagemaker_submit_directory", '"s3://b/c.tar.gz"')),
        env=(("WANDB_MODE", "offline"),),
        output_path="s3://b/out",
        max_run=3600,
        network_isolation=False,
        checkpoint_s3="s3://b/ckpt",
    )


def test_model_trainers_entrypoint_and_code_channel_reach_the_containers_as_sagemaker_runs_them(
    tmp_path: Path,
) -> None:
    # SDK v3's ModelTrainer: its own entrypoint and arguments (no `train`), and its code in a channel named "code".
    algorithm = {**REQUEST["AlgorithmSpecification"], "ContainerEntrypoint": ["/bin/bash"]}
    algorithm["ContainerArguments"] = ["-c", "/opt/ml/input/data/sm_drivers/sm_train.sh"]
    code = {"ChannelName": "code", "DataSource": {"S3DataSource": {"S3Uri": "s3://b/code"}}}
    request = {**REQUEST, "AlgorithmSpecification": algorithm, "InputDataConfig": [*REQUEST["InputDataConfig"], code]}
    planned = plan_training(request)
    assert (planned.entrypoint, planned.arguments) == (
        ("/bin/bash",),
        ("-c", "/opt/ml/input/data/sm_drivers/sm_train.sh"),
    )
    job = local.LocalJob(
        image="bert:1",
        channels=(("train", tmp_path), ("code", tmp_path)),
        entrypoint=planned.entrypoint,
        arguments=planned.arguments,
        writable_channels=True,
    )
    [container] = local.plan_job(job, tmp_path / "run").containers
    assert (container.entrypoint, container.command) == (planned.entrypoint, planned.arguments)
    assert [(m.target, m.read_only) for m in container.mounts[1:]] == [
        ("/opt/ml/input/data/train", False),
        ("/opt/ml/input/data/code", False),
    ]
    # An entrypoint without arguments runs alone: `train` is the image's own entrypoint's argument.
    alone = local.plan_job(local.LocalJob(image="bert:1", entrypoint=("/run.sh",)), tmp_path / "alone").containers[0]
    assert (alone.entrypoint, alone.command) == (("/run.sh",), ())


@pytest.mark.parametrize(
    ("instance_type", "instances", "available", "wanted"),
    [
        ("ml.g5.12xlarge", 2, [str(i) for i in range(8)], "8"),  # 4 per host, as the type has
        ("ml.p4d.24xlarge", 2, [str(i) for i in range(8)], "8"),  # 8 per host wanted: what there is, evenly
        ("ml.g5.2xlarge", 3, ["0", "1"], None),  # fewer GPUs than hosts: CPU
        ("ml.g5.2xlarge", 2, [], None),  # a machine without GPUs
        ("ml.m5.xlarge", 2, ["0", "1"], None),  # a type without GPUs
    ],
)
def test_gpus_are_sliced_by_instance_type_from_what_this_machine_has(
    instance_type: str, instances: int, available: list[str], wanted: str | None
) -> None:
    resources = {"InstanceType": instance_type, "InstanceCount": instances, "VolumeSizeInGB": 50}
    assert gpu_request(plan_training({**REQUEST, "ResourceConfig": resources}), available) == wanted


def test_verbatim_values_reach_hyperparameters_json_unchanged() -> None:
    job = local.LocalJob(image="i", hyperparameters=(("layers", Verbatim("[1,2]")), ("name", Verbatim("plain text"))))
    files = dict(local.plan_job(job, Path("/run")).hosts[0].files)
    assert json.loads(files["input/config/hyperparameters.json"]) == {"layers": "[1,2]", "name": "plain text"}


def test_instance_groups_are_the_jobs_hosts_in_their_order() -> None:
    resources = {"InstanceGroups": [GROUP, {**GROUP, "InstanceGroupName": "data", "InstanceCount": 1}]}
    plan = plan_training({**REQUEST, "ResourceConfig": resources})
    assert (plan.instances, plan.instance_type) == (3, "")
    assigned = plan_training(
        {**REQUEST, "ResourceConfig": resources, "InputDataConfig": [channel("a", ["data"]), channel("b", ["train"])]}
    )
    assert assigned.channel_groups == (("a", ("data",)), ("b", ("train",)))
    assert [(g.name, g.instance_type, g.count) for g in plan.groups] == [
        ("train", "ml.m5.xlarge", 2),
        ("data", "ml.m5.xlarge", 1),
    ]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"TrainingJobName": "a_b"}, "Value 'a_b' at 'trainingJobName' failed to satisfy constraint"),
        ({"TrainingJobName": "a" * 64}, "at 'trainingJobName' failed to satisfy constraint"),
        ({"Environment": {"1BAD": "x"}}, "Value '1BAD' at 'environment' failed to satisfy constraint"),
        ({"HyperParameters": {"k": "v" * 2501}}, "Map values must have length less than or equal to 2500"),
        ({"ResourceConfig": {"InstanceType": "ml.m5.xlarge", "InstanceCount": 0}}, "at 'resourceConfig.instanceCount'"),
        ({"StoppingCondition": {"MaxRuntimeInSeconds": 30 * 24 * 3600}}, "stoppingCondition.maxRuntimeInSeconds"),
        ({"AlgorithmSpecification": {"AlgorithmName": "xgboost"}}, "AlgorithmSpecification.TrainingImage is required"),
        ({"EnableManagedSpotTraining": True}, "Invalid MaxWaitTimeInSeconds. It must be present and be greater"),
        (
            {
                "EnableManagedSpotTraining": True,
                "StoppingCondition": {"MaxRuntimeInSeconds": 60, "MaxWaitTimeInSeconds": 30},
            },
            "Invalid MaxWaitTimeInSeconds",
        ),
        ({"StoppingCondition": {"MaxWaitTimeInSeconds": 60}}, "MaxWaitTimeInSeconds is only valid with EnableManaged"),
        (
            {"ResourceConfig": {"InstanceType": "ml.m5.xlarge", "InstanceGroups": [GROUP]}},
            "InstanceType or InstanceCount cannot be specified with InstanceGroups",
        ),
        ({"ResourceConfig": {"InstanceGroups": [GROUP] * 6}}, "at 'resourceConfig.instanceGroups' failed to satisfy"),
        (
            {"ResourceConfig": {"InstanceGroups": [{**GROUP, "InstanceGroupName": "g" * 65}]}},
            "at 'resourceConfig.instanceGroups.1.member.instanceGroupName' failed to satisfy",
        ),
        (
            {"ResourceConfig": {"InstanceGroups": [GROUP], "KeepAlivePeriodInSeconds": 60}},
            "Warm pools are not supported for heterogeneous clusters",
        ),
        ({"ResourceConfig": {"InstanceGroups": [{**GROUP, "InstanceCount": 0}]}}, "at 'resourceConfig.instanceCount'"),
        ({"ResourceConfig": {"InstanceGroups": [GROUP, GROUP]}}, "InstanceGroupName must be unique"),
        (
            {"ResourceConfig": {"InstanceGroups": [GROUP]}, "InputDataConfig": [channel("a", ["train"]), channel("b")]},
            "Some channels have assigned instance groups: [a] while others not: [b]",
        ),
        (
            {"ResourceConfig": {"InstanceGroups": [GROUP]}, "InputDataConfig": [channel("a", ["gpu"])]},
            "Channel a names instance groups ['gpu'] that are not in ResourceConfig.InstanceGroups",
        ),
    ],
)
def test_what_sagemaker_refuses_is_refused_with_its_exception_and_wording(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ApiError) as caught:
        plan_training({**REQUEST, **change})
    assert caught.value.code == "ValidationException" and message in caught.value.message


def test_after_a_restart_a_running_job_is_failed_and_a_stop_of_it_is_refused_as_sagemaker_refuses(
    tmp_path: Path,
) -> None:
    from smimg.training_api.server import TrainingApi
    from tests.fakes import FakeEngine

    first = TrainingApi(tmp_path, FakeEngine(), "us-east-1")
    first.store.create(REQUEST)  # the server went before its run began
    restarted = TrainingApi(tmp_path, FakeEngine(), "us-east-1")
    job = restarted.call("DescribeTrainingJob", {"TrainingJobName": "bert-1"})
    assert (job["TrainingJobStatus"], job["FailureReason"]) == (
        "Failed",
        "the local SageMaker API stopped while the job ran",
    )
    assert [j["TrainingJobName"] for j in restarted.call("ListTrainingJobs", {})["TrainingJobSummaries"]] == ["bert-1"]
    with pytest.raises(ApiError) as caught:
        restarted.call("StopTrainingJob", {"TrainingJobName": "bert-1"})
    assert caught.value.code == "ValidationException" and "in status Failed" in caught.value.message


def test_update_training_job_records_what_it_changes_and_refuses_what_sagemaker_refuses(tmp_path: Path) -> None:
    from smimg.training_api.server import TrainingApi
    from tests.fakes import FakeEngine

    api = TrainingApi(tmp_path, FakeEngine(), "us-east-1")
    api.store.create(REQUEST)
    answer = api.call(
        "UpdateTrainingJob",
        {
            "TrainingJobName": "bert-1",
            "ResourceConfig": {"KeepAlivePeriodInSeconds": 600},
            "RemoteDebugConfig": {"EnableRemoteDebug": True},
        },
    )
    assert answer == {"TrainingJobArn": "arn:aws:sagemaker:us-east-1:123456789012:training-job/bert-1"}
    job = api.call("DescribeTrainingJob", {"TrainingJobName": "bert-1"})
    assert job["ResourceConfig"] == {**REQUEST["ResourceConfig"], "KeepAlivePeriodInSeconds": 600}
    assert job["RemoteDebugConfig"] == {"EnableRemoteDebug": True}
    with pytest.raises(ApiError, match="keepAlivePeriodInSeconds' failed to satisfy constraint"):
        api.call(
            "UpdateTrainingJob", {"TrainingJobName": "bert-1", "ResourceConfig": {"KeepAlivePeriodInSeconds": 21601}}
        )
    with pytest.raises(ApiError, match="Requested resource not found"):
        api.call("UpdateTrainingJob", {"TrainingJobName": "bert-2"})


def test_a_state_that_is_a_file_or_a_port_in_use_is_named_with_the_fix(tmp_path: Path) -> None:
    import socket

    from smimg.errors import LocalError
    from smimg.training_api.server import serve
    from tests.fakes import FakeEngine

    (tmp_path / "file").write_text("")
    with pytest.raises(LocalError, match=r"cannot keep jobs in --state .*/file: Not a directory") as caught:
        serve(tmp_path / "file", FakeEngine(), "127.0.0.1", 0, print)
    assert caught.value.hint == "pass a folder you can write"
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(LocalError, match=f"cannot listen on 127.0.0.1:{port}: Address already in use"):
            serve(tmp_path / "state", FakeEngine(), "127.0.0.1", port, print)


def test_a_warm_pool_is_kept_taken_over_by_a_matching_job_only_and_ends_when_its_keep_alive_has_passed(
    tmp_path: Path,
) -> None:
    from smimg.training_api import store as records
    from smimg.training_api.plan import warm_pool_differences
    from smimg.training_api.server import TrainingApi
    from tests.fakes import FakeEngine

    def job(name: str, keep: int, **resources: Any) -> dict[str, Any]:
        config = {**REQUEST["ResourceConfig"], "KeepAlivePeriodInSeconds": keep, **resources}
        return {**REQUEST, "TrainingJobName": name, "ResourceConfig": config}

    def pool(name: str) -> dict[str, Any] | None:
        return api.call("DescribeTrainingJob", {"TrainingJobName": name}).get("WarmPoolStatus")

    api = TrainingApi(tmp_path, FakeEngine(), "us-east-1")
    api.store.create(job("a", 600))
    assert pool("a") is None  # while it runs, it has no pool to offer
    api.store.finish("a", records.COMPLETED, "Completed")
    assert pool("a") == {"Status": "Available", "ResourceRetainedBillableTimeInSeconds": 0}
    # Another instance type, or no keep-alive of its own: a new cluster; the pool stays.
    assert warm_pool_differences(job("a", 600), job("b", 600, InstanceType="ml.g5.xlarge")) == [
        ("ResourceConfig.InstanceType", "ml.g5.2xlarge", "ml.g5.xlarge")
    ]
    api.store.create(job("b", 600, InstanceType="ml.g5.xlarge"))
    api.store.create({**job("c", 0), "ResourceConfig": REQUEST["ResourceConfig"]})
    assert pool("b") is None and pool("c") is None and pool("a")["Status"] == "Available"  # type: ignore[index]
    # A match, its hyperparameters and image changed (SageMaker does not match on them), takes the pool over.
    api.store.create({**job("d", 300), "HyperParameters": {}, "AlgorithmSpecification": {"TrainingImage": "x:2"}})
    assert pool("a")["Status"] == "Reused" and pool("a")["ReusedByJob"] == "d"  # type: ignore[index]
    assert pool("d") == {"Status": "InUse"}
    listed = api.call("ListTrainingJobs", {"WarmPoolStatusEquals": "InUse"})["TrainingJobSummaries"]
    assert [(j["TrainingJobName"], j["WarmPoolStatus"]["Status"]) for j in listed] == [("d", "InUse")]
    api.store.finish("d", records.FAILED, "Failed", "ExitCode 1")  # the job's own failure keeps the pool
    assert pool("d")["Status"] == "Available"  # type: ignore[index]
    api.store._jobs["d"]["TrainingEndTime"] -= 301  # its keep-alive has passed
    assert pool("d") == {"Status": "Terminated", "ResourceRetainedBillableTimeInSeconds": 300}
    # A keep-alive updated to 0 ends a pool at once; a spot job keeps none.
    api.store.finish("b", records.COMPLETED, "Completed")
    api.call("UpdateTrainingJob", {"TrainingJobName": "b", "ResourceConfig": {"KeepAlivePeriodInSeconds": 0}})
    assert pool("b")["Status"] == "Terminated"  # type: ignore[index]
    spot = {**job("e", 600), "EnableManagedSpotTraining": True}
    api.store.create(spot)
    api.store.finish("e", records.COMPLETED, "Completed")
    assert pool("e") is None


def test_every_limit_of_the_service_model_is_checked_as_the_service_words_it(tmp_path: Path) -> None:
    from smimg.adapters import service_model
    from smimg.training_api.server import TrainingApi
    from tests.fakes import FakeEngine

    assert service_model.violations("sagemaker", "CreateTrainingJob", REQUEST) == []
    bad = {
        **REQUEST,
        # Not refused here: the service adds instance types that an older botocore model does not list.
        "ResourceConfig": {**REQUEST["ResourceConfig"], "InstanceType": "ml.p9.96xlarge"},
        "Tags": [{"Key": "team#1", "Value": "nlp"}, {"Key": "k" * 129, "Value": "v"}],
        "StoppingCondition": {"MaxRuntimeInSeconds": 0},
    }
    assert service_model.violations("sagemaker", "CreateTrainingJob", bad) == [
        "Value 0 at 'stoppingCondition.maxRuntimeInSeconds' failed to satisfy constraint: Member must have value "
        "greater than or equal to 1",
        "Value 'team#1' at 'tags.1.member.key' failed to satisfy constraint: Member must satisfy regular expression "
        "pattern: ([\\p{L}\\p{Z}\\p{N}_.:/=+\\-@]*)",
        f"Value '{'k' * 129}' at 'tags.2.member.key' failed to satisfy constraint: Member must have length less than "
        "or equal to 128",
    ]
    # A newline is not "any character" (".*") to the service's Java patterns: a hyperparameter cannot hold one.
    assert service_model.violations("sagemaker", "CreateTrainingJob", {**REQUEST, "HyperParameters": {"a": "x\ny"}})
    # The local API answers it as SageMaker does, before any job exists.
    api = TrainingApi(tmp_path, FakeEngine(), "us-east-1")
    with pytest.raises(ApiError) as caught:
        api.call("CreateTrainingJob", bad)
    assert caught.value.code == "ValidationException"
    assert caught.value.message.startswith("3 validation errors detected: Value 0 at")
    assert api.call("ListTrainingJobs", {})["TrainingJobSummaries"] == []
