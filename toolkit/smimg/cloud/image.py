"""The training image of a launch, checked as SageMaker will pull it, and pinned to the digest that was checked.

SageMaker pulls from ECR in the job's region only, and refuses an image index (what a multi-platform or
attestation-carrying build pushes) as well as an image for another platform: each of these fails the job only
after its instances have started. Pinning the tag to its digest makes the job run exactly the image checked here,
however the tag moves afterwards.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from smimg.adapters import aws, ecr, registry
from smimg.engine import Engine
from smimg.errors import AwsError, LaunchError, SmimgError
from smimg.refs import ImageRef

if TYPE_CHECKING:
    from smimg.ship import PushPlan
    from smimg.spec import LoadedSpec

PLATFORM = ("linux", "amd64")  # SageMaker's training instances


@dataclass(frozen=True)
class ChosenImage:
    """The launch's image before anything is read from ECR or pushed."""

    uri: str  # an ECR URI as given, or the push target of a local image (its content tag)
    push: PushPlan | None = None  # a local image's push


def choose_image(image: str | None, spec: LoadedSpec | None, region: str, engine: Engine | None = None) -> ChosenImage:
    """``image`` when it is an ECR URI; else a local image, default the one the spec builds now, to be pushed to
    ECR as `smimg push` would (to the spec's repository). Nothing is read from ECR or pushed (``--dry-run`` prints
    this URI).

    Raises:
        LaunchError: no image and no spec, or the spec pushes elsewhere than ECR.
        ImageNotFound, AwsError: no such local image, no account for the push target.
    """
    if image is not None and ImageRef.parse(image).ecr is not None:
        return ChosenImage(image)
    from smimg import build, ship  # loaded only when a local image is to be pushed

    if image is None:
        if spec is None:
            raise LaunchError("no image to launch", "pass an image, or run where smimg.yaml is (or --spec PATH)")
        image = build.current_tag(spec, engine)
    plan = ship.prepare_push(image, spec.spec if spec else None, region=region, engine=engine)
    if plan.target.region is None:
        raise LaunchError(
            f"the spec pushes to {plan.target.registry}, not ECR: SageMaker trains only from ECR",
            "remove push.registry from smimg.yaml, or push to ECR and pass the image's URI",
        )
    return ChosenImage(plan.target.ref(plan.content_tag), plan)


def ship_image(chosen: ChosenImage, region: str, say: Callable[[str], None], engine: Engine | None = None) -> str:
    """The chosen image's URI pinned to its digest: a local one pushed first (skipped when ECR holds it, and
    checked by the push), an ECR one checked (``pin_image``).

    Raises:
        LaunchError, PushError, RegistryAuthError, AwsError: the image cannot be launched as it is, or the push
            failed.
    """
    if chosen.push is None:
        return pin_image(chosen.uri, region, say, engine or _local_engine())
    from smimg import ship

    say(f"smimg: pushing {chosen.push.source} to {chosen.uri} (skipped if ECR holds it)")
    return ship.push(chosen.push, engine=engine, on_line=lambda line: say(f"smimg: {line}")).uri


def pin_image(uri: str, region: str, say: Callable[[str], None], engine: Engine | None = None) -> str:
    """``uri`` as ``REGISTRY/REPOSITORY@DIGEST``, once ECR shows it holds one Docker v2 manifest for linux/amd64.

    ``engine``: where to read the image's platform when the image is on this machine (ECR's API gives manifests,
    not image configs).

    Raises:
        LaunchError: not in ECR, in another region, no such tag or digest, an index or a foreign manifest, or an
            image for another platform.
        AwsError: ECR could not be read (credentials, permissions).
    """
    ref = ImageRef.parse(uri)
    location = ref.ecr
    if location is None:
        raise LaunchError(
            f"{uri} is not an image in ECR: SageMaker trains only from ECR",
            "push it first (`smimg push` prints its URI), or leave the image out to push the spec's",
        )
    account, _ = location
    check_region(uri, region)
    client = aws.client("ecr", region)
    try:
        digest = ref.digest or _digest_of_tag(client, account, ref)
        found = ecr.manifest(client, ref.path, digest, registry.MANIFEST_TYPES, registry_id=account)
        if found is None:
            raise LaunchError(f"{ref.repository}@{digest} is not in ECR", "push it (`smimg push`) and launch its URI")
    except (LaunchError, AwsError) as exc:
        raise _other_account(exc, account, region) from None
    media_type, body = found
    _check_manifest(uri, media_type, body)
    _check_platform(uri, str((body.get("config") or {}).get("digest", "")), engine)
    pinned = f"{ref.repository}@{digest}"
    if ref.digest is None:
        say(f"smimg: {uri} is {digest}: the job runs that image, however the tag moves")
    return pinned


