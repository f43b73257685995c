"""Runs inside an smimg build, with the base image's own Python: installs packages without touching its stack.

Standard library only. `requirements`: derive pip constraints from the base's torch/CUDA stack (torch,
torchvision, torchaudio, triton, nvidia-*, ...), install with them, and explain a conflict by naming the
requirement, the base package and how to allow it. `wheel`: install one local wheel without dependencies.
Either uses pip, or uv where the base's venv has no pip (the 2026 DLCs).
"""

import argparse
import fnmatch
import importlib.metadata
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
PACKAGES_FILE = "/opt/smimg/packages.txt"
CONSTRAINTS_FILE = "/opt/smimg/base-constraints.txt"


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
            sys.exit("smimg: the base image's Python has neither pip nor uv; add one in blocks.after_system_packages")
        return [uv, "pip", "install", "--python", sys.executable]


def guarded_constraints(allowed):
    lines = []
    for key, (name, version) in sorted(installed().items()):
        if any(fnmatch.fnmatch(key, canonical(p)) for p in GUARDED) and not any(
            fnmatch.fnmatch(key, canonical(a)) for a in allowed
        ):
            lines.append(f"{name}=={version}")
    return lines


def explain_conflict(output, constraints):
    """Name the base package a requirement tried to replace; None when the failure is something else."""
    for line in constraints:
        name, version = line.split("==", 1)
        pattern = re.compile(rf"(?i)\b{re.escape(name).replace('-', '[-_]')}\b")
        clash = [
            text.strip()
            for text in output.splitlines()
            if pattern.search(text) and ("conflict" in text.lower() or "requested" in text.lower() or "depends" in text)
        ]
        if clash and ("ResolutionImpossible" in output or "conflicting dependencies" in output or "unsatisfiable" in output.lower() or "No solution found" in output):
            return (
                f"smimg: a requirement would replace the base image's {name}=={version} "
                f"(the DLC's torch/CUDA stack).\n"
                + "\n".join(f"  pip: {text}" for text in clash[:6])
                + f"\n  fix: drop or loosen that requirement, or allow it explicitly with base_overrides: [{name}] "
                "in smimg.yaml"
            )
    return None


def write_packages():
    with open(PACKAGES_FILE, "w") as out:
        for _, (name, version) in sorted(installed().items()):
            out.write(f"{name}=={version}\n")


def secret(name):
    path = os.path.join("/run/secrets", name)
    if os.path.isfile(path):
        with open(path) as handle:
            return handle.read().strip()
    return None


def requirements(args):
    constraints = guarded_constraints(args.allow)
    with open(CONSTRAINTS_FILE, "w") as out:
        out.write("".join(f"{line}\n" for line in constraints))
    argv = installer() + ["-c", CONSTRAINTS_FILE]
    # Credentials arrive as BuildKit secrets: mounted for this one step, never in a layer, ARG or ENV.
    index = secret("pip-index-url") or args.index_url
    if index:
        argv += ["--index-url", index]
    extra = [u for u in [secret("pip-extra-index-url"), *args.extra_index_url] if u]
    for url in extra:
        argv += ["--extra-index-url", url]
    env = dict(os.environ)
    if secret("pip-cert") is not None:
        env["PIP_CERT"] = env["SSL_CERT_FILE"] = "/run/secrets/pip-cert"
    items = args.items
    if items:
        shown = [a for a in argv if a not in (index, *extra)]
        print("smimg: " + " ".join(shown + items), flush=True)
        proc = subprocess.run(argv + items, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        sys.stdout.write(proc.stdout)
        if proc.returncode != 0:
            explained = explain_conflict(proc.stdout, constraints)
            # One stream, flushed: BuildKit interleaves stdout and stderr chunks mid-line.
            print(explained or f"smimg: installing the requirements failed (pip exit {proc.returncode})", flush=True)
            sys.exit(1)
    write_packages()


def wheel(args):
    subprocess.run(installer() + ["--no-deps", "--no-index", args.path], check=True)
    # Fixed paths for the exec-form ENTRYPOINT, whichever bin folder the base's Python uses.
    for name, function in (("smimg-train", "main"), ("smimg-launch", "launch_main")):
        path = f"/opt/smimg/bin/{name}"
        with open(path, "w") as out:
            out.write(f"#!{sys.executable}\nfrom smimg_entrypoint.main import {function}\n{function}()\n")
        os.chmod(path, 0o755)
    write_packages()


def main():
    parser = argparse.ArgumentParser(prog="installer.py")
    sub = parser.add_subparsers(dest="command", required=True)
    req = sub.add_parser("requirements")
    req.add_argument("--allow", action="append", default=[])
    req.add_argument("--index-url")
    req.add_argument("--extra-index-url", action="append", default=[])
    req.add_argument("items", nargs=argparse.REMAINDER)
    req.set_defaults(run=requirements)
    whl = sub.add_parser("wheel")
    whl.add_argument("path")
    whl.set_defaults(run=wheel)
    args = parser.parse_args()
    if getattr(args, "items", None) and args.items[0] == "--":
        args.items = args.items[1:]
    args.run(args)


if __name__ == "__main__":
    main()
