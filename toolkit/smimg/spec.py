"""The image spec: one validated model, loaded from ``smimg.yaml`` or ``[tool.smimg]`` in ``pyproject.toml``.

Every problem is found before any build starts and reported together, each with its dotted field path and fix.
Paths in the spec are relative to the folder of the file that holds it (the project root).
"""

from __future__ import annotations

import copy
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from smimg import refs
from smimg.errors import Problem, SpecError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SPEC_FILE = "smimg.yaml"
PYPROJECT = "pyproject.toml"

_REPO_NAME = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*\Z")
_REGISTRY = re.compile(r"^[a-zA-Z0-9.-]+(?::[0-9]+)?(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*\Z")
_SYSTEM_PACKAGE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.+_:~=-]*\Z")
_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")
_LABEL_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]*\Z")
_VERSION = re.compile(r"^[0-9]+(?:\.[0-9]+)*(?:(?:a|b|rc|\.post|\.dev)[0-9]+)*\Z")
_PLATFORM = re.compile(r"^linux/(amd64|arm64)\Z")
_INSTANCE_GROUP = re.compile(r"^[^=]{1,64}=ml\.[^:\s]+:[0-9]+\Z")
# scheme://user[:password]@host, in any case: pip and urllib accept HTTPS:// as readily as https://
_CREDENTIALS_FIX = (
    "it would be baked into the image: serve the package from an index named by pip.index_url_env (or "
    "pip.extra_index_url_env), whose URL may hold credentials and reaches the build only as a secret"
)
_URL_USERINFO = re.compile(r"([a-z][a-z0-9+.-]*)://([^/@\s]+)@", re.IGNORECASE)
_INDEX_OPTION = re.compile(r"^\s*(--index-url|-i|--extra-index-url|--trusted-host|--find-links|-f)\b")

