"""Runs inside an smimg build, with the base image's own Python: installs packages without touching its stack.

Standard library only. Its one argument is an instruction file (JSON) that smimg wrote into the build context.
``requirements``: derive pip constraints from the base's torch/CUDA stack (torch, torchvision, torchaudio, triton,
nvidia-*, ...) and install with them. ``wheel``: install the entrypoint wheel without dependencies and write its
console scripts at fixed paths. Either uses pip, or uv where the base's venv has no pip (the 2026 DLCs).
A failure ends with one report line, the marker and a JSON object (what, requirement, base_package, reason, fix),
that smimg turns into its error; pip's own output is printed above it as it came.
"""

import fnmatch
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys

GUARDED = (
    "torch", "torchvision", "torchaudio", "torchdata", "triton", "pytorch-triton", "nvidia-*", "cuda-*",
    "flash-attn", "flash_attn", "transformer-engine", "transformer_engine", "apex", "xformers", "deepspeed",
    "smdistributed-*", "aws-ofi-nccl",
)
# pip's and uv's words for "no such package or version on the index"
_MISSING = re.compile(r"No matching distribution found for (\S+)|Because (\S+) was not found")


class Failure(Exception):
    def __init__(self, what, reason, fix, requirement=None, base_package=None):
        super().__init__(reason)
        self.report = {"what": what, "requirement": requirement, "base_package": base_package, "reason": reason, "fix": fix}


def canonical(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def installed():
    found = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            found.setdefault(canonical(name), (name, dist.version))
    return found


def installer():
    try:
        import pip  # noqa: F401

        return [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "--no-input"]
    except ImportError:
        uv = shutil.which("uv")
        if uv is None:
            raise Failure(
                "installer", "the base image's Python has neither pip nor uv", "add one in blocks.after_system_packages"
            ) from None
        return [uv, "pip", "install", "--python", sys.executable]


def guarded_constraints(allowed):
    lines = []
    for key, (name, version) in sorted(installed().items()):
        if any(fnmatch.fnmatch(key, canonical(p)) for p in GUARDED) and not any(
            fnmatch.fnmatch(key, canonical(a)) for a in allowed
        ):
            lines.append(f"{name}=={version}")
    return lines


def pip_reason(output):
    """pip's (or uv's) own error lines: what the user needs to read first."""
    lines = [line.strip() for line in output.splitlines()]
    errors = [line for line in lines if line.startswith(("ERROR:", "error:", "×", "╰─▶", "Because", "hint:"))]
    return "\n".join((errors or [line for line in lines if line][-6:])[-12:])


def explain(output, constraints, returncode):
    """A report for a failed install: a guarded base package it tried to replace, a missing package, or pip's."""
    resolution = any(s in output for s in ("ResolutionImpossible", "conflicting dependencies", "No solution found"))
    for line in constraints if resolution else ():
        name, _ = line.split("==", 1)
        pattern = re.compile(rf"(?i)\b{re.escape(name).replace('-', '[-_]')}\b")
        clash = [
            text.strip()
            for text in output.splitlines()
            if pattern.search(text) and ("conflict" in text.lower() or "requested" in text.lower() or "depends" in text)
        ]
        if clash:
            requested = re.search(rf"(?i)requested ({re.escape(name).replace('-', '[-_]')}\S*)", output)
            return Failure(
                "requirements",
                "\n".join(clash[:6]),
                f"drop or loosen that requirement, or allow it explicitly with base_overrides: [{name}] in smimg.yaml",
                requirement=requested[1] if requested else name,
                base_package=line,
            )
    missing = _MISSING.search(output)
    requirement = (missing[1] or missing[2]) if missing else None
    fix = (
        f"check the name and version of {requirement} on your index (`pip index versions NAME`) and pip.index_url"
        if requirement
        else "read pip's output above, fix the requirement and build again"
    )
    return Failure("requirements", pip_reason(output) or f"pip exit {returncode}", fix, requirement=requirement)


def write_packages(path):
    with open(path, "w") as out:
        for _, (name, version) in sorted(installed().items()):
            out.write(f"{name}=={version}\n")


def secret(spec, key):
    name = spec["secrets"].get(key)
    path = os.path.join(spec["secrets_dir"], name) if name else ""
    if path and os.path.isfile(path):
        with open(path) as handle:
            return handle.read().strip(), path
    return None, None


def requirements(spec):
    constraints = guarded_constraints(spec["allow"])
    with open(spec["constraints_file"], "w") as out:
        out.write("".join(f"{line}\n" for line in constraints))
    argv = installer() + ["-c", spec["constraints_file"]]
    # Credentials arrive as BuildKit secrets: mounted for this one step, never in a layer, ARG or ENV.
    index = secret(spec, "index_url")[0] or spec["index_url"]
    if index:
        argv += ["--index-url", index]
    extra = [u for u in [secret(spec, "extra_index_url")[0], *spec["extra_index_urls"]] if u]
    for url in extra:
        argv += ["--extra-index-url", url]
    env = dict(os.environ)
    ca_path = secret(spec, "ca_bundle")[1]
    if ca_path is not None:
        env["PIP_CERT"] = env["SSL_CERT_FILE"] = ca_path
    items = spec["args"]
    if items:
        shown = [a for a in argv if a not in (index, *extra)]
        print("smimg: " + " ".join(shown + items), flush=True)
        proc = subprocess.run(argv + items, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        sys.stdout.write(proc.stdout)
        if proc.returncode != 0:
            raise explain(proc.stdout, constraints, proc.returncode)
    write_packages(spec["packages_file"])


def wheel(spec):
    proc = subprocess.run(
        installer() + ["--no-deps", "--no-index", spec["wheel"]], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    sys.stdout.write(proc.stdout)
    if proc.returncode != 0:
        raise Failure("entrypoint", pip_reason(proc.stdout), "report this to smimg", requirement=spec["wheel"])
    # Fixed paths for the exec-form ENTRYPOINT, whichever bin folder the base's Python uses.
    for name, target in sorted(spec["console_scripts"].items()):
        module, _, function = target.partition(":")
        path = os.path.join(spec["bin_dir"], name)
        with open(path, "w") as out:
            out.write(f"#!{sys.executable}\nfrom {module} import {function}\n{function}()\n")
        os.chmod(path, 0o755)
    write_packages(spec["packages_file"])


def main():
    with open(sys.argv[1]) as handle:
        spec = json.load(handle)
    try:
        {"requirements": requirements, "wheel": wheel}[spec["command"]](spec)
    except Failure as failure:
        # One stream, flushed, on one line: BuildKit interleaves stdout and stderr chunks mid-line.
        print(spec["failure_marker"] + " " + json.dumps(failure.report), flush=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
