"""smimg against its baselines, side by side in one run: `make bench` writes bench/results.md.

1. build: a naive Dockerfile vs smimg, same base and project (cold, code-only edit, one more requirement)
2. start-up: smimg's entrypoint vs the DLC's sagemaker-training `train` vs torchrun typed by hand (1 and 2 nodes)
3. local job: `smimg local run` vs SageMaker SDK v2 local mode vs two `docker run` containers (2 x 2 gloo)
4. push: layers and bytes of a first push vs a push after a code-only edit, to a local registry

Every ratio needs its baseline to have run: a baseline that fails aborts the benchmark (no ratio against nothing).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from smimg import build
from smimg import ship as push
from smimg.adapters.docker_engine import default_engine
from smimg.build import standin
from smimg.spec import load_spec

ROOT = Path(__file__).resolve().parent.parent
JOB = ROOT / "tests" / "fixtures" / "job"
SCRATCH = Path(tempfile.mkdtemp(prefix="smimg-bench-"))
TRIVIAL = 'import time\nprint(f"USER-START={time.time()}", flush=True)\n'


class BaselineFailed(RuntimeError):
    pass


def timed(fn: Callable[[Any], object], arg: Any) -> float:
    started = time.monotonic()
    fn(arg)
    return time.monotonic() - started


def median(values: list[float]) -> float:
    return statistics.median(values)


def sh(argv: list[str], **kwargs: object) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]
    if proc.returncode != 0:
        raise BaselineFailed(f"{' '.join(argv[:4])} ... exited {proc.returncode}:\n{proc.stderr[-2000:]}")
    return str(proc.stdout)


# --- 1. build ---------------------------------------------------------------------------------------------------

NAIVE = """FROM {base}
COPY ca.pem /etc/ssl/certs/bench-ca.pem
ENV PIP_CERT=/etc/ssl/certs/bench-ca.pem
COPY . /code
RUN pip install -r /code/requirements.txt
WORKDIR /code
"""


def make_project(folder: Path, base: str) -> Path:
    (folder / "src").mkdir(parents=True, exist_ok=True)
    (folder / "src" / "train.py").write_text("print('v0')\n")
    (folder / "requirements.txt").write_text("tqdm==4.66.5\nsix==1.16.0\n")
    (folder / "smimg.yaml").write_text(
        f"name: smimg-bench/app\nbase: {{image: {base}}}\nrequirements: [requirements.txt]\n"
        "code: {source_dir: src, entry_point: train.py}\n"
    )
    ca = os.environ.get("PIP_CERT", "/etc/ssl/certs/ca-certificates.crt")
    shutil.copy(ca, folder / "ca.pem")
    (folder / "Dockerfile.naive").write_text(NAIVE.format(base=base))
    (folder / ".dockerignore").write_text("Dockerfile.naive\n")
    return folder


def naive_build(folder: Path) -> None:
    builder = default_engine().builder()
    argv = [
        *builder.build_argv(),
        "-f",
        str(folder / "Dockerfile.naive"),
        "-t",
        "smimg-bench/naive:latest",
        str(folder),
    ]
    sh(argv, env=builder.env())


def smimg_build(folder: Path) -> None:
    build.build(load_spec(folder), force=True)


def bench_build(base: str, repeats: int) -> dict[str, dict[str, float]]:
    rows: dict[str, dict[str, list[float]]] = {}
    for name, builder in (("naive Dockerfile", naive_build), ("smimg", smimg_build)):
        runs: dict[str, list[float]] = {"cold": [], "code-only edit": [], "one more requirement": []}
        for i in range(repeats):
            folder = make_project(SCRATCH / f"build-{name[:5]}-{i}", base)
            sh(["docker", "builder", "prune", "-af"])  # cold: no layer cache, no pip cache mount
            runs["cold"].append(timed(builder, folder))
            (folder / "src" / "train.py").write_text(f"print('v{i + 1}')\n")
            runs["code-only edit"].append(timed(builder, folder))
            with (folder / "requirements.txt").open("a") as f:
                f.write("idna==3.7\n")
            runs["one more requirement"].append(timed(builder, folder))
        rows[name] = runs
    return {name: {k: median(v) for k, v in runs.items()} for name, runs in rows.items()}


# --- 2. start-up ------------------------------------------------------------------------------------------------


def opt_ml_tree(folder: Path, host: str, hosts: list[str], hyperparameters: dict[str, str]) -> Path:
    base = folder / host
    config = base / "input" / "config"
    config.mkdir(parents=True)
    (base / "model").mkdir()
    (base / "output" / "data").mkdir(parents=True)
    (base / "code").mkdir()
    (base / "code" / "train.py").write_text(TRIVIAL)
    resource = {"current_host": host, "hosts": hosts, "network_interface_name": "eth0"}
    (config / "resourceconfig.json").write_text(json.dumps(resource))
    (config / "hyperparameters.json").write_text(json.dumps(hyperparameters))
    (config / "inputdataconfig.json").write_text("{}")
    return base


def run_nodes(image: str, nodes: int, mode: str, folder: Path) -> tuple[float, float]:
    """(seconds to the first user line, seconds to the end) over all nodes, from just before the containers start."""
    client = default_engine().sdk
    hosts = [f"algo-{i}" for i in range(1, nodes + 1)]
    network = client.networks.create(f"smimg-bench-{os.getpid()}-{time.monotonic_ns()}")
    containers = []
    try:
        for rank, host in enumerate(hosts):
            hp: dict[str, str] = {}
            entrypoint = None
            command: list[str] = ["train"]
            if mode == "dlc":
                hp = {
                    "sagemaker_program": '"train.py"',
                    "sagemaker_submit_directory": '"/opt/ml/code"',
                    "sagemaker_torch_distributed_enabled": "true",
                }
            elif mode == "floor":
                entrypoint = ["torchrun"]
                command = [
                    f"--nnodes={nodes}",
                    "--nproc_per_node=1",
                    f"--node_rank={rank}",
                    "--master_addr=algo-1",
                    "--master_port=7777",
                    "/opt/ml/code/train.py",
                ]
            elif mode == "smimg":
                hp = {"sagemaker_program": '"train.py"', "sagemaker_submit_directory": '"/opt/ml/code"'}
            tree = opt_ml_tree(folder / f"{mode}-{nodes}-{time.monotonic_ns()}", host, hosts, hp)
            containers.append(
                client.containers.create(
                    image,
                    command,
                    entrypoint=entrypoint,
                    hostname=host,
                    name=f"{network.name}-{host}",
                    volumes={str(tree): {"bind": "/opt/ml", "mode": "rw"}},
                    environment={"SMIMG_NPROC_PER_NODE": "1"},
                )
            )
            network.connect(containers[-1], aliases=[host])
        started_wall, started = time.time(), time.monotonic()
        for container in containers:
            container.start()
        codes = [container.wait(timeout=300)["StatusCode"] for container in containers]
        ended = time.monotonic() - started
        logs = [container.logs().decode() for container in containers]
        if any(codes):
            raise BaselineFailed(f"{mode} on {nodes} node(s) exited {codes}:\n{logs[0][-2000:]}")
        firsts = [float(m) for log in logs for m in re.findall(r"USER-START=([0-9.]+)", log)]
        if len(firsts) != nodes:
            raise BaselineFailed(f"{mode}: the user script did not start on every node:\n{logs[0][-2000:]}")
        return max(firsts) - started_wall, ended
    finally:
        for container in containers:
            container.remove(force=True)
        network.remove()


def bench_startup(image: str, standin_image: str, repeats: int) -> dict[str, dict[int, tuple[float, float]]]:
    results: dict[str, dict[int, tuple[float, float]]] = {}
    for mode, ref in (("floor", image), ("dlc", standin_image), ("smimg", image)):
        results[mode] = {}
        for nodes in (1, 2):
            runs = [run_nodes(ref, nodes, mode, SCRATCH / "startup") for _ in range(repeats)]
            results[mode][nodes] = (median([r[0] for r in runs]), median([r[1] for r in runs]))
    return results


# --- 3. local job -----------------------------------------------------------------------------------------------


def channel() -> Path:
    folder = SCRATCH / "channel"
    folder.mkdir(exist_ok=True)
    (folder / "data.txt").write_text("bench\n")
    return folder


SMIMG_CLI = str(Path(sys.executable).parent / "smimg")  # the console script a user types


def smimg_local(image: str, script_mode: bool) -> None:
    """`smimg local run` as typed: a fresh process, CLI start-up included."""
    code = ["--source-dir", str(JOB / "src"), "--entry-point", "train.py"] if script_mode else []
    name = f"bench-{time.monotonic_ns()}"
    out = SCRATCH / "out" / name
    sh([SMIMG_CLI, "local", "run", image, "-n", "2", "--input", f"train={channel()}", *code, "--job-name", name,
        "--output", str(out)])  # fmt: skip


def floor_local(image: str, script_mode: bool) -> None:
    """Two `docker run` containers on one network running torchrun directly, typed with the docker CLI: what a
    user would do by hand (no /opt/ml trees, no artifacts)."""
    network = f"smimg-bench-floor-{time.monotonic_ns()}"
    script = "/opt/ml/code/train.py" if script_mode else "/opt/smimg/code/train.py"
    mount = f"-v {JOB / 'src'}:/opt/ml/code:ro" if script_mode else ""
    runs = " ".join(
        f"docker run -d --name {network}-algo-{rank + 1} --hostname algo-{rank + 1} --network {network} "
        f"--network-alias algo-{rank + 1} -e SM_CURRENT_HOST=algo-{rank + 1} -e SM_MODEL_DIR=/tmp "
        f"-e SM_OUTPUT_DATA_DIR=/tmp {mount} --entrypoint torchrun {image} --nnodes=2 --nproc_per_node=2 "
        f"--node_rank={rank} --master_addr=algo-1 --master_port=7777 {script} >/dev/null;"
        for rank in range(2)
    )
    names = f"{network}-algo-1 {network}-algo-2"
    line = (
        f"docker network create {network} >/dev/null && {runs} codes=$(docker wait {names}); "
        f"docker rm {names} >/dev/null; docker network rm {network} >/dev/null; "
        '[ "$(echo $codes | tr -d " 0")" = "" ]'
    )
    sh(["bash", "-c", line])


def sdk_local(image: str) -> None:
    # A fresh interpreter per run, as a user's script would be; the SDK's own import time counts.
    code = f"""
