"""The registry API client (reconciler/registry/client.py) against real docker-registry processes: manifests
are checked against their digest, type and size, missing ones are NotFound, tags are listed."""

from __future__ import annotations

import pytest

from reconciler.oci import reference
from reconciler.oci.digest import Digest, DigestMismatch
from reconciler.oci.errors import OCIError
from reconciler.registry.client import Deletion, NotFound
from reconciler.registry.errors import RegistryError
from tests.harness.rawhttp import RawRegistry
from tests.harness.skopeo import SkopeoError, skopeo_inspect_raw
from tests.helpers_clients import assert_same_image, mirror, registries, run


def test_manifest_with_wrong_bytes_is_refused(push_image, fault_proxy, plain_registry, unique_repo):
    pushed = push_image("oci-index")
    proxy = fault_proxy(plain_registry)
    child = pushed.children[0]
    proxy.fail("GET", f"/manifests/{child.digest}$", status=200, body=pushed.children[1].raw,
               headers={"Content-Type": child.media_type}, times=None)

    async def main():
        async with registries() as regs:
            repository = regs.repository(reference.parse(f"{proxy.host}/{pushed.repo}").repository)
            await repository.get_manifest(Digest.parse(child.digest))

    with pytest.raises(DigestMismatch, match=child.digest):
        run(main())


def test_manifest_content_type_must_match_body(push_image, fault_proxy, plain_registry):
    pushed = push_image("oci")
    proxy = fault_proxy(plain_registry)
    proxy.fail("GET", "/manifests/", status=200, body=pushed.manifest, times=None,
               headers={"Content-Type": "application/vnd.docker.distribution.manifest.v2+json"})

    async def main():
        async with registries() as regs:
            repository = regs.repository(reference.parse(f"{proxy.host}/{pushed.repo}").repository)
            await repository.get_manifest(Digest.parse(pushed.digest))

    with pytest.raises(OCIError, match="served as application/vnd.docker.distribution.manifest.v2"):
        run(main())


def test_oversized_manifest_is_refused_before_reading(push_image, fault_proxy, plain_registry):
    pushed = push_image("oci")
    proxy = fault_proxy(plain_registry)
    proxy.fail("GET", "/manifests/", status=200, body=b" " * (4 * 1024 * 1024 + 1), times=None,
               headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"})

    async def main():
        async with registries() as regs:
            repository = regs.repository(reference.parse(f"{proxy.host}/{pushed.repo}").repository)
            await repository.get_manifest("v1")

    with pytest.raises(OCIError, match="over the 4 MiB limit"):
        run(main())


def test_a_manifest_cut_short_is_fetched_again(push_image, fault_proxy, plain_registry,
                                                second_plain_registry, unique_repo):
    pushed = push_image("oci-index")
    proxy = fault_proxy(plain_registry)
    proxy.truncate("GET", "/manifests/", after_bytes=20, times=2)
    target_repo = unique_repo()

    mirror(f"{proxy.host}/{pushed.repo}:v1", f"{second_plain_registry.host}/{target_repo}:v1")
    assert_same_image(pushed, second_plain_registry.host, target_repo)
    assert [r.action for r in proxy.requests_matching("GET", "/manifests/")][:2] == ["truncate", "truncate"]


def test_unknown_tag_is_not_found(push_image):
    pushed = push_image("oci")
    repository = reference.parse(pushed.ref).repository

    async def main():
        async with registries() as regs:
            remote = regs.repository(repository)
            assert await remote.resolve_digest("nope") is None
            await remote.get_manifest("nope")

    with pytest.raises(NotFound, match="manifest nope not found"):
        run(main())


def test_tags_are_listed_and_a_missing_repository_has_none(push_image, plain_registry, fault_proxy):
    """docker-registry 2.8 answers a tags list in one page whatever ``n`` asks (paging through
    ``Link`` is covered by the referrers listing, in test_referrers.py)."""
    image = push_image("oci")
    with RawRegistry(plain_registry) as raw:
        for tag in ("a", "b", "c", "d"):
            assert raw.put_manifest(image.repo, tag, image.manifest, image.media_type).status_code == 201
    proxy = fault_proxy(plain_registry)

    async def main():
        async with registries() as regs:
            repository = regs.repository(reference.parse(f"{proxy.host}/{image.repo}:v1").repository)
            missing = regs.repository(reference.parse(f"{proxy.host}/no/such/repository").repository)
            return await repository.tags(page_size=2), await missing.tags()

    tags, none = run(main())

    assert sorted(tags) == ["a", "b", "c", "d", "v1"] and len(tags) == 5
    assert proxy.count("GET", "/tags/list") == 2
    assert proxy.requests_matching("GET", "/tags/list")[0].path.endswith("/tags/list?n=2")
    assert none == []


def _deletions(repository_ref: str, *identifiers: str, credentials=None) -> list[Deletion]:
    """Each identifier DELETEd in turn, in one run."""

    async def main():
        async with registries(credentials) as regs:
            repository = regs.repository(reference.parse(repository_ref).repository)
            return [await repository.delete_manifest(identifier) for identifier in identifiers]

    return run(main())


def test_a_manifest_is_deleted_by_digest_and_its_tag_deletion_is_unsupported(push_image, plain_registry):
    """docker-registry 2.8 reads a tag DELETE as a digest (400 DIGEST_INVALID): unsupported, and
    the tag stays; by digest: deleted (every tag with it), then gone."""
    pushed = push_image("oci")

    by_tag, by_digest, again = _deletions(pushed.ref, "v1", pushed.digest, pushed.digest)

    assert (by_tag, by_digest, again) == (Deletion.UNSUPPORTED, Deletion.DELETED, Deletion.GONE)
    with pytest.raises(SkopeoError):
        skopeo_inspect_raw(pushed.ref)


def test_a_registry_with_deletion_off_answers_unsupported_and_keeps_the_image(push_image, undeleting_registry):
    pushed = push_image("oci", registry=undeleting_registry)

    assert _deletions(pushed.ref, "v1", pushed.digest) == [Deletion.UNSUPPORTED, Deletion.UNSUPPORTED]
    assert skopeo_inspect_raw(f"{undeleting_registry.host}/{pushed.repo}:v1") == pushed.manifest


@pytest.mark.parametrize("status, body", [
    (500, b'{"errors":[{"code":"UNKNOWN","message":"storage on fire"}]}'),
    # The UNSUPPORTED code past the cap an error body is read to is not read: not unsupported.
    (400, b'{"errors":[{"code":"DENIED","message":"' + b"x" * (1024 * 1024) + b'"},{"code":"UNSUPPORTED"}]}'),
    (403, b"\n".join([b"<html>"] * 10_000)),
])
def test_any_other_answer_to_a_delete_is_one_line(push_image, fault_proxy, plain_registry, status, body):
    pushed = push_image("oci")
    proxy = fault_proxy(plain_registry)
    proxy.fail("DELETE", "/manifests/", status=status, body=body, times=None)

    with pytest.raises(RegistryError) as raised:
        _deletions(f"{proxy.host}/{pushed.repo}", pushed.digest)
    message = str(raised.value)
    assert f"DELETE manifests/{pushed.digest} failed with HTTP {status}" in message
    assert "\n" not in message and len(message) < 1000
    assert skopeo_inspect_raw(f"{plain_registry.host}/{pushed.repo}:v1") == pushed.manifest
