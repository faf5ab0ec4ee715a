"""Raw registry HTTP for assertions (independent of the code under test).

Handles the 401 dance itself: Basic for htpasswd registries, Bearer via the
challenge's realm/service/scope for token registries.
"""

from __future__ import annotations

import hashlib
import re
import ssl
from typing import Any

import httpx

from .images import (DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST)

ALL_MANIFEST_TYPES = ", ".join([OCI_INDEX, OCI_MANIFEST, DOCKER_MANIFEST_LIST, DOCKER_MANIFEST])

_PARAM = re.compile(r'(\w+)="([^"]*)"')


def parse_challenge(value: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="..",service="..",scope=".."`` -> ("bearer", {...})."""
    scheme, _, rest = value.partition(" ")
    return scheme.lower(), dict(_PARAM.findall(rest))


class RawRegistry:
    """``RawRegistry(registry)`` or ``RawRegistry(url=..., credentials=..., ca_file=...)``.

    ``credentials=None`` with a harness Registry uses ``registry.credentials``;
    pass ``anonymous=True`` to never send credentials.
    """

    def __init__(self, registry: Any = None, *, url: str | None = None,
                 credentials: tuple[str, str] | None = None, ca_file: str | None = None,
                 anonymous: bool = False, timeout: float = 60) -> None:
        if registry is not None:
            url = url or registry.url
            credentials = credentials or getattr(registry, "credentials", None)
            ca_file = ca_file or getattr(registry, "ca_file", None)
        assert url, "need a registry or url"
        self.url = url.rstrip("/")
        self.credentials = None if anonymous else credentials
        verify: Any = ssl.create_default_context(cafile=str(ca_file)) if ca_file else True
        self.client = httpx.Client(verify=verify, timeout=timeout)
        self._tokens: dict[str, str] = {}
        self.last_token: str | None = None

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> "RawRegistry":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def token(self, realm: str, service: str | None, scope: str | None) -> str:
        params = {}
        if service:
            params["service"] = service
        if scope:
            params["scope"] = scope
        r = self.client.get(realm, params=params, auth=self.credentials)
        r.raise_for_status()
        body = r.json()
        return body.get("token") or body["access_token"]

    def request(self, method: str, path: str, *, headers: dict[str, str] | None = None,
                content: Any = None, follow_redirects: bool = True, scope: str | None = None,
                **kw: Any) -> httpx.Response:
        """``path`` is relative to the registry ("/v2/...") or an absolute URL."""
        url = path if path.startswith("http") else self.url + path
        hdrs = dict(headers or {})
        r = self.client.request(method, url, headers=hdrs, content=content,
                                follow_redirects=follow_redirects, **kw)
        if r.status_code != 401 or "www-authenticate" not in r.headers:
            return r
        if content is not None and not isinstance(content, (bytes, str)):
            return r  # a stream cannot be replayed
        scheme, params = parse_challenge(r.headers["www-authenticate"])
        if scheme == "basic":
            if self.credentials is None:
                return r
            return self.client.request(method, url, headers=hdrs, content=content,
                                       auth=self.credentials, follow_redirects=follow_redirects, **kw)
        if scheme == "bearer":
            tok = self.token(params["realm"], params.get("service"), scope or params.get("scope"))
            self.last_token = tok
            hdrs["Authorization"] = f"Bearer {tok}"
            return self.client.request(method, url, headers=hdrs, content=content,
                                       follow_redirects=follow_redirects, **kw)
        return r

    # ------------------------------------------------------------ shortcuts
    def get_manifest(self, repo: str, reference: str, accept: str = ALL_MANIFEST_TYPES) -> httpx.Response:
        return self.request("GET", f"/v2/{repo}/manifests/{reference}", headers={"Accept": accept})

    def head_manifest(self, repo: str, reference: str, accept: str = ALL_MANIFEST_TYPES) -> httpx.Response:
        return self.request("HEAD", f"/v2/{repo}/manifests/{reference}", headers={"Accept": accept})

    def get_blob(self, repo: str, digest: str) -> httpx.Response:
        return self.request("GET", f"/v2/{repo}/blobs/{digest}")

    def head_blob(self, repo: str, digest: str) -> httpx.Response:
        return self.request("HEAD", f"/v2/{repo}/blobs/{digest}")

    def tags(self, repo: str) -> list[str]:
        r = self.request("GET", f"/v2/{repo}/tags/list")
        if r.status_code == 404:
            return []
        r.raise_for_status()
        return sorted(r.json().get("tags") or [])

    def delete_manifest(self, repo: str, digest: str) -> httpx.Response:
        return self.request("DELETE", f"/v2/{repo}/manifests/{digest}")

    def put_manifest(self, repo: str, reference: str, raw: bytes, media_type: str) -> httpx.Response:
        return self.request("PUT", f"/v2/{repo}/manifests/{reference}", content=raw,
                            headers={"Content-Type": media_type})

    def push_blob(self, repo: str, data: bytes) -> str:
        """Monolithic upload (POST then PUT); returns the digest."""
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        r = self.request("POST", f"/v2/{repo}/blobs/uploads/")
        r.raise_for_status()
        loc = r.headers["location"]
        if not loc.startswith("http"):
            loc = self.url + loc
        sep = "&" if "?" in loc else "?"
        r = self.request("PUT", f"{loc}{sep}digest={digest}", content=data,
                         headers={"Content-Type": "application/octet-stream"})
        r.raise_for_status()
        return digest


def get_manifest(registry: Any, repo: str, reference: str, accept: str = ALL_MANIFEST_TYPES,
                 **kw: Any) -> httpx.Response:
    """One-shot GET of a manifest (status, headers, exact bytes in ``.content``)."""
    with RawRegistry(registry, **kw) as raw:
        r = raw.get_manifest(repo, reference, accept)
        r.read()
        return r


def get_blob(registry: Any, repo: str, digest: str, **kw: Any) -> httpx.Response:
    with RawRegistry(registry, **kw) as raw:
        r = raw.get_blob(repo, digest)
        r.read()
        return r
