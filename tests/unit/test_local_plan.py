"""plan_job: the run folder and compose project of a local job, compared whole."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from smimg import local
from smimg.engine import ContainerSpec, Mount
from smimg.errors import LocalError
from smimg.local import job as local_job

RUN = Path("/runs/job-1")
BIND = {"propagation": "rprivate"}


def test_two_gpu_hosts_with_a_channel_code_and_hyperparameters() -> None:
    job = local.LocalJob(
        image="smimg-test/job:abc",
        instances=2,
        channels=(("train", Path("/data/train")),),
        hyperparameters=(("epochs", 3), ("name", "bert; rm -rf /")),
        source_dir=Path("/src"),
        entry_point="train.py",
        gpus="all",
        env=(("WANDB_MODE", "offline"),),
        name="Job-1",
    )
    plan = local.plan_job(job, RUN, available_gpus=["0", "1", "2", "3"])
    assert plan.project == "job-1"
    assert plan.containers[1] == ContainerSpec(
        name="job-1-algo-2",
        image="smimg-test/job:abc",
        hostname="algo-2",
        network="job-1",
        aliases=("algo-2",),
        command=("train",),
        environment=(("TRAINING_JOB_NAME", "Job-1"), ("WANDB_MODE", "offline")),
        labels=(("dev.smimg.job", "job-1"),),
        mounts=(
            Mount("/runs/job-1/algo-2", "/opt/ml", read_only=False),
            Mount("/data/train", "/opt/ml/input/data/train"),
            Mount("/src", "/opt/ml/code"),
        ),
        shm_size="8g",
        gpu_ids=("2", "3"),
    )
    assert not plan.internal
    # The same containers as a compose file, to read or run by hand.
    compose = yaml.safe_load(plan.compose_yaml())
    assert compose["networks"] == {"default": {"name": "job-1", "labels": {"dev.smimg.job": "job-1"}}}
    assert compose["services"]["algo-2"] == {
        "image": "smimg-test/job:abc",
        "container_name": "job-1-algo-2",
        "hostname": "algo-2",
        "command": ["train"],
        "shm_size": "8g",
        "environment": {"TRAINING_JOB_NAME": "Job-1", "WANDB_MODE": "offline"},
        "labels": {"dev.smimg.job": "job-1"},
        "volumes": [
            {"type": "bind", "source": "/runs/job-1/algo-2", "target": "/opt/ml", "read_only": False, "bind": BIND},
            {
                "type": "bind",
                "source": "/data/train",
                "target": "/opt/ml/input/data/train",
                "read_only": True,
                "bind": BIND,
            },
            {"type": "bind", "source": "/src", "target": "/opt/ml/code", "read_only": True, "bind": BIND},
        ],
        "networks": {"default": {"aliases": ["algo-2"]}},
        "deploy": {
            "resources": {
                "reservations": {"devices": [{"driver": "nvidia", "device_ids": ["2", "3"], "capabilities": ["gpu"]}]}
            }
        },
    }
    host = plan.hosts[1]
    assert host.dirs == ("model", "output/data", "checkpoints", "input/data/train")
    files = {path: json.loads(text) for path, text in host.files}
    assert files == {
        "input/config/resourceconfig.json": {
            "current_host": "algo-2",
            "current_group_name": "homogeneousCluster",
            "current_instance_type": "local_gpu",
            "hosts": ["algo-1", "algo-2"],
            "instance_groups": [
                {"instance_group_name": "homogeneousCluster", "instance_type": "local", "hosts": ["algo-1", "algo-2"]}
            ],
            "network_interface_name": "eth0",
        },
        # JSON-encoded values, as the SDK sends them; script mode points at the mounted code.
        "input/config/hyperparameters.json": {
            "epochs": "3",
            "name": '"bert; rm -rf /"',
            "sagemaker_program": '"train.py"',
            "sagemaker_submit_directory": '"/opt/ml/code"',
        },
        "input/config/inputdataconfig.json": {
            "train": {"TrainingInputMode": "File", "S3DistributionType": "FullyReplicated", "RecordWrapperType": "None"}
        },
    }


@pytest.mark.parametrize(
    ("gpus", "instances", "available", "message"),
    [
        ("all", 2, [], "asks for all GPUs but this machine has 0"),
        ("3", 2, ["0", "1", "2", "3"], "3 GPUs do not split evenly over 2 instances"),
        ("8", 1, ["0"], "asks for 8 GPUs but this machine has 1"),
        ("two", 1, ["0"], "--gpus 'two' is not valid"),
    ],
)
def test_gpu_requests_that_cannot_be_met(gpus: str, instances: int, available: list[str], message: str) -> None:
    job = local.LocalJob(image="i", instances=instances, gpus=gpus)
    with pytest.raises(LocalError, match=message):
        local.plan_job(job, RUN, available)


def test_hosts_are_listed_as_sagemaker_lists_them_and_every_host_agrees_on_its_rank() -> None:
    from smimg_entrypoint.cluster import parse_cluster
    from smimg_entrypoint.plan import plan_topology

    plan = local.plan_job(local.LocalJob(image="i", instances=11, name="eleven"), RUN)
    configs = [json.loads(dict(host.files)["input/config/resourceconfig.json"]) for host in plan.hosts]
    numeric = [f"algo-{i}" for i in range(1, 12)]
    assert configs[0]["hosts"] == ["algo-1", "algo-10", "algo-11", *numeric[1:9]]
    assert configs[0]["instance_groups"][0]["hosts"] == numeric
    topologies = [plan_topology(parse_cluster(config, {}, {}), {}, None) for config in configs]
    assert {t.master_host for t in topologies} == {"algo-1"}
    assert sorted(t.node_rank for t in topologies) == list(range(11))


def test_instance_groups_number_hosts_in_their_order_and_each_host_knows_its_group() -> None:
    from smimg_entrypoint.cluster import parse_cluster
    from smimg_entrypoint.plan import plan_topology

    groups = (local.InstanceGroup("train", "ml.g5.2xlarge", 2), local.InstanceGroup("data", "ml.c5.xlarge", 1))
    plan = local.plan_job(local.LocalJob(image="i", instances=3, groups=groups, name="hetero"), RUN)
    configs = [json.loads(dict(host.files)["input/config/resourceconfig.json"]) for host in plan.hosts]
    assert configs[2] == {
        "current_host": "algo-3",
        "current_group_name": "data",
        "current_instance_type": "ml.c5.xlarge",
        "hosts": ["algo-1", "algo-2", "algo-3"],
        "instance_groups": [
            {"instance_group_name": "train", "instance_type": "ml.g5.2xlarge", "hosts": ["algo-1", "algo-2"]},
            {"instance_group_name": "data", "instance_type": "ml.c5.xlarge", "hosts": ["algo-3"]},
        ],
        "network_interface_name": "eth0",
    }
    # Named as the distribution group, train's hosts are one world; data's host runs alone.
    named = {"sagemaker_distribution_instance_groups": ["train"]}
    topologies = [plan_topology(parse_cluster(config, {}, {}), named, None) for config in configs]
    assert [(t.hosts, t.distributed) for t in topologies] == [
        (("algo-1", "algo-2"), True),
        (("algo-1", "algo-2"), True),
        (("algo-3",), False),
    ]
    with pytest.raises(LocalError, match="the instance groups hold 3 instances, not 2"):
        local.plan_job(local.LocalJob(image="i", instances=2, groups=groups), RUN)


def test_a_channel_assigned_to_an_instance_group_reaches_only_that_groups_hosts(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    groups = (local.InstanceGroup("train", "ml.g5.2xlarge", 1), local.InstanceGroup("data", "ml.c5.xlarge", 1))
    job = local.LocalJob(
        image="i",
        instances=2,
        groups=groups,
        channels=(("raw", tmp_path / "data"),),
        channel_groups=(("raw", ("data",)),),
    )
    plan = local.plan_job(job, RUN)
    configs = [json.loads(dict(host.files)["input/config/inputdataconfig.json"]) for host in plan.hosts]
    assert [list(config) for config in configs] == [[], ["raw"]]
    assert [[m.target for m in c.mounts if "/input/data/" in m.target] for c in plan.containers] == [
        [],
        ["/opt/ml/input/data/raw"],
    ]
    assert [[d for d in host.dirs if "input/data" in d] for host in plan.hosts] == [[], ["input/data/raw"]]


@pytest.mark.parametrize(
    ("groups", "message"),
    [
        (["train=ml.g5.2xlarge"], "--instance-group 'train=ml.g5.2xlarge' is not NAME=TYPE:COUNT"),
        (["=ml.g5.2xlarge:1"], "is not NAME=TYPE:COUNT"),
        (["a=ml.g5.2xlarge:1", "a=ml.c5.xlarge:1"], r"--instance-group names \['a', 'a'\] repeat one"),
        ([f"g{i}=ml.c5.xlarge:1" for i in range(6)], "6 instance groups"),
        (["a=ml.g5.2xlarge:0"], "the instance groups hold no instance"),
    ],
)
def test_malformed_instance_groups_are_named(groups: list[str], message: str) -> None:
    with pytest.raises(LocalError, match=message):
        local.make_job("i", instance_groups=groups)


@pytest.mark.parametrize(
    ("assigned", "message"),
    [
        (["a=data"], "channels b name no instance groups while a do"),
        (["a=gpu", "b=data"], "--input-group a=gpu: gpu is not one of the job's instance groups"),
        (["c=data"], "--input-group 'c=data' does not name one of the job's channels"),
        (["a="], "--input-group 'a=' does not name one of the job's channels"),
        (["a=data", "a=data", "b=data"], "--input-group a=data repeats a channel or a group"),
        (["a=data,data", "b=data"], "--input-group a=data,data repeats a channel or a group"),
    ],
)
def test_channels_assigned_to_instance_groups_are_checked(tmp_path: Path, assigned: list[str], message: str) -> None:
    inputs = [f"a={tmp_path}", f"b={tmp_path}"]
    with pytest.raises(LocalError, match=message):
        local.make_job("i", instance_groups=["data=ml.c5.xlarge:1"], inputs=inputs, input_groups=assigned)


def test_bad_inputs_are_named() -> None:
    with pytest.raises(LocalError, match="--instances 0 is not a valid instance count"):
        local.plan_job(local.LocalJob(image="i", instances=0), RUN)
    with pytest.raises(LocalError, match="channel name 'tr ain' is not valid"):
        local.plan_job(local.LocalJob(image="i", channels=(("tr ain", Path("/d")),)), RUN)
    with pytest.raises(LocalError, match="--hp 'epochs' is not KEY=VALUE"):
        local_job.parse_pairs(["epochs"], "--hp")


def test_hyperparameter_values_and_file(tmp_path: Path) -> None:
    (tmp_path / "hp.json").write_text('{"lr": 0.1, "epochs": 1}')
    loaded = local.load_hyperparameters(tmp_path / "hp.json", [("epochs", "3"), ("fp16", "true"), ("tag", "v1")])
    assert loaded == (("epochs", 3), ("fp16", True), ("lr", 0.1), ("tag", "v1"))
    (tmp_path / "bad.json").write_text("[1]")
    with pytest.raises(LocalError, match="holds no JSON object"):
        local.load_hyperparameters(tmp_path / "bad.json", [])


def test_network_isolation_is_an_internal_network_with_a_resolver_that_fails_fast(tmp_path: Path) -> None:
    job = local.LocalJob(image="job:1", instances=2, name="iso", conditions=local.Conditions(network_isolation=True))
    plan = local.plan_job(job, tmp_path / "run")
    assert plan.internal
    network = {"name": "iso", "internal": True, "labels": {"dev.smimg.job": "iso"}}
    assert yaml.safe_load(plan.compose_yaml())["networks"]["default"] == network
    for container in plan.containers:
        assert container.mounts[-1] == Mount(str(tmp_path / "run" / "resolv.conf"), "/etc/resolv.conf")
    assert plan.files == (("resolv.conf", "nameserver 127.0.0.11\noptions ndots:0 timeout:1 attempts:1\n"),)
    plain = local.plan_job(local.LocalJob(image="job:1", name="plain"), tmp_path / "plain")
    assert not plain.internal and plain.files == ()


def test_a_checkpoint_location_writes_checkpointconfig_as_sagemaker_does(tmp_path: Path) -> None:
    conditions = local.Conditions(checkpoints=tmp_path / "ckpt")
    plan = local.plan_job(local.LocalJob(image="job:1", name="ck", conditions=conditions), tmp_path / "run")
    files = dict(plan.hosts[0].files)
    assert json.loads(files["input/config/checkpointconfig.json"]) == {
        "LocalPath": "/opt/ml/checkpoints",
        "S3Uri": (tmp_path / "ckpt").as_uri(),
    }


@pytest.mark.parametrize(
    ("conditions", "message"),
    [
        (local.Conditions(max_run=0), "--max-run 0 is not a positive number of seconds"),
        (local.Conditions(stop_grace=-1), "--stop-grace -1 is not a positive number of seconds"),
        (local.Conditions(max_run=10, spot_interrupt_after=10), "--spot-interrupt-after 10 is not before --max-run 10"),
    ],
)
def test_rehearsal_settings_are_checked(conditions: local.Conditions, message: str) -> None:
    with pytest.raises(LocalError, match=message):
        local.make_job("job:1", conditions=conditions)


def test_a_checkpoint_location_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(LocalError, match="is a file"):
        local.make_job("job:1", conditions=local.Conditions(checkpoints=tmp_path / "file"))


def test_an_s3_checkpoint_location_is_named_in_checkpointconfig_and_copied_through_a_folder_of_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    folder, uri = local.checkpoints_option("s3://my-bucket/jobs/ckpt")
    assert (folder, uri) == (None, "s3://my-bucket/jobs/ckpt")
    assert local.checkpoints_option("./ckpt") == (Path("ckpt"), None)
    conditions = local_job.check_conditions(local.Conditions(checkpoints_s3=uri), "ck")
    assert conditions.checkpoints is not None and conditions.checkpoints.parent == tmp_path / "cache/smimg/checkpoints"
    assert conditions.checkpoint_location == uri
    plan = local.plan_job(local.LocalJob(image="job:1", name="ck", conditions=conditions), tmp_path / "run")
    assert json.loads(dict(plan.hosts[0].files)["input/config/checkpointconfig.json"])["S3Uri"] == uri


@pytest.mark.parametrize("uri", ["s3://", "s3:///prefix", "s3://Bad_Bucket/x"])
def test_a_malformed_s3_checkpoint_location_is_named(uri: str) -> None:
    with pytest.raises(LocalError, match=f"--checkpoints {uri} is not an S3 URI") as caught:
        local_job.check_conditions(local.Conditions(checkpoints_s3=uri), "ck")
    assert caught.value.hint == "pass s3://BUCKET/PREFIX (or a local folder)"
