"""Adapter over the OCI distribution API of any registry: read manifests, with Basic or Bearer token auth.

The Docker engine pushes; this module only asks the registry what it holds, so that ``push`` can skip an upload
and check that the result is a manifest SageMaker accepts.
"""

from __future__ import annotations

import base64
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from smimg.errors import PushError, RegistryAuthError

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MANIFEST_TYPES = [DOCKER_MANIFEST, OCI_MANIFEST, DOCKER_LIST, OCI_INDEX]


@dataclass(frozen=True)
class Manifest:
    digest: str
    media_type: str
    body: dict[str, Any]


def _scheme(host: str) -> str:
    # The engine itself talks plain HTTP only to loopback registries unless configured otherwise; follow it.
    name = host.split(":")[0]
    return "http" if name in {"localhost", "127.0.0.1", "::1"} or name.startswith("127.") else "https"


@dataclass(frozen=True)
class RegistryClient:
    """One registry host; ``username``/``password`` are used for Basic auth and to obtain Bearer tokens."""

    host: str
    username: str | None = None
    password: str | None = None

    def manifest(self, repository: str, reference: str) -> Manifest | None:
        """The manifest of ``repository:reference`` (tag or digest), or None when the registry has none.

        Raises:
            RegistryAuthError: the registry refused our credentials.
            PushError: the registry cannot be reached.
        """
        url = f"{_scheme(self.host)}://{self.host}/v2/{repository}/manifests/{reference}"
        headers = {"Accept": ", ".join(MANIFEST_TYPES)}
        try:
            response = self._open(url, headers, repository)
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise PushError(f"registry {self.host} answered {exc.code} for {url}", "check the registry") from None
        with response:
            body = response.read()
            media_type = response.headers.get("Content-Type", "").split(";")[0]
            digest = response.headers.get("Docker-Content-Digest", "")
        parsed: dict[str, Any] = json.loads(body)
        return Manifest(digest=digest, media_type=parsed.get("mediaType") or media_type, body=parsed)

    def _open(self, url: str, headers: dict[str, str], repository: str) -> Any:
        try:
            return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30)
        except urllib.error.HTTPError as exc:
            if exc.code != 401:
                raise
            challenge = exc.headers.get("WWW-Authenticate", "")
        except urllib.error.URLError as exc:
            raise PushError(f"cannot reach registry {self.host}: {exc.reason}", "check the host and port") from None
        authorized = dict(headers, Authorization=self._authorization(challenge, repository))
        try:
            return urllib.request.urlopen(urllib.request.Request(url, headers=authorized), timeout=30)
        except urllib.error.HTTPError as exc:
            if exc.code in {401, 403}:
                raise RegistryAuthError(
                    f"registry {self.host} refused the credentials for {repository} ({exc.code})", AUTH_HINT
                ) from None
            raise

    def _authorization(self, challenge: str, repository: str) -> str:
        if self.username is None or self.password is None:
            raise RegistryAuthError(f"registry {self.host} requires credentials", AUTH_HINT)
        basic = "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        if not challenge.lower().startswith("bearer"):
            return basic
        params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
        query = {"service": params.get("service", ""), "scope": f"repository:{repository}:pull"}
        token_url = f"{params['realm']}?{urllib.parse.urlencode(query)}"
        try:
            with urllib.request.urlopen(
                urllib.request.Request(token_url, headers={"Authorization": basic}), timeout=30
            ) as response:
                token = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise RegistryAuthError(f"registry {self.host} refused a token ({exc.code})", AUTH_HINT) from None
        return f"Bearer {token.get('token') or token.get('access_token')}"


AUTH_HINT = (
    "pass --username with the password on stdin (--password-stdin) or in SMIMG_REGISTRY_PASSWORD, "
    "or run `docker login HOST` once"
)


def stored_credentials(host: str) -> tuple[str | None, str | None]:
    """The username and password `docker login` stored for ``host`` (config file or credential helper)."""
    from docker.auth import load_config, resolve_authconfig

    found = resolve_authconfig(load_config(), host) or {}
    return found.get("username") or found.get("Username"), found.get("password") or found.get("Password")
