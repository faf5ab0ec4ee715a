"""The registry client against real docker-registry processes, checked with skopeo."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from reconciler.registry import reference
from reconciler.registry.client import NotFound, Registries
from reconciler.registry.copy import BlobTransferFailed, Copier
from reconciler.registry.credentials import Credentials
from reconciler.registry.digest import Digest, DigestMismatch
from reconciler.registry.errors import RegistryError, ResponseError
from reconciler.registry.retry import RetryPolicy
from reconciler.registry.transport import TransportOptions
from tests.harness.rawhttp import RawRegistry
from tests.harness.skopeo import skopeo_inspect_raw

FAST_RETRY = RetryPolicy(attempts=4, base_delay=0.01, max_delay=0.05)


def run(coroutine):
    return asyncio.run(coroutine)


def registries(credentials: dict[str, tuple[str, str]] | None = None, **options) -> Registries:
    known = {host: Credentials(username=user, password=password) for host, (user, password) in (credentials or {}).items()}
    options.setdefault("retry", FAST_RETRY)
    return Registries(TransportOptions(**options), known.get)


async def copy_image(regs: Registries, source: str, target: str) -> tuple[Copier, object]:
    """Copy ``source`` (a tag reference) to ``target`` and tag it, as apply does."""
    source_ref = reference.parse(source)
    target_ref = reference.parse(target)
    source_client = regs.client(source_ref.repository)
    digest = await source_client.resolve_digest(source_ref.repository.path, source_ref.identifier)
    async with Copier(regs) as copier:
        manifest = await copier.copy_referenced(source_ref.repository, digest, target_ref.repository)
    await regs.client(target_ref.repository).put_manifest(target_ref.repository.path, target_ref.tag, manifest)
    return copier, manifest


def assert_same_image(pushed, target_host: str, target_repo: str, tag: str = "v1", **skopeo) -> None:
    """The target serves byte-identical manifests and every blob of the pushed image."""
    assert skopeo_inspect_raw(f"{target_host}/{target_repo}:{tag}", **skopeo) == pushed.manifest
    for child in pushed.children:
        assert skopeo_inspect_raw(f"{target_host}/{target_repo}@{child.digest}", **skopeo) == child.raw


# -- references ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected", "api_host"),
    [
        ("busybox", "docker.io/library/busybox:latest", "registry-1.docker.io"),
        ("index.docker.io/bitnami/redis:7", "docker.io/bitnami/redis:7", "registry-1.docker.io"),
        ("docker.io/ubuntu", "docker.io/library/ubuntu:latest", "registry-1.docker.io"),
        ("localhost:5001/demo/app:1", "localhost:5001/demo/app:1", "localhost:5001"),
        ("quay.io/jetstack/cert-manager-controller:v1.15.1", "quay.io/jetstack/cert-manager-controller:v1.15.1", "quay.io"),
        ("localhost/app", "localhost/app:latest", "localhost"),
        ("a/b__c.d-e:T_1.0@sha256:" + "a" * 64, "docker.io/a/b__c.d-e:T_1.0@sha256:" + "a" * 64, "registry-1.docker.io"),
    ],
)
def test_reference_normalization(text, expected, api_host):
    parsed = reference.parse(text)
    assert str(parsed) == expected
    assert parsed.repository.api_host == api_host


@pytest.mark.parametrize(
    "text", ["", "Busybox", "a//b", "busybox:", "busybox:-x", "a@sha256:abc", "a@md5:" + "a" * 32, "-a/b", "a/b-",
             "busybox:é1", "busybox:1é", "bü/x:1", "busybox:" + "a" * 129]
)
def test_invalid_references_are_refused(text):
    with pytest.raises(reference.InvalidReference):
        reference.parse(text)


# -- copying between real registries --------------------------------------------------


@pytest.mark.parametrize("kind", ["oci-index", "docker-list", "docker", "oci"])
def test_copy_keeps_every_digest(kind, push_image, plain_registry, second_plain_registry, unique_repo):
    pushed = push_image(kind)
    target_repo = unique_repo("mirror")

    async def main():
        async with registries() as regs:
            return await copy_image(regs, pushed.ref, f"{second_plain_registry.host}/{target_repo}:v1")

    copier, manifest = run(main())
    assert str(manifest.digest) == pushed.digest
    assert_same_image(pushed, second_plain_registry.host, target_repo)
    with RawRegistry(second_plain_registry) as raw:
        for digest, size in pushed.blobs.items():
            response = raw.head_blob(target_repo, digest)
            assert response.status_code == 200, digest
            assert int(response.headers["Content-Length"]) == size
    assert copier.stats.blobs_uploaded == len(pushed.blobs)
    assert copier.stats.bytes_uploaded == sum(pushed.blobs.values())


def test_second_repository_mounts_instead_of_uploading(push_image, plain_registry, second_plain_registry, unique_repo):
    pushed = push_image("oci-index")
    first, second = unique_repo("a"), unique_repo("b")

    async def main():
        async with registries() as regs:
            copier, _ = await copy_image(regs, pushed.ref, f"{second_plain_registry.host}/{first}:v1")
            uploaded = copier.stats.blobs_uploaded
            source = reference.parse(pushed.ref)
            target = reference.parse(f"{second_plain_registry.host}/{second}:v1")
            manifest = await copier.copy_referenced(source.repository, Digest.parse(pushed.digest), target.repository)
            await regs.client(target.repository).put_manifest(target.repository.path, str(manifest.digest), manifest)
            return copier.stats, uploaded

    stats, uploaded_first = run(main())
    assert uploaded_first == len(pushed.blobs)
    assert stats.blobs_uploaded == len(pushed.blobs)
    assert stats.blobs_mounted == len(pushed.blobs)
    assert skopeo_inspect_raw(f"{second_plain_registry.host}/{second}@{pushed.digest}") == pushed.manifest


def test_chunked_upload_path(push_image, second_plain_registry, unique_repo):
    pushed = push_image("large")
    target_repo = unique_repo()

    async def main():
        async with registries(chunk_size=3 * 1024 * 1024) as regs:
            return await copy_image(regs, pushed.ref, f"{second_plain_registry.host}/{target_repo}:v1")

    copier, _ = run(main())
    assert copier.stats.blobs_uploaded == len(pushed.blobs)
    assert_same_image(pushed, second_plain_registry.host, target_repo)
    with RawRegistry(second_plain_registry) as raw:
        for digest in pushed.blobs:
            assert raw.head_blob(target_repo, digest).status_code == 200


def test_tls_registry_needs_its_ca(push_image, tls_registry, unique_repo):
    pushed = push_image("oci", registry=tls_registry)
    source = reference.parse(pushed.ref)

    async def head(ca_file):
        async with registries(ca_file=ca_file) as regs:
            return await regs.client(source.repository).resolve_digest(source.repository.path, "v1")

    assert str(run(head(str(tls_registry.ca_file)))) == pushed.digest
    with pytest.raises(RegistryError, match="certificate"):
        run(head(None))


# -- auth ------------------------------------------------------------------------------


def test_basic_auth_with_credentials(push_image, htpasswd_registry, second_plain_registry, unique_repo):
    pushed = push_image("oci", registry=htpasswd_registry)
    target_repo = unique_repo()

    async def main(credentials):
        async with registries(credentials) as regs:
            return await copy_image(regs, pushed.ref, f"{second_plain_registry.host}/{target_repo}:v1")

    with pytest.raises(ResponseError, match=r"HTTP 401.*no credentials for this registry were found: no key file or access token for it, nothing in "):
        run(main({}))
    run(main({htpasswd_registry.host: htpasswd_registry.credentials}))
    assert_same_image(pushed, second_plain_registry.host, target_repo)


def test_the_first_answer_stands_in_for_a_ping(push_image, htpasswd_registry, fault_proxy):
    """Concurrent first requests: one goes alone, is challenged once; the rest bring credentials."""
    pushed = push_image("oci", registry=htpasswd_registry)
    proxy = fault_proxy(htpasswd_registry)
    source = reference.parse(f"{proxy.host}/{pushed.repo}:v1")

    async def main():
        async with registries({proxy.host: htpasswd_registry.credentials}) as regs:
            client = regs.client(source.repository)
            return await asyncio.gather(*(client.resolve_digest(source.repository.path, "v1") for _ in range(8)))

    assert run(main()) == [Digest.parse(pushed.digest)] * 8
    assert [(r.method, r.url_path) for r in proxy.requests] == [("HEAD", f"/v2/{pushed.repo}/manifests/v1")] * 9
    assert [r.status for r in proxy.requests] == [401] + [200] * 8


def test_mount_on_token_registry_uses_only_granted_scopes(push_image, token_registry, unique_repo):
    issuer = token_registry.issuer
    pushed = push_image("oci", registry=token_registry)
    target_repo = unique_repo("mounted")
    granted = {}

    def policy(username, password, repository, actions):
        # push only into the target; pull only from the source
        allowed = ["pull", "push"] if repository == target_repo else ["pull"] if repository == pushed.repo else []
        granted.setdefault(repository, set()).update(a for a in actions if a in allowed)
        return [a for a in actions if a in allowed]

    issuer.policy = policy
    issuer.clear()

    async def main():
        async with registries({token_registry.host: token_registry.credentials}) as regs:
            copier, _ = await copy_image(regs, pushed.ref, f"{token_registry.host}/{target_repo}:v1")
            return copier.stats

    stats = run(main())
    assert stats.blobs_mounted == len(pushed.blobs)
    assert stats.blobs_uploaded == 0
    mount_requests = [r for r in issuer.requests if len(r.requested) == 2]
    assert mount_requests, issuer.requests
    assert mount_requests[0].requested == [
        f"repository:{target_repo}:pull,push",
        f"repository:{pushed.repo}:pull",
    ]
    assert granted == {pushed.repo: {"pull"}, target_repo: {"pull", "push"}}
    assert skopeo_inspect_raw(
        f"{token_registry.host}/{target_repo}:v1", creds=token_registry.credentials
    ) == pushed.manifest


def test_tokens_are_cached_per_scope(push_image, token_registry, unique_repo):
    issuer = token_registry.issuer
    pushed = push_image("oci-index", registry=token_registry)
    issuer.clear()

    async def main():
        async with registries({token_registry.host: token_registry.credentials}) as regs:
            source = reference.parse(pushed.ref)
            client = regs.client(source.repository)
            for _ in range(5):
                await client.resolve_digest(source.repository.path, "v1")
                for child in pushed.child_digests:
                    await client.get_manifest(source.repository.path, Digest.parse(child))

    run(main())
    assert [r.requested for r in issuer.requests] == [[f"repository:{pushed.repo}:pull"]]


def test_refused_push_is_one_clear_error(push_image, token_registry, unique_repo, second_plain_registry):
    pushed = push_image("oci", registry=second_plain_registry)
    token_registry.issuer.policy = lambda user, password, repository, actions: [a for a in actions if a == "pull"]

    async def main():
        async with registries({token_registry.host: token_registry.credentials}) as regs:
            await copy_image(regs, pushed.ref, f"{token_registry.host}/{unique_repo()}:v1")

    with pytest.raises(BlobTransferFailed) as raised:
        run(main())
    message = str(raised.value)
    assert message.startswith(f"writing the target: {token_registry.host}/") and "HTTP 401" in message
    assert "\n" not in message
    assert token_registry.credentials[1] not in message


# -- verification -----------------------------------------------------------------------


def test_blob_with_wrong_bytes_is_refused(push_image, fault_proxy, plain_registry, second_plain_registry, unique_repo):
    pushed = push_image("oci")
    proxy = fault_proxy(plain_registry)
    layer = max(pushed.blobs, key=pushed.blobs.get)
    size = pushed.blobs[layer]
    proxy.fail("GET", f"/blobs/{layer}$", status=200, body=b"x" * size,
               headers={"Content-Type": "application/octet-stream"}, times=None)
    target_repo = unique_repo()

    async def main():
        async with registries() as regs:
            await copy_image(regs, f"{proxy.host}/{pushed.repo}:v1", f"{second_plain_registry.host}/{target_repo}:v1")

    with pytest.raises(BlobTransferFailed, match=f"^reading the source: .*blob {layer}: expected digest {layer}, got sha256:"):
        run(main())
    with RawRegistry(second_plain_registry) as raw:
        assert raw.head_blob(target_repo, layer).status_code == 404
        assert raw.head_manifest(target_repo, pushed.digest).status_code == 404



def test_manifest_with_wrong_bytes_is_refused(push_image, fault_proxy, plain_registry, unique_repo):
    pushed = push_image("oci-index")
    proxy = fault_proxy(plain_registry)
    child = pushed.children[0]
    proxy.fail("GET", f"/manifests/{child.digest}$", status=200, body=pushed.children[1].raw,
               headers={"Content-Type": child.media_type}, times=None)

    async def main():
        async with registries() as regs:
            client = regs.client(reference.parse(f"{proxy.host}/{pushed.repo}").repository)
            await client.get_manifest(pushed.repo, Digest.parse(child.digest))

    with pytest.raises(DigestMismatch, match=child.digest):
        run(main())


def test_manifest_content_type_must_match_body(push_image, fault_proxy, plain_registry):
    pushed = push_image("oci")
    proxy = fault_proxy(plain_registry)
    proxy.fail("GET", "/manifests/", status=200, body=pushed.manifest, times=None,
               headers={"Content-Type": "application/vnd.docker.distribution.manifest.v2+json"})

    async def main():
        async with registries() as regs:
            client = regs.client(reference.parse(f"{proxy.host}/{pushed.repo}").repository)
            await client.get_manifest(pushed.repo, Digest.parse(pushed.digest))

    with pytest.raises(RegistryError, match="served as application/vnd.docker.distribution.manifest.v2"):
        run(main())


def test_oversized_manifest_is_refused_before_reading(push_image, fault_proxy, plain_registry):
    pushed = push_image("oci")
    proxy = fault_proxy(plain_registry)
    proxy.fail("GET", "/manifests/", status=200, body=b" " * (4 * 1024 * 1024 + 1), times=None,
               headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"})

    async def main():
        async with registries() as regs:
            client = regs.client(reference.parse(f"{proxy.host}/{pushed.repo}").repository)
            await client.get_manifest(pushed.repo, "v1")

    with pytest.raises(RegistryError, match="over the 4 MiB limit"):
        run(main())


def test_unknown_tag_is_not_found(push_image):
    pushed = push_image("oci")
    repository = reference.parse(pushed.ref).repository

    async def main():
        async with registries() as regs:
            client = regs.client(repository)
            assert await client.resolve_digest(pushed.repo, "nope") is None
            await client.get_manifest(pushed.repo, "nope")

    with pytest.raises(NotFound, match="manifest nope not found"):
        run(main())


# -- transport ------------------------------------------------------------------------------


def test_retries_transient_failures_and_honours_retry_after(push_image, fault_proxy, plain_registry,
                                                            second_plain_registry, unique_repo):
    pushed = push_image("oci-index")
    proxy = fault_proxy(plain_registry)
    proxy.fail("GET", "/manifests/", status=503, headers={"Retry-After": "1"}, times=1)
    proxy.fail("GET", "/blobs/sha256:", status=429, times=2)
    proxy.drop("GET", "/blobs/sha256:", times=1)
    target_repo = unique_repo()

    async def main():
        async with registries() as regs:
            return await copy_image(regs, f"{proxy.host}/{pushed.repo}:v1",
                                    f"{second_plain_registry.host}/{target_repo}:v1")

    run(main())
    assert_same_image(pushed, second_plain_registry.host, target_repo)
    statuses = [r.status for r in proxy.requests_matching("GET", "/manifests/")]
    assert statuses[:2] == [503, 200]
    retried = [r for r in proxy.requests if r.action != "pass"]
    assert len(retried) == 4
    gap = retried[0].time, next(r.time for r in proxy.requests if r.time > retried[0].time)
    assert gap[1] - gap[0] >= 0.9, "Retry-After: 1 was not honoured"


def test_gives_up_after_the_retry_budget(push_image, fault_proxy, plain_registry):
    pushed = push_image("oci")
    proxy = fault_proxy(plain_registry)
    proxy.fail("HEAD", "/manifests/", status=500, times=None)

    async def main():
        async with registries() as regs:
            await regs.client(reference.parse(f"{proxy.host}/{pushed.repo}").repository).resolve_digest(pushed.repo, "v1")

    with pytest.raises(ResponseError, match="HTTP 500"):
        run(main())
    assert proxy.count("HEAD", "/manifests/") == FAST_RETRY.attempts


def largest_blob(pushed) -> str:
    """The biggest layer's hex digest: it names the blob in a GET path and in a PUT's ``digest=`` (its colon escaped)."""
    return max(pushed.blobs, key=lambda digest: (pushed.blobs[digest], digest)).split(":", 1)[1]


def test_a_manifest_cut_short_is_fetched_again(push_image, fault_proxy, plain_registry,
                                                second_plain_registry, unique_repo):
    pushed = push_image("oci-index")
    proxy = fault_proxy(plain_registry)
    proxy.truncate("GET", "/manifests/", after_bytes=20, times=2)
    target_repo = unique_repo()

    async def main():
        async with registries() as regs:
            return await copy_image(regs, f"{proxy.host}/{pushed.repo}:v1",
                                    f"{second_plain_registry.host}/{target_repo}:v1")

    run(main())
    assert_same_image(pushed, second_plain_registry.host, target_repo)
    assert [r.action for r in proxy.requests_matching("GET", "/manifests/")][:2] == ["truncate", "truncate"]


def test_a_blob_upload_is_restarted_whole_in_a_new_session(push_image, fault_proxy, plain_registry,
                                                            second_plain_registry, unique_repo):
    """A 503 on the streamed PUT and a source blob cut short: each try opens a new session and reads the source again."""
    pushed = push_image("oci")
    layer = largest_blob(pushed)
    source = fault_proxy(plain_registry)
    source.truncate("GET", f"/blobs/sha256:{layer}", after_bytes=1000, times=1)
    target = fault_proxy(second_plain_registry)
    target.fail("PUT", f"digest=sha256%3A{layer}", status=503, times=1)
    target_repo = unique_repo()

    async def main():
        async with registries() as regs:
            return await copy_image(regs, f"{source.host}/{pushed.repo}:v1", f"{target.host}/{target_repo}:v1")

    run(main())
    assert_same_image(pushed, second_plain_registry.host, target_repo)
    assert [r.action for r in source.requests_matching("GET", f"/blobs/sha256:{layer}")] == ["truncate", "pass", "pass"]
    puts = target.requests_matching("PUT", f"digest=sha256%3A{layer}")
    assert [r.status for r in puts] == [503, 201]
    assert len({r.path.split("?", 1)[0] for r in puts}) == 2, "the second PUT reused the first upload session"


def test_retries_do_not_nest_one_budget_per_blob_transfer(push_image, fault_proxy, plain_registry,
                                                          second_plain_registry, unique_repo):
    pushed = push_image("oci")
    layer = largest_blob(pushed)
    target = fault_proxy(second_plain_registry)
    target.fail("PUT", f"digest=sha256%3A{layer}", status=503, times=None)

    async def main():
        async with registries() as regs:
            return await copy_image(regs, f"{plain_registry.host}/{pushed.repo}:v1", f"{target.host}/{unique_repo()}:v1")

    with pytest.raises(BlobTransferFailed, match="^writing the target: .*HTTP 503"):
        run(main())
    assert target.count("PUT", f"digest=sha256%3A{layer}") == FAST_RETRY.attempts


@pytest.mark.parametrize("status", [403, 404, 405])
def test_a_refused_mount_falls_back_to_a_plain_upload(status, push_image, fault_proxy, plain_registry,
                                                       second_plain_registry, unique_repo):
    pushed = push_image("oci")
    target = fault_proxy(second_plain_registry)
    target.fail("POST", "mount=", status=status, times=None)
    target_repo = unique_repo()

    async def main():
        async with registries() as regs:
            return await copy_image(regs, f"{plain_registry.host}/{pushed.repo}:v1", f"{target.host}/{target_repo}:v1")

    copier, _ = run(main())
    assert_same_image(pushed, second_plain_registry.host, target_repo)
    assert copier.stats.blobs_uploaded == len(pushed.blobs)
    assert target.count("POST", "mount=") == len(pushed.blobs)


def test_redirect_to_another_host_drops_authorization(push_image, fault_proxy, htpasswd_registry,
                                                      second_plain_registry, unique_repo):
    pushed = push_image("large", registry=htpasswd_registry)
    push_image("large", registry=second_plain_registry, repo=pushed.repo)
    storage = fault_proxy(second_plain_registry, host="127.0.0.2")
    front = fault_proxy(htpasswd_registry)
    front.redirect("GET", "/blobs/sha256:", storage.url, times=None)
    target_repo = unique_repo()

    async def main():
        async with registries({front.host: htpasswd_registry.credentials}) as regs:
            return await copy_image(regs, f"{front.host}/{pushed.repo}:v1",
                                    f"{second_plain_registry.host}/{target_repo}:v1")

    run(main())
    assert_same_image(pushed, second_plain_registry.host, target_repo)
    redirected = storage.requests_matching("GET", "/blobs/")
    assert len(redirected) == len(pushed.blobs)
    assert all("Authorization" not in r.headers for r in redirected)
    assert all("Authorization" in r.headers for r in front.requests_matching("GET", "/blobs/"))


def test_registry_warning_header_is_shown(push_image, fault_proxy, plain_registry, caplog):
    pushed = push_image("oci")
    proxy = fault_proxy(plain_registry)
    proxy.fail("HEAD", "/manifests/", status=404, headers={"Warning": '299 - "this repository is deprecated"'})

    async def main():
        async with registries() as regs:
            return await regs.client(reference.parse(f"{proxy.host}/{pushed.repo}").repository).resolve_digest(pushed.repo, "v1")

    with caplog.at_level(logging.WARNING, logger="reconciler.registry"):
        assert run(main()) is None
    assert "registry warning: this repository is deprecated" in caplog.text


def test_plain_http_only_for_loopback_or_named_insecure_hosts(plain_registry, tls_registry):
    from reconciler.registry.reference import is_loopback
    from reconciler.registry.transport import Transport

    assert is_loopback("localhost:5000") and is_loopback("127.3.4.5:80") and is_loopback("[::1]:5000")
    assert not is_loopback("registry.example.com") and not is_loopback("10.0.0.1:5000")
    named = TransportOptions(insecure_registries=frozenset({"registry.example.com"}))
    assert named.allows_plain_http("registry.example.com:5000") and named.is_insecure("registry.example.com")
    assert not TransportOptions().allows_plain_http("registry.example.com")

    async def scheme(host, options=TransportOptions(ca_file=tls_registry.ca_file)):
        transport = Transport(host, options)
        try:
            return (await transport.base_url()).split(":", 1)[0]
        finally:
            await transport.aclose()

    # a public name is never even probed for plain HTTP (no network needed); loopback is probed
    assert run(scheme("registry.example.com")) == "https"
    assert run(scheme(plain_registry.host)) == "http"
    assert run(scheme(tls_registry.host)) == "https"


def test_credentials_from_docker_config(push_image, htpasswd_registry, tmp_path, monkeypatch):
    import base64

    pushed = push_image("oci", registry=htpasswd_registry)
    user, password = htpasswd_registry.credentials
    (tmp_path / "config.json").write_text(json.dumps(
        {"auths": {htpasswd_registry.host: {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}}}
    ))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    monkeypatch.delenv("REGISTRY_AUTH_FILE", raising=False)
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    from reconciler.registry.credentials import lookup

    async def main():
        async with Registries(TransportOptions(retry=FAST_RETRY), lookup) as regs:
            return await regs.client(reference.parse(pushed.ref).repository).resolve_digest(pushed.repo, "v1")

    assert str(run(main())) == pushed.digest


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
    from reconciler.registry.credentials import lookup

    async def main():
        async with Registries(TransportOptions(retry=FAST_RETRY), lookup) as regs:
            return await regs.client(reference.parse(pushed.ref).repository).resolve_digest(pushed.repo, "v1")

    assert str(run(main())) == pushed.digest
    assert [(r.method, r.grant_type, r.username, r.status) for r in issuer.requests] == [
        ("POST", "refresh_token", "tester", 200)
    ]


def test_insecure_registry_skips_tls_verification(push_image, tls_registry):
    pushed = push_image("oci", registry=tls_registry)
    repository = reference.parse(pushed.ref).repository

    async def head(insecure):
        async with registries(insecure_registries=insecure) as regs:
            return await regs.client(repository).resolve_digest(pushed.repo, "v1")

    assert str(run(head(frozenset({tls_registry.host})))) == pushed.digest
    with pytest.raises(RegistryError, match="certificate"):
        run(head(frozenset({"other.example:5000"})))


def test_tags_are_listed_and_a_missing_repository_has_none(push_image, plain_registry, fault_proxy):
    """docker-registry 2.8 answers a tags list in one page whatever ``n`` asks (paging through
    ``Link`` is covered by the referrers listing, in test_referrers.py)."""
    image = push_image("oci")
    with RawRegistry(plain_registry) as raw:
        for tag in ("a", "b", "c", "d"):
            assert raw.put_manifest(image.repo, tag, image.manifest, image.media_type).status_code == 201
    proxy = fault_proxy(plain_registry)

    async def main():
        async with Registries(TransportOptions(), lambda registry: None) as regs:
            client = regs.client(reference.parse(f"{proxy.host}/{image.repo}:v1").repository)
            return await client.tags(image.repo, page_size=2), await client.tags("no/such/repository")

    tags, none = asyncio.run(main())

    assert sorted(tags) == ["a", "b", "c", "d", "v1"] and len(tags) == 5
    assert proxy.count("GET", "/tags/list") == 2
    assert proxy.requests_matching("GET", "/tags/list")[0].path.endswith("/tags/list?n=2")
    assert none == []
