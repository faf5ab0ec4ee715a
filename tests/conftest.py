"""Shared pytest fixtures: real registries, token issuer, fault proxies, images.

Registries are session-scoped (started lazily on first use, ~0.1 s each) and
shared by all tests, so use ``unique_repo()`` for repository names.
"""

from __future__ import annotations

import itertools
import re
import signal
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

# The CLIs the tests start and stop with SIGINT get it as a terminal's foreground job has it: a suite
# started as a background job without job control (``pytest &`` in a script) inherits SIGINT ignored,
# and an ignored signal stays ignored across fork and exec; a handler is reset to the default there.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from tests.harness import images as _images  # noqa: E402
from tests.harness.fault_proxy import FaultProxy  # noqa: E402
from tests.harness.oauth import FakeTokenEndpoint, serve_token_endpoint, write_service_account_key  # noqa: E402
from tests.harness.registry import Registry, start_registry  # noqa: E402
from tests.harness.token_issuer import TokenIssuer  # noqa: E402

TOKEN_USERS = {"tester": "tester-pw", "pusher": "pusher-pw", "puller": "puller-pw"}
HTPASSWD_USERS = {"tester": "tester-pw", "other": "other-pw"}


# ---------------------------------------------------------------- registries
@pytest.fixture(scope="session")
def registry_factory():
    """``registry_factory(name, **start_registry_kwargs) -> Registry``; stopped at session end."""
    started: list[Registry] = []

    def make(name: str = "registry", **kwargs) -> Registry:
        reg = start_registry(name, **kwargs)
        started.append(reg)
        return reg

    yield make
    for reg in reversed(started):
        reg.stop()


@pytest.fixture(scope="session")
def plain_registry(registry_factory) -> Registry:
    """HTTP, no auth, deletes enabled."""
    return registry_factory("plain")


@pytest.fixture(scope="session")
def second_plain_registry(registry_factory) -> Registry:
    return registry_factory("plain2")


@pytest.fixture(scope="session")
def undeleting_registry(registry_factory) -> Registry:
    """HTTP, no auth, ``storage.delete.enabled: false``: every manifest DELETE is answered 405 UNSUPPORTED."""
    return registry_factory("undeleting", delete_enabled=False)


@pytest.fixture(scope="session")
def htpasswd_registry(registry_factory) -> Registry:
    """HTTP + htpasswd basic auth; ``.credentials == ("tester", "tester-pw")``;
    also user ``other``/``other-pw``."""
    return registry_factory("htpasswd", auth="htpasswd", users=HTPASSWD_USERS)


@pytest.fixture(scope="session")
def _token_issuer_session():
    issuer = TokenIssuer(users=TOKEN_USERS).start()
    yield issuer
    issuer.stop()


@pytest.fixture(scope="session")
def _token_registry_session(registry_factory, _token_issuer_session) -> Registry:
    return registry_factory("token", auth="token", issuer=_token_issuer_session)


@pytest.fixture
def token_registry(_token_registry_session) -> Registry:
    """HTTP + token auth.  ``.issuer`` is its TokenIssuer (users tester/pusher/
    puller, password "<name>-pw"); its policy, users, failures and recorded
    requests are reset after each test, so swap ``issuer.policy`` freely."""
    reg = _token_registry_session
    reg.issuer.reset()
    yield reg
    reg.issuer.reset()


@pytest.fixture(scope="session")
def tls_registry(registry_factory) -> Registry:
    """HTTPS (trustme CA: ``.ca_file``, ``.cert_dir`` with ca.crt), no auth."""
    return registry_factory("tls", tls=True)


# ------------------------------------------------------------ fault proxies
@pytest.fixture
def fault_proxy():
    """``fault_proxy(upstream, host="127.0.0.1") -> FaultProxy`` (started);
    ``upstream`` is a Registry, another FaultProxy or a URL.  All are stopped
    at the end of the test."""
    proxies: list[FaultProxy] = []

    def make(upstream, host: str = "127.0.0.1", **kwargs) -> FaultProxy:
        url = upstream if isinstance(upstream, str) else upstream.url
        ca = getattr(upstream, "ca_file", None)
        if ca is not None:
            kwargs.setdefault("upstream_ca_file", str(ca))
        p = FaultProxy(url, host=host, **kwargs).start()
        proxies.append(p)
        return p

    yield make
    for p in proxies:
        p.stop()


# ------------------------------------------------------------------ naming
_counter = itertools.count(1)


def _slug(text: str) -> str:
    s = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return s[:60].strip("-") or "t"


@pytest.fixture
def unique_repo(request):
    """``unique_repo(suffix="") -> "t/<test-name>-<n>-<rand>[/suffix]"``, a valid
    repository name never used by another test in this session."""
    base = _slug(request.node.name)

    def make(suffix: str = "") -> str:
        name = f"t/{base}-{next(_counter)}-{uuid.uuid4().hex[:6]}"
        if suffix:
            name += "/" + "/".join(_slug(p) for p in suffix.split("/"))
        return name

    return make


# ------------------------------------------------------------------ images
@pytest.fixture
def push_image(unique_repo, plain_registry):
    """``push_image(image_or_kind, registry=plain_registry, repo=None, tag="v1",
    **push_kwargs) -> PushedImage``.  ``image_or_kind``: an Image or one of
    "oci", "docker", "oci-index", "docker-list", "large"; ``repo`` defaults to
    a fresh ``unique_repo()``."""

    def push(image, registry: Registry | None = None, repo: str | None = None,
             tag: str = "v1", **kwargs) -> _images.PushedImage:
        if isinstance(image, str):
            image = _images.build_image(image)
        return _images.push_image(image, registry or plain_registry, repo or unique_repo(),
                                  tag, **kwargs)

    return push


@pytest.fixture(scope="session")
def seeded_images(plain_registry) -> dict[str, _images.PushedImage]:
    """All fixture kinds pushed once to ``plain_registry`` as
    ``seeded/<kind>:v1`` -> {kind: PushedImage}.  Read-only: do not delete."""
    return {
        kind: _images.push_image(_images.build_image(kind), plain_registry, f"seeded/{kind}", "v1")
        for kind in _images.BUILDERS
    }


# ---------------------------------------------------------------- Google credentials
@pytest.fixture(scope="module")
def trusted_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def endpoint(trusted_key: rsa.RSAPrivateKey) -> Iterator[FakeTokenEndpoint]:
    with serve_token_endpoint(FakeTokenEndpoint(public_key=trusted_key.public_key())) as running:
        yield running


@pytest.fixture
def key_file(tmp_path: Path, trusted_key: rsa.RSAPrivateKey, endpoint: FakeTokenEndpoint) -> Path:
    return write_service_account_key(tmp_path / "sa.json", trusted_key, endpoint.url)


@pytest.fixture
def no_application_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No GOOGLE_APPLICATION_CREDENTIALS and an empty gcloud config directory."""
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))