BLOCK_NAMES = ("after_system_packages", "after_requirements", "final")
BlockName = Literal["after_system_packages", "after_requirements", "final"]
Launcher = Literal["torchrun", "accelerate", "python"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BaseSpec(_Model):
    """The image to build on: an explicit ``image``, or Hugging Face DLC framework versions."""

    image: str | None = Field(None, description="Any image reference, e.g. a local image or a DLC URI.")
    transformers: str | None = Field(None, description="transformers version of the HF DLC, e.g. 4.56.2.")
    pytorch: str | None = Field(None, description="PyTorch version of the HF DLC, e.g. 2.8.0.")
    python: str | None = Field(None, description="Python of the HF DLC, e.g. py312.")
    region: str | None = Field(None, description="AWS region whose DLC registry to pull from.")


class PipSpec(_Model):
    """Where pip finds packages. Credentials never go in this file: name environment variables that hold them."""

    index_url: str | None = Field(None, description="A public index URL without credentials.")
    extra_index_urls: tuple[str, ...] = ()
    index_url_env: str | None = Field(
        None, description="Name of a host environment variable holding an index URL with credentials."
    )
    extra_index_url_env: str | None = Field(
        None, description="Name of a host environment variable holding an extra index URL with credentials."
    )
    ca_bundle: Path | None = Field(None, description="CA bundle pip inside the build should trust.")


class CodeSpec(_Model):
    """The training code: a folder and the script (or module) in it that the launcher starts."""

    source_dir: Path = Path("src")
    entry_point: str = "train.py"
    bake: bool = Field(True, description="Copy the code into the image; false: deliver it at run time.")
    exclude: tuple[str, ...] = Field(
        (),
        description=(
            "More gitignore-style patterns to keep out of the image, after smimg's defaults (VCS and virtualenv "
            "folders, bytecode, smimg-output/) and the folder's .gitignore and .dockerignore; !pattern re-includes."
        ),
    )


class LifecycleSpec(_Model):
    """An ECR lifecycle policy that keeps a repository from growing without bound."""

    enabled: bool = Field(True, description="false: put no lifecycle policy on a repository smimg creates.")
    untagged_days: int = Field(7, ge=1, description="Expire untagged images this many days after their push.")
    keep_last: int = Field(50, ge=1, description="Keep this many most recent tagged images; expire older ones.")


class PushSpec(_Model):
    """Where `smimg push` sends the image: an ECR repository (default) or any OCI registry."""

    repository: str | None = Field(None, description="Repository name. Default: the image name.")
    region: str | None = Field(None, description="ECR region. Default: base.region, then the AWS config's region.")
    registry: str | None = Field(None, description="Any OCI registry host[/namespace] instead of ECR.")
    mutable_tags: tuple[str, ...] = Field(
        (), description="Human tags (e.g. latest) allowed to move in an otherwise tag-immutable ECR repository."
    )
    scan_on_push: bool = True
    kms_key: str | None = Field(None, description="KMS key for repository encryption. Default: AES256.")
    lifecycle: LifecycleSpec = LifecycleSpec()


class LaunchSpec(_Model):
    """`smimg launch`'s defaults for this project's SageMaker jobs; its flags (and an accelerate config) override them.

    Not part of the image: changing them changes no content tag or label.
    """

    role: str | None = Field(
        None, description="IAM role SageMaker assumes: an ARN or a name. SMIMG_ROLE and --role override it."
    )
    instance_type: str | None = Field(None, description="e.g. ml.g5.2xlarge.")
    instances: int | None = Field(None, ge=1, description="Hosts (algo-1..N) on SageMaker.")
    output: str | None = Field(None, description="S3OutputPath, s3://bucket/prefix.")
    max_run: int | None = Field(None, ge=1, description="MaxRuntimeInSeconds.")
    volume_size: int | None = Field(None, ge=1, description="VolumeSizeInGB per instance.")
    spot: bool | None = Field(None, description="Managed spot training.")
    max_wait: int | None = Field(None, ge=1, description="Spot: MaxWaitTimeInSeconds.")
    checkpoints: str | None = Field(None, description="CheckpointConfig.S3Uri, s3://bucket/prefix.")
    network_isolation: bool | None = None
    subnets: tuple[str, ...] = ()
    security_groups: tuple[str, ...] = ()
    keep_alive: int | None = Field(None, ge=0, description="Warm pool: KeepAlivePeriodInSeconds.")
    tags: dict[str, str] = Field(default_factory=dict)
    instance_groups: tuple[str, ...] = Field(
        (),
        description="A heterogeneous cluster's groups, NAME=TYPE:COUNT each, instead of instance_type and instances.",
    )
    distribution_group: str | None = Field(None, description="The instance group whose hosts train together.")


class ImageSpec(_Model):
    """Everything that determines a training image."""

    name: str = Field(description="Image repository name, also the ECR repository by default.")
    base: BaseSpec
    accelerate: str | None = Field(None, description="accelerate version; none keeps the base's.")
    requirements: tuple[Path, ...] = ()
    packages: tuple[str, ...] = Field((), description="Extra requirement specifiers, e.g. 'datasets>=3'.")
    base_overrides: tuple[str, ...] = Field(
        (), description="Base packages (torch stack) that requirements are allowed to replace."
    )
    system_packages: tuple[str, ...] = ()
    env: dict[str, str] = Field(default_factory=dict)
    pip: PipSpec = PipSpec()
    code: CodeSpec | None = None
    launcher: Launcher = "torchrun"
    labels: dict[str, str] = Field(default_factory=dict)
    platform: str = "linux/amd64"
    blocks: dict[BlockName, str] = Field(default_factory=dict)
    push: PushSpec = PushSpec()
    launch: LaunchSpec = LaunchSpec()


class LoadedSpec(_Model):
    """A validated spec and where it came from."""

    spec: ImageSpec
    root: Path
    source: str


def find_spec_file(folder: Path) -> Path | None:
    """``smimg.yaml`` in ``folder``, else a ``pyproject.toml`` there with a ``[tool.smimg]`` table."""
    if (folder / SPEC_FILE).is_file():
        return folder / SPEC_FILE
    pyproject = folder / PYPROJECT
    if pyproject.is_file() and "smimg" in _toml(pyproject).get("tool", {}):
        return pyproject
    return None


def _toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(str(path), [Problem("(file)", f"not valid TOML: {exc}", "fix the line named above")]) from None


def read_raw(path: Path) -> dict[str, Any]:
    """The spec's raw mapping from a YAML file or a pyproject's ``[tool.smimg]``."""
    if path.name == PYPROJECT:
        table = _toml(path).get("tool", {}).get("smimg")
        if not isinstance(table, dict):
            raise SpecError(str(path), [Problem("tool.smimg", "missing", "add a [tool.smimg] table")])
        return table
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise SpecError(str(path), [Problem("(file)", f"not valid YAML: {exc}")]) from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SpecError(str(path), [Problem("(file)", "must be a mapping of fields", "see `smimg init`")])
    return data


def apply_overrides(raw: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Apply CLI flags given as dotted paths (``base.image``) over the file's values; None means not given."""
    merged: dict[str, Any] = copy.deepcopy(dict(raw))
    for dotted, value in overrides.items():
        if value is None:
            continue
        node = merged
        *parents, leaf = dotted.split(".")
        for key in parents:
            child = node.get(key)
            if not isinstance(child, dict):
                child = {}
                node[key] = child
            node = child
        node[leaf] = value
    if overrides.get("base.image") is not None and isinstance(merged.get("base"), dict):
        # An explicit base replaces framework versions rather than conflicting with them.
        merged["base"] = {"image": merged["base"]["image"]}
    return merged


def load_spec(path: Path | None = None, overrides: Mapping[str, Any] | None = None) -> LoadedSpec:
    """Load, merge CLI overrides into, and validate an image spec.

    Args:
        path: a ``smimg.yaml``, a ``pyproject.toml``, or a folder holding one; default the current folder.
        overrides: dotted field paths to values, from CLI flags; None values are ignored.

    Raises:
        SpecError: listing every problem with its field path and fix.
    """
    path = Path(path) if path is not None else Path.cwd()
    if path.is_dir():
        found = find_spec_file(path)
        if found is None:
            raise SpecError(
                str(path),
                [Problem("(file)", f"no {SPEC_FILE} or [tool.smimg] in {PYPROJECT} here", "run `smimg init`")],
            )
        path = found
    elif not path.is_file():
        raise SpecError(str(path), [Problem("(file)", "does not exist", "pass the path of your smimg.yaml")])
    raw = apply_overrides(read_raw(path), overrides or {})
    return validate(raw, root=path.parent.resolve(), source=str(path))


def load_optional(path: Path | None, *, required: bool) -> LoadedSpec | None:
    """The spec when one is named or in the current folder; None when neither and the caller can do without.

    Raises:
        SpecError: as ``load_spec``.
    """
    if path is None and not required and find_spec_file(Path.cwd()) is None:
        return None
    return load_spec(path)


def validate(raw: Mapping[str, Any], *, root: Path, source: str) -> LoadedSpec:
    """Validate a raw mapping: schema first, then the checks that read files and refuse unsafe text."""
    try:
        spec = ImageSpec.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(source, [_from_pydantic(e) for e in exc.errors()]) from None
    problems = check(spec, root)
    if problems:
        raise SpecError(source, problems)
    return LoadedSpec(spec=spec, root=root, source=source)


def _from_pydantic(error: Mapping[str, Any]) -> Problem:
    loc = ".".join(str(part) for part in error["loc"]) or "(root)"
    kind = error["type"]
    if kind == "extra_forbidden":
        known = _known_fields(error["loc"][:-1])
        return Problem(loc, "unknown field", f"remove it, or use one of: {', '.join(known)}")
    if kind == "missing":
        return Problem(loc, "required field is missing", "add it")
    if kind == "literal_error":
        return Problem(loc, error["msg"], "use one of the listed values")
    return Problem(loc, f"{error['msg']} (got {error.get('input')!r})", _TYPE_FIXES.get(kind, _TYPE_FIX))


_TYPE_FIXES = {
    "tuple_type": "write a list, e.g. [a, b] (or one item per '- ' line in YAML)",
    "list_type": "write a list, e.g. [a, b] (or one item per '- ' line in YAML)",
    "dict_type": "write a mapping of key: value lines",
    "model_type": "write a mapping of its fields (see `smimg init`'s smimg.yaml)",
    "string_type": "write text; quote it if YAML reads it as a number or boolean",
    "bool_type": "write true or false",
    "bool_parsing": "write true or false",
    "int_type": "write a whole number",
    "int_parsing": "write a whole number",
    "greater_than_equal": "use a larger number",
}
_TYPE_FIX = "see the field table in the README, or `smimg init` for a valid smimg.yaml"


def _known_fields(loc: tuple[Any, ...]) -> list[str]:
    model: type[BaseModel] = ImageSpec
    for part in loc:
        field = model.model_fields.get(str(part))
        annotation = getattr(field, "annotation", None)
        candidates = [a for a in getattr(annotation, "__args__", (annotation,)) if isinstance(a, type)]
        nested = [a for a in candidates if issubclass(a, BaseModel)]
        if not nested:
            return list(BLOCK_NAMES) if str(part) == "blocks" else []
        model = nested[0]
    return list(model.model_fields)


def check(spec: ImageSpec, root: Path) -> list[Problem]:
    """The checks a schema cannot express. Pure apart from reading the files the spec names."""
    if not _REPO_NAME.match(spec.name):
        name = [Problem("name", f"{spec.name!r} is not a valid repository name", "lowercase letters, digits, . _ - /")]
    else:
        name = []
    return [
        *name,
        *_check_base(spec),
        *_check_packages(spec, root),
        *_check_text(spec),
        *_check_pip(spec.pip, root),
        *_check_code(spec, root),
        *_check_push(spec.push),
        *_check_launch(spec.launch),
        *(
            Problem(f"blocks.{block}", "must not start a new stage (FROM)", "use RUN/ENV/COPY instructions")
            for block, text in spec.blocks.items()
            if re.search(r"(?im)^\s*FROM\s", text)
        ),
    ]


def _check_base(spec: ImageSpec) -> list[Problem]:
    base = spec.base
    versions = {"transformers": base.transformers, "pytorch": base.pytorch, "python": base.python}
    problems = []
    if base.image is not None:
        if any(v is not None for v in versions.values()):
            problems.append(Problem("base", "both base.image and framework versions are set", "keep one of them"))
        if not refs.is_valid(base.image):
            problems.append(
                Problem("base.image", f"{base.image!r} is not a valid image reference", "e.g. repo/name:tag")
            )
    elif missing := [k for k, v in versions.items() if v is None]:
        problems.append(
            Problem(
                "base",
                f"framework versions incomplete: {', '.join('base.' + m for m in missing)} missing",
                "set base.transformers, base.pytorch and base.python, or base.image",
            )
        )
    if spec.accelerate is not None and not _VERSION.match(spec.accelerate):
        problems.append(Problem("accelerate", f"{spec.accelerate!r} is not a version", "e.g. 1.14.0"))
    return problems


def _check_packages(spec: ImageSpec, root: Path) -> list[Problem]:
    problems = []
    for i, req in enumerate(spec.requirements):
        problems.extend(_check_requirements_file(f"requirements.{i}", root / req))
    for i, line in enumerate(spec.packages):
        if has_credentials(line):
            problems.append(Problem(f"packages.{i}", "holds credentials in a URL", _CREDENTIALS_FIX))
        elif (problem := _requirement_problem(line)) is not None:
            problems.append(Problem(f"packages.{i}", problem, "write one PEP 508 specifier, e.g. 'datasets>=3.0'"))
    for i, name in enumerate(spec.base_overrides):
        if not re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]*\*?\Z", name):
            problems.append(
                Problem(f"base_overrides.{i}", f"{name!r} is not a package name", "e.g. torchvision or nvidia-*")
            )
    for i, pkg in enumerate(spec.system_packages):
        if not _SYSTEM_PACKAGE.match(pkg):
            problems.append(
                Problem(f"system_packages.{i}", f"{pkg!r} is not a package name", "one apt/dnf name, e.g. git-lfs")
            )
    return problems


def _check_text(spec: ImageSpec) -> list[Problem]:
    """Values that land in Dockerfile instructions or labels: one line each."""
    problems = []
    for key, value in spec.env.items():
        if not _ENV_KEY.match(key):
            problems.append(Problem(f"env.{key}", "not a valid variable name", "letters, digits and _ only"))
        if _multiline(value):
            problems.append(Problem(f"env.{key}", "value spans several lines", "use a single-line value"))
    for key, value in spec.labels.items():
        if not _LABEL_KEY.match(key):
            problems.append(Problem(f"labels.{key}", "not a valid label key", "e.g. com.example.team"))
        if _multiline(value):
            problems.append(Problem(f"labels.{key}", "value spans several lines", "use a single-line value"))
    if not _PLATFORM.match(spec.platform):
        problems.append(
            Problem("platform", f"{spec.platform!r} is not supported", "SageMaker training runs linux/amd64")
        )
    return problems


def has_credentials(text: str) -> bool:
    """Whether any URL in ``text`` carries a password or token, in any spelling of its scheme.

    ``git+ssh://git@host`` names an SSH user, not a secret; any other user part (``https://TOKEN@``,
    ``user:pass@``) would be copied into the image's layers, history and package list.
    """
    return any(":" in userinfo or "ssh" not in scheme.lower() for scheme, userinfo in _URL_USERINFO.findall(text))


def _multiline(text: str) -> bool:
    return any(ch in text for ch in "\n\r")


def _check_pip(pip: PipSpec, root: Path) -> list[Problem]:
    problems = []
    urls = [("pip.index_url", pip.index_url)] + [
        (f"pip.extra_index_urls.{i}", u) for i, u in enumerate(pip.extra_index_urls)
    ]
    for field, url in urls:
        if url is None:
            continue
        if _multiline(url) or " " in url:
            problems.append(Problem(field, "is not a single URL", "write one URL without spaces or line breaks"))
        if has_credentials(url):
            problems.append(
                Problem(
                    field,
                    "holds credentials, which would end up in the image",
                    "move the URL to an environment variable and name it in pip.index_url_env",
                )
            )
    for field, var in (("pip.index_url_env", pip.index_url_env), ("pip.extra_index_url_env", pip.extra_index_url_env)):
        if var is not None and not _ENV_KEY.match(var):
            problems.append(Problem(field, f"{var!r} is not an environment variable name", "e.g. PIP_INDEX_URL"))
    if pip.ca_bundle is not None and not (root / pip.ca_bundle).is_file():
        problems.append(
            Problem("pip.ca_bundle", f"file {root / pip.ca_bundle} does not exist", "give the path of a PEM file")
        )
    return problems


def _check_code(spec: ImageSpec, root: Path) -> list[Problem]:
    if spec.code is None:
        return []
    src = root / spec.code.source_dir
    entry = spec.code.entry_point
    if _multiline(entry):
        return [Problem("code.entry_point", "spans several lines", "name one script, or '-m package.module'")]
    if not src.is_dir():
        return [Problem("code.source_dir", f"folder {src} does not exist", "create it or fix the path")]
    problems = []
    if not entry.startswith("-m ") and not (src / entry).is_file():
        problems.append(
            Problem(
                "code.entry_point",
                f"{entry} not found in {src}",
                "name a script inside code.source_dir, or '-m package.module'",
            )
        )
    if (src / "opt" / "ml").exists():
        problems.append(
            Problem("code.source_dir", "contains opt/ml", "SageMaker reserves /opt/ml; keep code out of it")
        )
    return problems


def _check_push(push: PushSpec) -> list[Problem]:
    problems = []
    if push.repository is not None and not _REPO_NAME.match(push.repository):
        problems.append(
            Problem("push.repository", f"{push.repository!r} is not a valid repository name", "e.g. team/trainer")
        )
    if push.registry is not None and not _REGISTRY.match(push.registry):
        problems.append(
            Problem("push.registry", f"{push.registry!r} is not a registry", "host[:port][/namespace], no scheme")
        )
    for i, tag in enumerate(push.mutable_tags):
        if not re.match(r"^[\w][\w.*-]{0,127}\Z", tag):
            problems.append(
                Problem(f"push.mutable_tags.{i}", f"{tag!r} is not a tag or tag pattern", "e.g. latest or dev-*")
            )
    return problems


def _check_launch(launch: LaunchSpec) -> list[Problem]:
    """What the SageMaker API would refuse only at launch; the request's limits are checked when it is planned."""
    problems = []
    if launch.instance_type is not None and not launch.instance_type.startswith("ml."):
        problems.append(
            Problem(
                "launch.instance_type",
                f"{launch.instance_type!r} is not a SageMaker instance type",
                "e.g. ml.g5.2xlarge",
            )
        )
    if launch.instance_groups and (launch.instance_type is not None or launch.instances is not None):
        problems.append(
            Problem("launch.instance_groups", "given with instance_type or instances", "keep the groups or those two")
        )
    for i, group in enumerate(launch.instance_groups):
        if not _INSTANCE_GROUP.match(group):
            problems.append(
                Problem(f"launch.instance_groups.{i}", f"{group!r} is not NAME=TYPE:COUNT", "e.g. gpus=ml.g5.2xlarge:2")
            )
    for field, uri in (("launch.output", launch.output), ("launch.checkpoints", launch.checkpoints)):
        if uri is not None and not uri.startswith("s3://"):
            problems.append(Problem(field, f"{uri!r} is not an S3 URI", "write s3://bucket/prefix"))
    return problems


def _requirement_problem(line: str) -> str | None:
    """Why one requirement specifier is unsafe or invalid, or None when it is a plain PEP 508 requirement."""
    from packaging.requirements import InvalidRequirement, Requirement

    if any(ch in line for ch in "\n\r\\"):
        return f"{line!r} spans several lines or has a backslash"
    try:
        Requirement(line)
    except InvalidRequirement as exc:
        return f"{line!r} is not a valid requirement ({exc})"
    return None


def _check_requirements_file(field: str, path: Path) -> list[Problem]:
    if not path.is_file():
        return [Problem(field, f"file {path} does not exist", "create it or fix the path")]
    problems = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        stripped = line.strip()
        if _INDEX_OPTION.match(stripped):
            problems.append(
                Problem(
                    f"{field} ({path.name}:{number})",
                    "sets a package index inside a requirements file, which is copied into the image",
                    "move it to pip.index_url, or pip.index_url_env when it holds credentials",
                )
            )
        elif has_credentials(stripped):
            problems.append(Problem(f"{field} ({path.name}:{number})", "holds credentials in a URL", _CREDENTIALS_FIX))
        elif re.match(r"^\s*(-r|-c|--requirement|--constraint)\b", stripped):
            problems.append(
                Problem(
                    f"{field} ({path.name}:{number})",
                    "includes another file, which is not in the build context",
                    "list that file under requirements instead",
                )
            )
    return problems
