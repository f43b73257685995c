"""`smimg push`: the ECR control plane against moto, the data plane against a real registry with htpasswd."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from smimg import build, ship
from smimg.adapters import aws, registry
from smimg.adapters.docker_engine import default_engine
from smimg.engine import Image
from smimg.errors import AwsError
from smimg.refs import ecr_registry
from smimg.ship import repository
from smimg.spec import PushSpec, load_spec
from smimg_entrypoint.contract import LABEL_CONTENT_HASH as CONTENT_HASH_LABEL
from tests.conftest import Moto, Registry, smimg_cli

FAKE_ID = "sha256:" + "ab" * 32


def ecr_target(name: str) -> ship.PushTarget:
    return ship.PushTarget(
        registry=ecr_registry("123456789012", "us-east-1"),
        repository=name,
    )


@pytest.mark.aws
def test_repository_created_with_governance_then_left_unchanged(aws_env: Moto) -> None:
    client = aws.client("ecr", "us-east-1")
    settings = ship.plan.repository_settings("team/trainer", PushSpec(mutable_tags=("latest",)))
    first = repository.ensure_repository(client, settings)
    assert first.created
    repo = client.describe_repositories(repositoryNames=["team/trainer"])["repositories"][0]
    assert repo["imageTagMutability"] == "IMMUTABLE_WITH_EXCLUSION"
    assert repo["imageTagMutabilityExclusionFilters"] == [{"filterType": "WILDCARD", "filter": "latest"}]
    assert repo["imageScanningConfiguration"] == {"scanOnPush": True}
    assert repo["encryptionConfiguration"]["encryptionType"] == "AES256"
    policy = json.loads(client.get_lifecycle_policy(repositoryName="team/trainer")["lifecyclePolicyText"])
    assert [r["selection"]["tagStatus"] for r in policy["rules"]] == ["untagged", "any"]
    assert policy["rules"][0]["selection"]["countNumber"] == 7
    assert policy["rules"][1]["selection"]["countNumber"] == 50

    second = repository.ensure_repository(client, settings)
    assert (second.created, second.changed, second.differs) == (False, (), ())


@pytest.mark.aws
def test_existing_repository_left_alone_unless_update(aws_env: Moto) -> None:
    client = aws.client("ecr", "us-east-1")
    client.create_repository(repositoryName="legacy", imageTagMutability="MUTABLE")
    settings = ship.plan.repository_settings("legacy", PushSpec(lifecycle={"enabled": False}))  # type: ignore[arg-type]
    report = repository.ensure_repository(client, settings)
    assert report.changed == ()
    assert any(d.startswith("tag mutability MUTABLE") for d in report.differs), report.differs
    assert any(d.startswith("scan on push False") for d in report.differs), report.differs
    assert client.describe_repositories(repositoryNames=["legacy"])["repositories"][0]["imageTagMutability"] == (
        "MUTABLE"
    )
    updated = repository.ensure_repository(client, settings, update=True)
    assert len(updated.changed) == 2, updated
    repo = client.describe_repositories(repositoryNames=["legacy"])["repositories"][0]
    assert (repo["imageTagMutability"], repo["imageScanningConfiguration"]["scanOnPush"]) == ("IMMUTABLE", True)
    assert "LifecyclePolicyNotFoundException" in _lifecycle_error(client, "legacy")


def _lifecycle_error(client: object, name: str) -> str:
    try:
        client.get_lifecycle_policy(repositoryName=name)  # type: ignore[attr-defined]
    except Exception as exc:  # botocore builds its error classes at run time
        return type(exc).__name__
    return "a policy exists"


@pytest.mark.aws
def test_content_tag_already_in_ecr_skips_upload_and_prints_pinned_uri(aws_env: Moto) -> None:
    target = ship.resolve_target(None, "smimg-test/skip:abc", region="us-east-1", repository="skip")
    assert target == ecr_target("skip")
    labels = {CONTENT_HASH_LABEL: "c0ffee" * 8}
    attrs = {"Id": FAKE_ID, "Os": "linux", "Architecture": "amd64", "Config": {"Labels": labels}}
    plan = ship.plan_push(
        source="smimg-test/skip:abc", image=Image.from_inspect(attrs), target=target, push_spec=PushSpec()
    )
    client = aws.client("ecr", "us-east-1")
    repository.ensure_repository(client, ship.plan.repository_settings("skip", PushSpec()))
    manifest = {
        "schemaVersion": 2,
        "mediaType": registry.DOCKER_MANIFEST,
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": 2, "digest": FAKE_ID},
        "layers": [],
    }
    client.put_image(
        repositoryName="skip",
        imageManifest=json.dumps(manifest),
        imageManifestMediaType=registry.DOCKER_MANIFEST,
        imageTag="c0ffeec0ffee",
    )
    digest = client.describe_images(repositoryName="skip")["imageDetails"][0]["imageDigest"]

    # No Docker call is made: the registry already holds the content tag, so nothing is tagged or uploaded.
    result = ship.push(plan)

    assert result.skipped and (result.layers_pushed, result.bytes_pushed) == (0, 0)
    assert result.uri == f"123456789012.dkr.ecr.us-east-1.amazonaws.com/skip@{digest}"
    assert result.repository is not None and not result.repository.created
    for code in result.snippets().values():
        compile(code, "snippet", "exec")
        assert f'"{result.uri}"' in code


@pytest.mark.aws
def test_missing_credentials_name_the_fix(aws_env: Moto, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(var)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    with pytest.raises(AwsError) as caught:
        ship.resolve_target(None, "smimg-test/x:1", region="us-east-1")
    assert caught.value.message.startswith("no AWS credentials to find your AWS account")
    assert "aws configure" in caught.value.hint


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, standin_image: str) -> Path:
    root = tmp_path_factory.mktemp("push-project")
    (root / "src").mkdir()
    (root / "src" / "train.py").write_text("print('v1')\n")
    (root / "smimg.yaml").write_text(
        f"name: smimg-test/push\nbase: {{image: {standin_image}}}\ncode: {{source_dir: src, entry_point: train.py}}\n"
    )
    return root


@pytest.fixture(scope="module")
def first(project: Path, registry: Registry) -> tuple[build.BuildResult, ship.PushResult]:
    loaded = load_spec(project)
    # Built, not reused: the code-only test needs this build's layer cache (see test_build's first_build).
    built = build.build(loaded, force=True)
    plan = ship.prepare_push(built.tags[0], loaded.spec, registry_flag=f"{registry.host}/team")
    return built, ship.push(plan, username=registry.username, password=registry.password)


@pytest.mark.registry
def test_first_push_is_a_docker_v2_manifest_of_the_local_image(
    first: tuple[build.BuildResult, ship.PushResult],
) -> None:
    _, result = first
    assert not result.skipped
    assert result.media_type == registry.DOCKER_MANIFEST
    assert result.uri.split("@")[0].endswith("/team/smimg-test/push")
    assert result.layers_pushed >= 3 and result.bytes_pushed > 100_000_000, result


@pytest.mark.registry
def test_code_only_rebuild_uploads_one_layer(
    first: tuple[build.BuildResult, ship.PushResult], project: Path, registry: Registry, tmp_path: Path
) -> None:
    edited = tmp_path / "edited"
    subprocess.run(["cp", "-r", str(project), str(edited)], check=True)
    (edited / "src" / "train.py").write_text("print('v2')\n")
    loaded = load_spec(edited)
    built = build.build(loaded, force=True)  # built on first's layers, not an image of this content an earlier run left
    plan = ship.prepare_push(built.tags[0], loaded.spec, registry_flag=f"{registry.host}/team")
    result = ship.push(plan, username=registry.username, password=registry.password)
    assert (result.layers_pushed, result.layers_existing) == (1, first[1].layers_pushed + first[1].layers_existing - 1)
    assert result.bytes_pushed < 10_000, result


@pytest.mark.registry
def test_cli_skips_what_is_there_then_pull_by_digest_gives_the_same_image(
    first: tuple[build.BuildResult, ship.PushResult], registry: Registry
) -> None:
    built, pushed = first
    cli = smimg_cli(
        "push",
        built.tags[0],
        "--registry",
        f"{registry.host}/team",
        "--username",
        "smimg",
        "--password-stdin",
        "--json",
        stdin=f"{registry.password}\n",
    )
    assert cli.returncode == 0, cli.stderr
    data = json.loads(cli.stdout)
    assert (data["skipped"], data["uri"]) == (True, pushed.uri), cli.stderr

    default_engine().sdk.images.remove(built.image_id, force=True)
    assert default_engine().image(built.image_id) is None
    auth = {"username": "smimg", "password": str(registry.password), "serveraddress": registry.host}
    default_engine().pull(pushed.uri, auth, "linux/amd64")
    assert default_engine().image(pushed.uri).id == built.image_id  # type: ignore[union-attr]


@pytest.mark.registry
def test_wrong_password_fails_with_the_auth_message(registry: Registry, standin_image: str) -> None:
    default_engine().tag(standin_image, "smimg-test/auth:probe")
    cli = smimg_cli(
        "push",
        "smimg-test/auth:probe",
        "--registry",
        f"{registry.host}/team",
        "--username",
        "smimg",
        "--password-stdin",
        stdin="wrong\n",
    )
    assert cli.returncode == 1
    assert f"registry {registry.host} refused the credentials for team/smimg-test/auth" in cli.stderr, cli.stderr
    assert "--password-stdin" in cli.stderr