import os, tempfile
from sagemaker.estimator import Estimator
from sagemaker.local import LocalSession
root = tempfile.mkdtemp(dir={str(SCRATCH)!r})
session = LocalSession()
session.config = {{"local": {{"local_code": True, "container_root": root}}}}
Estimator(image_uri={image!r}, role="arn:aws:iam::123456789012:role/bench", instance_count=2, instance_type="local",
          sagemaker_session=session, output_path="file://" + root + "/out").fit(
    {{"train": "file://{channel()}"}}, logs="None")
"""
    config = SCRATCH / "sagemaker-config.yaml"
    config.write_text("SchemaVersion: '1.0'\nSageMaker:\n  PythonSDK:\n    Modules:\n      TelemetryOptOut: true\n")
    env = dict(
        os.environ,
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_EC2_METADATA_DISABLED="true",
        SAGEMAKER_USER_CONFIG_OVERRIDE=str(config),
        SAGEMAKER_SUPPRESS_V2_WARNING="1",
    )
    env.pop("AWS_SESSION_TOKEN", None)
    try:
        sh([sys.executable, "-c", code], env=env)
    finally:
        client = default_engine().sdk
        for container in client.containers.list(all=True, filters={"ancestor": image}):
            container.remove(force=True)
        for network in client.networks.list(names=["sagemaker-local"]):
            network.remove()


def bench_local(image: str, repeats: int) -> dict[str, dict[str, float]]:
    """Each command as typed, in alternating pairs with its floor (so both see the same machine), medians."""
    results: dict[str, dict[str, float]] = {}
    for mode, script_mode in (("baked code", False), ("script mode (--source-dir)", True)):
        floor_local(image, script_mode)  # warm-up: page cache, compose binaries
        smimg_local(image, script_mode)
        floors, ours = [], []
        for _ in range(repeats):
            floors.append(timed(lambda m: floor_local(image, m), script_mode))
            ours.append(timed(lambda m: smimg_local(image, m), script_mode))
        results[mode] = {"floor": median(floors), "smimg local run": median(ours)}
    sdk = [timed(sdk_local, image) for _ in range(max(1, repeats // 2))]
    results["baked code"]["SDK v2 local mode"] = median(sdk)
    return results


# --- 5. the local SageMaker API ---------------------------------------------------------------------------------


def bench_api(image: str, repeats: int) -> dict[str, float]:
    """The same 2-host job through CreateTrainingJob (create -> DescribeTrainingJob says Completed, the server
    already running, as a user keeps it) and through `smimg local run` as typed, in alternating pairs."""
    import boto3

    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    server = subprocess.Popen(
        [SMIMG_CLI, "local", "api", "--port", "0", "--state", str(SCRATCH / "api")],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
    )  # fmt: skip
    try:
        assert server.stdout is not None
        endpoint = server.stdout.readline().strip().split("=", 1)[1]
        keys = {"region_name": "us-east-1", "aws_access_key_id": "a", "aws_secret_access_key": "b"}
        sm = boto3.client("sagemaker", endpoint_url=endpoint, **keys)
        s3 = boto3.client("s3", endpoint_url=endpoint, **keys)
        s3.create_bucket(Bucket="bench")
        s3.put_object(Bucket="bench", Key="train/data.txt", Body=b"bench\n")
        api_job(sm, image, "bench-api-warm-up")
        smimg_local(image, False)
        through_api, typed = [], []
        for i in range(repeats):
            through_api.append(timed(lambda n: api_job(sm, image, n), f"bench-api-{i}"))
            typed.append(timed(lambda m: smimg_local(image, m), False))
        return {"smimg local run": median(typed), "CreateTrainingJob -> Completed": median(through_api)}
    finally:
        server.terminate()  # as Ctrl-C (a background `make bench` ignores SIGINT, and so would the server)
        server.wait(timeout=120)


def api_job(sm: Any, image: str, name: str) -> None:
    sm.create_training_job(
        TrainingJobName=name,
        AlgorithmSpecification={"TrainingImage": image, "TrainingInputMode": "File"},
        RoleArn="arn:aws:iam::123456789012:role/bench",
        InputDataConfig=[
            {
                "ChannelName": "train",
                "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://bench/train"}},
            }
        ],
        OutputDataConfig={"S3OutputPath": "s3://bench/out"},
        ResourceConfig={"InstanceType": "ml.m5.xlarge", "InstanceCount": 2, "VolumeSizeInGB": 10},
        StoppingCondition={"MaxRuntimeInSeconds": 600},
    )
    while (status := sm.describe_training_job(TrainingJobName=name)["TrainingJobStatus"]) == "InProgress":
        time.sleep(0.1)
    if status != "Completed":
        raise BaselineFailed(f"the API job {name} ended {status}")


# --- 4. push ----------------------------------------------------------------------------------------------------


def bench_push(base: str) -> dict[str, push.PushResult]:
    sys.path.insert(0, str(ROOT))
    from tests.conftest import _start_registry

    (SCRATCH / "registry").mkdir()
    proc, registry = _start_registry(SCRATCH / "registry", None, None)
    try:
        folder = make_project(SCRATCH / "push", base)
        # Code of its own: the build section's images share the project's content tags, and reusing one built
        # without cache would give this image layers BuildKit's cache no longer holds (the edit then pushes them).
        (folder / "src" / "train.py").write_text("print('push')\n")
        loaded = load_spec(folder)
        first = push.push(push.prepare_push(build.build(loaded).tags[0], loaded.spec, registry_flag=registry.host))
        (folder / "src" / "train.py").write_text("print('push, edited')\n")
        loaded = load_spec(folder)
        second = push.push(push.prepare_push(build.build(loaded).tags[0], loaded.spec, registry_flag=registry.host))
        return {"first push": first, "after a code-only edit": second}
    finally:
        proc.terminate()


# --- report -----------------------------------------------------------------------------------------------------


def machine() -> str:
    cpus = os.cpu_count()
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    engine = default_engine().sdk.version()
    return (
        f"{platform.machine()}, {cpus} CPUs, {memory:.0f} GiB, {platform.system()} {platform.release()}; "
        f"Docker engine {engine['Version']}, builder {default_engine().builder().kind.value}; "
        f"compose {_compose_version()} (for SDK local mode); Python {platform.python_version()}"
    )


def _compose_version() -> str:
    proc = subprocess.run(["docker", "compose", "version", "--short"], capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else "not installed"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    # 9: a run-to-run spread of about 0.3 s on this 2-core machine made 5 pairs move the ratio by 0.02-0.03
    parser.add_argument("--local-repeats", type=int, default=9, help="alternating pairs per local-job row")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results.md")
    args = parser.parse_args()
    started = time.monotonic()
    base = standin.ensure_standin().ref
    image = build.build(load_spec(JOB)).tags[0]
    print("1/5 build ...", flush=True)
    builds = bench_build(base, args.repeats)
    print("2/5 start-up ...", flush=True)
    startup = bench_startup(image, base, args.repeats)
    print("3/5 local job ...", flush=True)
    jobs = bench_local(image, args.local_repeats)
    print("4/5 push ...", flush=True)
    pushes = bench_push(base)
    print("5/5 local API ...", flush=True)
    api = bench_api(image, args.repeats)

    naive, ours = builds["naive Dockerfile"], builds["smimg"]
    lines = [
        "# smimg benchmarks",
        "",
        f"Measured by `make bench` on {time.strftime('%Y-%m-%d')}: {machine()}.",
        f"Medians of {args.repeats} runs, all baselines measured in the same run; base image: the offline DLC "
        "stand-in (Debian + CPU torch 2.13.0 + transformers + sagemaker-training). Total time "
        f"{(time.monotonic() - started) / 60:.1f} min.",
        "",
        "## 1. Build: naive Dockerfile vs smimg (same base, same project: 2 requirements + a script)",
        "",
        "| build | naive (s) | smimg (s) | smimg / naive |",
        "|---|---:|---:|---:|",
        *(f"| {k} | {naive[k]:.1f} | {ours[k]:.1f} | {ours[k] / naive[k]:.2f}x |" for k in naive),
        "",
        "Target: code-only rebuild <= 0.1x naive. The naive Dockerfile copies the code before `pip install`, so "
        "every edit reinstalls the requirements; smimg installs requirements before the code and keeps pip's cache "
        "in a BuildKit cache mount.",
        "",
        "## 2. Start-up: container start -> first line of the user script, and -> job end (trivial script)",
        "",
        "| entrypoint | 1 node: first line (s) | 1 node: end (s) | 2 nodes: first line (s) | 2 nodes: end (s) |",
        "|---|---:|---:|---:|---:|",
    ]
    names = {
        "floor": "floor: `docker run --entrypoint torchrun` by hand",
        "dlc": "DLC `train` (sagemaker-training + sagemaker-pytorch-training, torch_distributed)",
        "smimg": "smimg entrypoint (`train`)",
    }
    for mode, row in startup.items():
        lines.append(f"| {names[mode]} | {row[1][0]:.2f} | {row[1][1]:.2f} | {row[2][0]:.2f} | {row[2][1]:.2f} |")
    gap = [startup["smimg"][n][i] - startup["floor"][n][i] for n in (1, 2) for i in (0, 1)]
    lines += [
        "",
        f"smimg minus floor: {', '.join(f'{g:+.2f}' for g in gap)} s (same column order). Target: within 0.3 s.",
        "",
        "## 3. Local 2-instance job (2 x 2 gloo processes, all_reduce, trivial script), the command as typed",
        "",
        "| code | floor (s) | smimg local run (s) | smimg / floor |",
        "|---|---:|---:|---:|",
        *(
            f"| {mode} | {row['floor']:.1f} | {row['smimg local run']:.1f} | "
            f"{row['smimg local run'] / row['floor']:.2f}x |"
            for mode, row in jobs.items()
        ),
        "",
        f"SageMaker SDK v2 local mode, same job with baked code: {jobs['baked code']['SDK v2 local mode']:.1f} s "
        f"({jobs['baked code']['SDK v2 local mode'] / jobs['baked code']['floor']:.2f}x).",
        "",
        "Target: smimg local run <= 1.10x the floor, both ways. Each command runs as a user types it, in a fresh "
        f"process (CLI start-up included), {args.local_repeats} alternating pairs per row. The floor is two "
        "`docker run --entrypoint torchrun` containers on one network, typed with the docker CLI (no /opt/ml trees, "
        "no artifacts); smimg also writes the /opt/ml trees, packages model.tar.gz and output.tar.gz and removes "
        "containers and network.",
        "",
        "## 4. Push to a local registry: first push vs after a code-only edit",
        "",
        "| push | layers uploaded | layers already there | bytes uploaded | seconds |",
        "|---|---:|---:|---:|---:|",
        *(
            f"| {k} | {r.layers_pushed} | {r.layers_existing} | {r.bytes_pushed:,} | {r.seconds:.1f} |"
            for k, r in pushes.items()
        ),
        "",
        "## 5. The local SageMaker API: the same 2-host job (baked code) through CreateTrainingJob",
        "",
        "| run | seconds |",
        "|---|---:|",
        *(f"| {k} | {v:.1f} |" for k, v in api.items()),
        "",
        f"The API's cost: {api['CreateTrainingJob -> Completed'] - api['smimg local run']:+.1f} s (target: about "
        "1 s or less). Through the API: create_training_job until DescribeTrainingJob (polled every 0.1 s) says "
        "Completed, the server already running; it also downloads the channel from S3, sends each host's lines to "
        f"CloudWatch Logs and uploads model.tar.gz and output.tar.gz. {args.repeats} alternating pairs.",
        "",
    ]
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))
    shutil.rmtree(SCRATCH, ignore_errors=True)


if __name__ == "__main__":
    main()