def _other_account(exc: LaunchError | AwsError, account: str, region: str) -> LaunchError | AwsError:
    """A failed read of an image in another account's ECR, with what SageMaker would need to pull it there: that
    repository's policy letting the job's account pull. Any other failure as it was."""
    try:
        mine = aws.account_id(region)
    except AwsError:
        return exc
    if mine == account:
        return exc
    return type(exc)(
        exc.message,
        f"the image is in account {account}'s ECR and the job runs in {mine}: SageMaker pulls it only if that "
        f"repository's policy lets account {mine} pull (ecr:BatchGetImage, ecr:GetDownloadUrlForLayer); or push "
        "the image to this account (`smimg push`)",
    )


def _digest_of_tag(client: Any, account: str, ref: ImageRef) -> str:
    tag = ref.tag_or_latest
    digest = ecr.image_digest(client, ref.path, tag, registry_id=account)
    if digest is None:
        raise LaunchError(
            f"{ref.repository}:{tag} is not in ECR: SageMaker could not pull it",
            f"push it first (`smimg push`), or check the tag (`aws ecr describe-images --repository-name {ref.path}`)",
        )
    return digest


def _check_manifest(uri: str, media_type: str, body: dict[str, Any]) -> None:
    if media_type in {registry.OCI_INDEX, registry.DOCKER_LIST}:
        platforms = sorted(
            f"{(m.get('platform') or {}).get('os', '?')}/{(m.get('platform') or {}).get('architecture', '?')}"
            for m in body.get("manifests") or ()
        )
        raise LaunchError(
            f"{uri} is an image index ({', '.join(platforms) or 'no platforms'}): SageMaker pulls only a "
            "single-platform Docker v2 manifest",
            "push it again with smimg (`smimg push` pushes one linux/amd64 manifest, no attestations)",
        )
    if media_type != registry.DOCKER_MANIFEST:
        raise LaunchError(
            f"{uri} has a {media_type} manifest: SageMaker pulls Docker v2 schema 2 ({registry.DOCKER_MANIFEST})",
            "push it again with smimg or the Docker engine (it converts to Docker v2 schema 2)",
        )


def _local_engine() -> Engine:
    from smimg.adapters.docker_engine import default_engine

    return default_engine()


def _check_platform(uri: str, config: str, engine: Engine | None) -> None:
    """The platform from the local image with the manifest's config, when there is one here (and an engine)."""
    if engine is None or not config:
        return
    try:
        image = engine.image(config)
    except SmimgError:  # no engine to ask: ECR's API gives no platform of a Docker v2 manifest
        return
    if image is not None and (image.os, image.architecture) != PLATFORM:
        raise LaunchError(
            f"{uri} is a {image.os}/{image.architecture} image: SageMaker's instances run {'/'.join(PLATFORM)}",
            "build it for linux/amd64 (`smimg build` does) and push it again",
        )


def check_region(image: str, region: str) -> None:
    """SageMaker pulls a training image from ECR in the job's own region only.

    Raises:
        LaunchError: the image is in another region's ECR.
    """
    location = ImageRef.parse(image).ecr
    if location is not None and location[1] != region:
        raise LaunchError(
            f"the image is in ECR in {location[1]} and the job would run in {region}: SageMaker pulls only from the "
            "job's own region",
            f"push it to {region} (`smimg push --region {region}`), or launch in {location[1]} (--region)",
        )
