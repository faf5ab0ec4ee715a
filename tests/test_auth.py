"""Registry auth (reconciler/registry/auth.py): WWW-Authenticate parsing, then basic and token auth against
real htpasswd and token registries."""

from __future__ import annotations

import asyncio
import json

import pytest

from reconciler.oci import reference
from reconciler.oci.digest import Digest
from reconciler.registry.auth import Challenge, parse_challenges
from reconciler.registry.client import Deletion
from reconciler.registry.copy import BlobTransferFailed
from reconciler.registry.credentials import lookup
from reconciler.registry.errors import RegistryError, ResponseError
from reconciler.registry.options import TransportOptions
from reconciler.registry.registries import Registries
from tests.harness.skopeo import skopeo_inspect_raw
from tests.helpers_clients import FAST_RETRY, assert_same_image, mirror, registries, run


def test_bearer_with_several_scopes_and_insufficient_scope():
    header = (
        'Bearer realm="https://auth.example.com/token",service="registry.example.com",'
        'scope="repository:a/b:pull,push repository:c/d:pull",error="insufficient_scope"'
    )
    assert parse_challenges(header) == [
        Challenge(
            scheme="bearer",
            realm="https://auth.example.com/token",
            service="registry.example.com",
            scopes=("repository:a/b:pull,push", "repository:c/d:pull"),
            error="insufficient_scope",
        )
    ]


def test_several_challenges_and_unquoted_values():
    header = 'Basic realm="Registry Realm", Bearer realm=https://t.example/token,service=svc'
    assert parse_challenges(header) == [
        Challenge(scheme="basic", realm="Registry Realm"),
        Challenge(scheme="bearer", realm="https://t.example/token", service="svc"),
    ]


def test_escaped_quotes_and_empty_header():
    assert parse_challenges('Basic realm="say \\"hi\\""') == [Challenge(scheme="basic", realm='say "hi"')]
    assert parse_challenges("") == []


def test_basic_auth_with_credentials(push_image, htpasswd_registry, second_plain_registry, unique_repo):
    pushed = push_image("oci", registry=htpasswd_registry)
    target_repo = unique_repo()
    target = f"{second_plain_registry.host}/{target_repo}:v1"

    with pytest.raises(ResponseError, match=r"HTTP 401.*no credentials for this registry were found: no key file or access token for it, nothing in "):
        mirror(pushed.ref, target, {})
    mirror(pushed.ref, target, {htpasswd_registry.host: htpasswd_registry.credentials})
    assert_same_image(pushed, second_plain_registry.host, target_repo)


def test_the_first_answer_stands_in_for_a_ping(push_image, htpasswd_registry, fault_proxy):
    """Concurrent first requests: one goes alone, is challenged once; the rest bring credentials."""
    pushed = push_image("oci", registry=htpasswd_registry)
    proxy = fault_proxy(htpasswd_registry)
    source = reference.parse(f"{proxy.host}/{pushed.repo}:v1")

    async def main():
        async with registries({proxy.host: htpasswd_registry.credentials}) as regs:
            repository = regs.repository(source.repository)
            return await asyncio.gather(*(repository.resolve_digest("v1") for _ in range(8)))

    assert run(main()) == [Digest.parse(pushed.digest)] * 8
    assert [(r.method, r.url_path) for r in proxy.requests] == [("HEAD", f"/v2/{pushed.repo}/manifests/v1")] * 9
    assert [r.status for r in proxy.requests] == [401] + [200] * 8


def test_tokens_are_cached_per_scope(push_image, token_registry, unique_repo):
    issuer = token_registry.issuer
    pushed = push_image("oci-index", registry=token_registry)
    issuer.clear()

    async def main():
        async with registries({token_registry.host: token_registry.credentials}) as regs:
            source = reference.parse(pushed.ref)
            repository = regs.repository(source.repository)
            for _ in range(5):
                await repository.resolve_digest("v1")
                for child in pushed.child_digests:
                    await repository.get_manifest(Digest.parse(child))

    run(main())
    assert [r.requested for r in issuer.requests] == [[f"repository:{pushed.repo}:pull"]]


def test_refused_push_is_one_clear_error(push_image, token_registry, unique_repo, second_plain_registry):
    pushed = push_image("oci", registry=second_plain_registry)
    token_registry.issuer.policy = lambda user, password, repository, actions: [a for a in actions if a == "pull"]

    with pytest.raises(BlobTransferFailed) as raised:
        mirror(pushed.ref, f"{token_registry.host}/{unique_repo()}:v1", {token_registry.host: token_registry.credentials})
    message = str(raised.value)
    assert message.startswith(f"writing the target: {token_registry.host}/") and "HTTP 401" in message
    assert "\n" not in message
    assert token_registry.credentials[1] not in message


def test_identity_token_is_exchanged_with_the_refresh_token_grant(push_image, token_registry, tmp_path, monkeypatch):
    issuer = token_registry.issuer
    pushed = push_image("oci", registry=token_registry)
    issuer.refresh_tokens["refresh-me-not-a-password"] = "tester"
    (tmp_path / "config.json").write_text(json.dumps(
        {"auths": {token_registry.host: {"identitytoken": "refresh-me-not-a-password"}}}
    ))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    monkeypatch.delenv("REGISTRY_AUTH_FILE", raising=False)
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    issuer.policy = lambda user, password, repository, actions: list(actions) if user == "tester" else []
    issuer.clear()

    async def main():
        async with Registries(TransportOptions(retry=FAST_RETRY), lookup) as regs:
            return await regs.repository(reference.parse(pushed.ref).repository).resolve_digest("v1")

    assert str(run(main())) == pushed.digest
    assert [(r.method, r.grant_type, r.username, r.status) for r in issuer.requests] == [
        ("POST", "refresh_token", "tester", 200)
    ]


def test_a_delete_asks_for_the_delete_action(push_image, token_registry):
    """distribution's token auth grants a manifest DELETE only with ``delete``: push is not enough."""
    issuer = token_registry.issuer
    kept, deleted = push_image("oci", registry=token_registry), push_image("docker", registry=token_registry)
    credentials = {token_registry.host: token_registry.credentials}

    async def delete(pushed):
        async with registries(credentials) as regs:
            return await regs.repository(reference.parse(pushed.ref).repository).delete_manifest(pushed.digest)

    issuer.policy = lambda user, password, repository, actions: [a for a in actions if a != "delete"]
    with pytest.raises(RegistryError, match="HTTP 401") as raised:
        run(delete(kept))
    assert "\n" not in str(raised.value) and token_registry.credentials[1] not in str(raised.value)
    issuer.policy = lambda user, password, repository, actions: list(actions)
    issuer.clear()

    assert run(delete(deleted)) is Deletion.DELETED
    # The scope we ask for first, then the challenge's (a first request goes without a token).
    assert [r.requested[0] for r in issuer.requests] == [f"repository:{deleted.repo}:pull,delete"]
    assert skopeo_inspect_raw(kept.ref, creds=token_registry.credentials) == kept.manifest
