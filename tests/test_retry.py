"""The retry policy (reconciler/registry/retry.py) through real registries behind a fault-injecting proxy;
and Retry-After as RFC 9110 writes it, anything else being as if absent."""

from __future__ import annotations

import email.utils
import time

import httpx
import pytest

from reconciler.oci import reference
from reconciler.oci.limits import NUMBER_DIGITS
from reconciler.registry.copy import BlobTransferFailed
from reconciler.registry.errors import ResponseError
from reconciler.registry.retry import MAX_RETRY_AFTER, retry_after, worth_retrying
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
            await regs.repository(reference.parse(f"{proxy.host}/{pushed.repo}").repository).resolve_digest("v1")

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


def answer(retry_after_value: str, status: int = 503) -> httpx.Response:
    """A registry's answer with that Retry-After, as bytes on the wire (UTF-8 where not ASCII)."""
    return httpx.Response(status, headers={"Retry-After": retry_after_value.encode()})


@pytest.mark.parametrize(("value", "seconds"), [
    ("0", 0.0), ("7", 7.0), (" 120 ", 120.0), ("9" * NUMBER_DIGITS, float("9" * NUMBER_DIGITS)),
])
def test_retry_after_in_seconds_is_ascii_digits(value, seconds):
    assert retry_after(answer(value)) == seconds


@pytest.mark.parametrize("value", [
    "inf", "Infinity", "-inf", "nan", "1e30", "1.5", "-5", "+5", "0x10", "\u00b9\u00b2", "\u0663", "\uff17",
    "9" * (NUMBER_DIGITS + 1), "soon", "",
])
def test_any_other_retry_after_is_as_if_absent_and_the_answer_is_retried(value):
    assert retry_after(answer(value)) is None
    assert worth_retrying(answer(value)) and worth_retrying(answer(value, 429))


def test_retry_after_as_an_http_date_near_past_or_far():
    soon = retry_after(answer(email.utils.formatdate(time.time() + 30, usegmt=True)))
    assert 28 <= soon <= 31
    assert retry_after(answer("Sun, 06 Nov 1994 08:49:37 GMT")) == 0.0
    far = answer("Fri, 31 Dec 9999 23:59:59 GMT")
    assert retry_after(far) > 250_000_000_000 and not worth_retrying(far)  # failed at once, saying when


def test_a_huge_retry_after_is_not_waited_for():
    huge = answer("9" * NUMBER_DIGITS)
    assert retry_after(huge) > MAX_RETRY_AFTER and not worth_retrying(huge)
