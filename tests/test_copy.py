"""Copying images (reconciler/registry/copy.py) between real docker-registry processes, checked with skopeo."""

from __future__ import annotations

import pytest

from reconciler.oci import reference
from reconciler.oci.digest import Digest
from reconciler.registry.copy import BlobTransferFailed
from tests.harness.rawhttp import RawRegistry
from tests.harness.skopeo import skopeo_inspect_raw
from tests.helpers_clients import assert_same_image, copy_image, largest_blob, mirror, registries, run


@pytest.mark.parametrize("kind", ["oci-index", "docker-list", "docker", "oci"])
def test_copy_keeps_every_digest(kind, push_image, plain_registry, second_plain_registry, unique_repo):
    pushed = push_image(kind)
    target_repo = unique_repo("mirror")

    copier, manifest = mirror(pushed.ref, f"{second_plain_registry.host}/{target_repo}:v1")
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
            manifest = await copier.copy_referenced(regs.repository(source.repository), Digest.parse(pushed.digest),
                                                    regs.repository(target.repository))
            await regs.repository(target.repository).put_manifest(str(manifest.digest), manifest)
            # what a long run must not keep: a finished placement's task (10,000 images hold 40,000)
            assert len(copier._blob_tasks) == 2 * len(pushed.blobs)
            assert not [task for task in copier._blob_tasks.values() if task is not None]
            return copier.stats, uploaded

    stats, uploaded_first = run(main())
    assert uploaded_first == len(pushed.blobs)
    assert stats.blobs_uploaded == len(pushed.blobs)
    assert stats.blobs_mounted == len(pushed.blobs)
    assert skopeo_inspect_raw(f"{second_plain_registry.host}/{second}@{pushed.digest}") == pushed.manifest


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

    copier, _ = mirror(pushed.ref, f"{token_registry.host}/{target_repo}:v1",
                       {token_registry.host: token_registry.credentials})
    stats = copier.stats
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


def test_blob_with_wrong_bytes_is_refused(push_image, fault_proxy, plain_registry, second_plain_registry, unique_repo):
    pushed = push_image("oci")
    proxy = fault_proxy(plain_registry)
    layer = max(pushed.blobs, key=pushed.blobs.get)
    size = pushed.blobs[layer]
    proxy.fail("GET", f"/blobs/{layer}$", status=200, body=b"x" * size,
               headers={"Content-Type": "application/octet-stream"}, times=None)
    target_repo = unique_repo()

    with pytest.raises(BlobTransferFailed, match=f"^reading the source: .*blob {layer}: expected digest {layer}, got sha256:"):
        mirror(f"{proxy.host}/{pushed.repo}:v1", f"{second_plain_registry.host}/{target_repo}:v1")
    with RawRegistry(second_plain_registry) as raw:
        assert raw.head_blob(target_repo, layer).status_code == 404
        assert raw.head_manifest(target_repo, pushed.digest).status_code == 404


def test_a_blob_upload_refused_is_restarted_whole_in_a_new_session(push_image, fault_proxy, plain_registry,
                                                                    second_plain_registry, unique_repo):
    """A 503 to the streamed PUT (an answer: the upload was not cut) and a source blob cut short: each try
    opens a new session and reads the source again from byte 0."""
    pushed = push_image("oci")
    layer = largest_blob(pushed)
    source = fault_proxy(plain_registry)
    source.truncate("GET", f"/blobs/sha256:{layer}", after_bytes=1000, times=1)
    target = fault_proxy(second_plain_registry)
    target.fail("PUT", f"digest=sha256%3A{layer}", status=503, times=1)
    target_repo = unique_repo()

    mirror(f"{source.host}/{pushed.repo}:v1", f"{target.host}/{target_repo}:v1")
    assert_same_image(pushed, second_plain_registry.host, target_repo)
    # A small layer cut after 1000 bytes: none had arrived yet (they come by the MiB), so no Range.
    assert [r.action for r in source.requests_matching("GET", f"/blobs/sha256:{layer}")] == ["truncate", "pass", "pass"]
    assert target.count("GET", "/blobs/uploads/") == 0, "an answered upload is not asked where it stands"
    puts = target.requests_matching("PUT", f"digest=sha256%3A{layer}")
    assert [r.status for r in puts] == [503, 201]
    assert len({r.path.split("?", 1)[0] for r in puts}) == 2, "the second PUT reused the first upload session"
