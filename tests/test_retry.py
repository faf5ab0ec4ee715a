"""The retry policy (reconciler/registry/retry.py) through real registries behind a fault-injecting proxy."""

from __future__ import annotations

import pytest

from reconciler.registry import reference
from reconciler.registry.copy import BlobTransferFailed
from reconciler.registry.errors import ResponseError
from tests.helpers_clients import FAST_RETRY, assert_same_image, largest_blob, mirror, registries, run


def test_retries_transient_failures_and_honours_retry_after(push_image, fault_proxy, plain_registry,
                                                            second_plain_registry, unique_repo):
    pushed = push_image("oci-index")
    proxy = fault_proxy(plain_registry)
    proxy.fail("GET", "/manifests/", status=503, headers={"Retry-After": "1"}, times=1)
    proxy.fail("GET", "/blobs/sha256:", status=429, times=2)
    proxy.drop("GET", "/blobs/sha256:", times=1)
    target_repo = unique_repo()

    mirror(f"{proxy.host}/{pushed.repo}:v1", f"{second_plain_registry.host}/{target_repo}:v1")
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


def test_retries_do_not_nest_one_budget_per_blob_transfer(push_image, fault_proxy, plain_registry,
                                                          second_plain_registry, unique_repo):
    pushed = push_image("oci")
    layer = largest_blob(pushed)
    target = fault_proxy(second_plain_registry)
    target.fail("PUT", f"digest=sha256%3A{layer}", status=503, times=None)

    with pytest.raises(BlobTransferFailed, match="^writing the target: .*HTTP 503"):
        mirror(f"{plain_registry.host}/{pushed.repo}:v1", f"{target.host}/{unique_repo()}:v1")
    assert target.count("PUT", f"digest=sha256%3A{layer}") == FAST_RETRY.attempts
