"""Registry credentials the user already has, from podman's and docker's auth files.

Reading what ``podman login`` / ``docker login`` wrote means the syncer needs no
credentials of its own in its config. Secrets stay out of every repr and message.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs

from reconciler.oci.reference import DOCKER_HUB_ALIASES, DOCKER_HUB
from reconciler import files
from reconciler.registry.errors import RegistryError

log = logging.getLogger(__name__)

DOCKER_HUB_SERVER_URL = "https://index.docker.io/v1/"
HELPER_TIMEOUT_SECONDS = 10
_HELPER_TOKEN_USERNAME = "<token>"
_HELPER_NOT_FOUND = b"credentials not found"
_VERSION_PATH = re.compile(r"/(?:v[0-9]+/?)?")
JSON_TOO_COMPLEX = "nested too deeply or a number too long"
"""What json.loads means by a RecursionError or a bare ValueError (Python's limit on digits)."""


@attrs.frozen
class Credentials:
    """What to present to a registry; secrets are kept out of repr so logging it is safe."""

    username: str | None = None
    password: str | None = attrs.field(default=None, repr=False)
    # docker's "identitytoken": an OAuth2 refresh token to exchange at the token endpoint.
    identity_token: str | None = attrs.field(default=None, repr=False)


CredentialSource = Callable[[], Credentials | None]
"""One registry's credentials, asked for anew each time: a Google access token behind them may be refreshed."""
CredentialLookup = Callable[[str], Credentials | None]
"""A registry's name (``docker.io``, ``localhost:5000``) to its credentials."""


def basic_authorization(username: str, password: str) -> str:
    """The Authorization (or Proxy-Authorization) value for a user name and password."""
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode("ascii")


class CredentialsError(RegistryError):
    """An auth file or credential helper the user must fix; names where, never the secret."""


def lookup(registry: str, environ: Mapping[str, str] | None = None) -> Credentials | None:
    """Credentials for a normalized registry name (``docker.io``, ``localhost:5000``).

    Sources are tried in podman's order so the syncer authenticates as the user's
    tools do; the first file with credentials for the registry wins.
    """
    environ = os.environ if environ is None else environ
    for path in _auth_files(environ):
        config = _read_config(path)
        if config is None:
            continue
        credentials = _lookup_in_config(config, path, registry, environ)
        if credentials is not None:
            log.debug("credentials for %s from %s", registry, path)
            return credentials
    return None


def check_auth_files(environ: Mapping[str, str] | None = None) -> None:
    """Read every auth file now, so a broken one fails the run before any request, as docker's does.

    Credential helpers are left alone: they run only for a registry that is contacted.
    """
    environ = os.environ if environ is None else environ
    for path in _auth_files(environ):
        config = _read_config(path)
        if config is None:
            continue
        for key, helper in _section(config, "credHelpers", path).items():
            _helper_name(helper, f"credHelpers[{key!r}]", path)
        if "credsStore" in config:
            _helper_name(config["credsStore"], "credsStore", path)
        for key, entry in _section(config, "auths", path).items():
            _parse_entry(entry, f"auths[{key!r}]", path)


def places_searched(environ: Mapping[str, str] | None = None) -> list[str]:
    """The auth files ``lookup`` reads, in its order: for a message when none had credentials."""
    return [str(path) for path in _auth_files(os.environ if environ is None else environ)]


def _auth_files(environ: Mapping[str, str]) -> list[Path]:
    paths = []
    if environ.get("REGISTRY_AUTH_FILE"):
        paths.append(Path(environ["REGISTRY_AUTH_FILE"]))
    if environ.get("XDG_RUNTIME_DIR"):
        paths.append(Path(environ["XDG_RUNTIME_DIR"], "containers", "auth.json"))
    if environ.get("DOCKER_CONFIG"):
        paths.append(Path(environ["DOCKER_CONFIG"], "config.json"))
    elif environ.get("HOME"):
        paths.append(Path(environ["HOME"], ".docker", "config.json"))
    return paths


def _read_config(path: Path) -> dict[str, Any] | None:
    """The parsed file, or None when it does not exist."""
    try:
        text = files.read_text(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as error:
        raise CredentialsError(f"{path}: cannot read: {error.strerror}") from None
    except UnicodeDecodeError:
        raise CredentialsError(f"{path}: not UTF-8 text") from None
    try:
        config = json.loads(text)
    except json.JSONDecodeError as error:
        # The message gives only the position: a snippet of the file could hold a secret.
        raise CredentialsError(
            f"{path}: invalid JSON at line {error.lineno} column {error.colno}"
        ) from None
    except (ValueError, RecursionError):
        raise CredentialsError(f"{path}: invalid JSON: {JSON_TOO_COMPLEX}") from None
    if not isinstance(config, dict):
        raise CredentialsError(f"{path}: expected a JSON object at the top level")
    return config


def _lookup_in_config(
    config: dict[str, Any], path: Path, registry: str, environ: Mapping[str, str]
) -> Credentials | None:
    """docker's precedence: a per-registry helper, else the default store, else ``auths``.

    A ``credHelpers`` entry is authoritative for its registry, so its "not found"
    skips this file's ``auths``; the ``credsStore`` default is not.
    """
    helpers = _section(config, "credHelpers", path)
    helper_key = _matching_key(helpers, registry)
    if helper_key is not None:
        helper = _helper_name(helpers[helper_key], f"credHelpers[{helper_key!r}]", path)
        return _run_helper(helper, registry, path, environ)
    if "credsStore" in config:
        helper = _helper_name(config["credsStore"], "credsStore", path)
        credentials = _run_helper(helper, registry, path, environ)
        if credentials is not None:
            return credentials
    auths = _section(config, "auths", path)
    auth_key = _matching_key(auths, registry)
    if auth_key is None:
        return None
    return _parse_entry(auths[auth_key], f"auths[{auth_key!r}]", path)


def _section(config: dict[str, Any], name: str, path: Path) -> dict[str, Any]:
    section = config.get(name, {})
    if not isinstance(section, dict):
        raise CredentialsError(f"{path}: {name} is not a JSON object")
    return section


def _matching_key(entries: Mapping[str, Any], registry: str) -> str | None:
    """The exact key if present, else the first key that normalizes to ``registry``."""
    if registry in entries:
        return registry
    return next((key for key in entries if _registry_of_key(key) == registry), None)


def _registry_of_key(key: str) -> str | None:
    """``https://index.docker.io/v1/`` → ``docker.io``.

    Keys with a repository path (podman's ``quay.io/org``) scope credentials to
    that namespace, so they give None rather than lend them to the whole registry.
    """
    host = key.removeprefix("https://").removeprefix("http://")
    slash = host.find("/")
    if slash != -1:
        if not _VERSION_PATH.fullmatch(host[slash:]):
            return None
        host = host[:slash]
    return DOCKER_HUB if host in DOCKER_HUB_ALIASES else host


def _parse_entry(entry: Any, where: str, path: Path) -> Credentials | None:
    """One ``auths`` entry; an empty one (docker's marker when a store holds it) gives None."""
    if not isinstance(entry, dict):
        raise CredentialsError(f"{path}: {where} is not a JSON object")
    fields = {}
    for field in ("auth", "username", "password", "identitytoken"):
        value = entry.get(field)
        if value is not None and not isinstance(value, str):
            raise CredentialsError(f"{path}: {where}.{field} is not a string")
        fields[field] = value or None
    username, password = fields["username"], fields["password"]
    if fields["auth"]:
        username, password = _decode_auth(fields["auth"], f"{where}.auth", path)
    if not (username or password or fields["identitytoken"]):
        return None
    return Credentials(username=username, password=password,
                       identity_token=fields["identitytoken"])


def _decode_auth(auth: str, where: str, path: Path) -> tuple[str, str]:
    try:
        decoded = base64.b64decode(auth, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise CredentialsError(f"{path}: {where} is not base64 of user:password") from None
    username, colon, password = decoded.partition(":")
    if not colon:
        raise CredentialsError(f"{path}: {where} has no ':' between user and password")
    return username, password


def _helper_name(value: Any, where: str, path: Path) -> str:
    if not isinstance(value, str) or not value or "/" in value:
        raise CredentialsError(f"{path}: {where} is not a credential helper name")
    return value


def _run_helper(
    helper: str, registry: str, path: Path, environ: Mapping[str, str]
) -> Credentials | None:
    """Ask ``docker-credential-<helper>``; its output is never quoted, as it holds the secret."""
    program = f"docker-credential-{helper}"
    what = f"credential helper {program} (configured in {path})"
    executable = shutil.which(program, path=environ.get("PATH", os.defpath))
    if executable is None:
        raise CredentialsError(f"{what} is not on PATH")
    server_url = DOCKER_HUB_SERVER_URL if registry == DOCKER_HUB else registry
    try:
        result = subprocess.run(
            [executable, "get"], input=server_url.encode(), capture_output=True,
            env=dict(environ), timeout=HELPER_TIMEOUT_SECONDS, check=False,
        )
    except subprocess.TimeoutExpired:
        raise CredentialsError(
            f"{what} did not answer within {HELPER_TIMEOUT_SECONDS} seconds"
        ) from None
    except OSError as error:
        raise CredentialsError(f"{what} could not run: {error.strerror}") from None
    if result.returncode != 0:
        if _HELPER_NOT_FOUND in result.stdout + result.stderr:
            return None
        raise CredentialsError(f"{what} failed with exit status {result.returncode}")
    try:
        answer = json.loads(result.stdout)
        username, secret = answer["Username"], answer["Secret"]
    except (ValueError, KeyError, TypeError):
        raise CredentialsError(f"{what} printed no JSON with Username and Secret") from None
    if not isinstance(username, str) or not isinstance(secret, str):
        raise CredentialsError(f"{what} printed a non-string Username or Secret")
    if username == _HELPER_TOKEN_USERNAME:
        return Credentials(identity_token=secret)
    return Credentials(username=username, password=secret)
