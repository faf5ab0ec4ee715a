"""Blob reads that go on after a cut (reconciler/registry/resumable.py), through the fault proxy in front of
docker-registry: a Range request from the last byte received, a source that ignores Range read again,
hostile answers to the Range request refused, and the retry budget bounding it all."""

from __future__ import annotations

import pytest

from reconciler.registry.copy import BlobTransferFailed
from tests.harness.images import build_large_image
from tests.harness.rawhttp import RawRegistry
from tests.helpers_clients import FAST_RETRY, assert_same_image, largest_blob, mirror

MiB = 1024 * 1024
CUT = 3 * MiB


def source_reads(proxy, layer: str) -> list:
    return proxy.requests_matching("GET", f"/blobs/sha256:{layer}")


def cut_source(push_image, fault_proxy, plain_registry, after_bytes: int = CUT, **truncate):
    """The large image (one 8 MiB layer) behind a fault proxy that cuts the layer's answer after ``after_bytes``."""
    pushed = push_image("large")
    layer = largest_blob(pushed)
    source = fault_proxy(plain_registry)
    source.truncate("GET", f"/blobs/sha256:{layer}", after_bytes=after_bytes, **truncate)
    return pushed, layer, pushed.blobs[f"sha256:{layer}"], source


def assert_blob_stored(registry, repo: str, pushed, layer: str) -> None:
    with RawRegistry(registry) as raw:
        response = raw.head_blob(repo, f"sha256:{layer}")
        assert response.status_code == 200
        assert int(response.headers["Content-Length"]) == pushed.blobs[f"sha256:{layer}"]


@pytest.mark.parametrize("reset", [False, True], ids=["ended-early", "reset"])
def test_a_blob_cut_short_goes_on_with_a_range_request(reset, push_image, fault_proxy, plain_registry,
                                                       second_plain_registry, unique_repo):
    pushed, layer, size, source = cut_source(push_image, fault_proxy, plain_registry, reset=reset)
    target_repo = unique_repo()

    copier, _ = mirror(f"{source.host}/{pushed.repo}:v1", f"{second_plain_registry.host}/{target_repo}:v1")
    assert_same_image(pushed, second_plain_registry.host, target_repo)
    assert_blob_stored(second_plain_registry, target_repo, pushed, layer)
    first, then = source_reads(source, layer)
    assert (first.action, first.status, "Range" in first.headers) == ("truncate", 200, False)
    start = int(then.headers["Range"].removeprefix("bytes=").removesuffix("-"))
    assert then.status == 206 and 0 < start <= CUT
    assert first.response_bytes + then.response_bytes <= size + CUT - start
    assert copier.stats.blobs_uploaded == len(pushed.blobs)


def test_a_source_that_ignores_range_is_read_again_from_byte_0(push_image, fault_proxy, plain_registry,
                                                                second_plain_registry, unique_repo):
    pushed, layer, size, source = cut_source(push_image, fault_proxy, plain_registry)
    source.strip_headers("GET", f"/blobs/sha256:{layer}", "Range")
    target_repo = unique_repo()

    mirror(f"{source.host}/{pushed.repo}:v1", f"{second_plain_registry.host}/{target_repo}:v1")
    assert_same_image(pushed, second_plain_registry.host, target_repo)
    assert_blob_stored(second_plain_registry, target_repo, pushed, layer)
    reads = source_reads(source, layer)
    assert [(r.action, r.status) for r in reads] == [("truncate", 200), ("strip", 200)]
    assert "Range" in reads[1].headers  # asked for, and not passed on: the registry answered it whole


def test_a_source_that_cuts_every_time_spends_the_retry_budget(push_image, fault_proxy, plain_registry,
                                                               second_plain_registry, unique_repo):
    """Each answer cut after 1.5 MiB (a read goes on from the last whole MiB received): the 8 MiB never arrive."""
    pushed, layer, size, source = cut_source(push_image, fault_proxy, plain_registry, 3 * MiB // 2, times=None)

    with pytest.raises(BlobTransferFailed, match=f"^reading the source: .*blob sha256:{layer}: [0-9]+ of {size} bytes read "
                       f"in {FAST_RETRY.attempts} tries, the retry budget; the last: .*the answer ended early"):
        mirror(f"{source.host}/{pushed.repo}:v1", f"{second_plain_registry.host}/{unique_repo()}:v1")
    reads = source_reads(source, layer)
    assert len(reads) == FAST_RETRY.attempts
    assert all("Range" in r.headers for r in reads[1:]), [(r.headers.get("Range"), r.response_bytes) for r in reads]


def test_a_range_request_redirected_elsewhere_carries_no_credentials(push_image, fault_proxy, htpasswd_registry,
                                                                     plain_registry, second_plain_registry,
                                                                     unique_repo):
    """A CDN's answer cut short: the Range request goes to the registry again, whose redirect is followed
    under the origin rule (no Authorization to another origin), as the first GET's was."""
    image = build_large_image("resume-redirect")
    repo = unique_repo()
    pushed = push_image(image, registry=htpasswd_registry, repo=repo)
    push_image(image, registry=plain_registry, repo=repo)
    layer = largest_blob(pushed)
    cdn = fault_proxy(plain_registry)
    cdn.truncate("GET", f"/blobs/sha256:{layer}", after_bytes=CUT)
    source = fault_proxy(htpasswd_registry)
    source.redirect("GET", f"/blobs/sha256:{layer}", cdn.url, times=None)
    target_repo = unique_repo()

    mirror(f"{source.host}/{repo}:v1", f"{second_plain_registry.host}/{target_repo}:v1",
           {source.host: htpasswd_registry.credentials})
    assert_same_image(pushed, second_plain_registry.host, target_repo)
    asked = [r for r in source_reads(source, layer) if r.status == 307]
    assert len(asked) == 2 and "Range" in asked[1].headers and "Authorization" in asked[1].headers
    served = source_reads(cdn, layer)
    assert [(r.status, r.headers.get("Range")) for r in served] == [(200, None), (206, asked[1].headers["Range"])]
    assert not any("Authorization" in r.headers for r in served)


def hostile_answers(size: int, start: int) -> dict[str, tuple[dict[str, str], bytes, str]]:
    """Answers to ``Range: bytes=<start>-``: headers, body, and what the refusal says."""
    rest = b"\0" * (size - start)
    right = f"bytes {start}-{size - 1}/{size}"
    return {
        "wrong-start": ({"Content-Range": f"bytes {start - 1}-{size - 1}/{size}"}, b"\0" + rest,
                        f"answered with Content-Range 'bytes {start - 1}-"),
        "wrong-total": ({"Content-Range": f"bytes {start}-{size}/{size + 1}"}, rest + b"\0",
                        f"answered with Content-Range 'bytes {start}-{size}/{size + 1}', not '{right}'"),
        "no-content-range": ({}, rest, "answered with Content-Range '\\(none\\)'"),
        "longer-than-asked": ({"Content-Range": right}, rest + b"\0" * 10, f"more than the {size} bytes expected"),
    }


@pytest.mark.parametrize("case", ["wrong-start", "wrong-total", "no-content-range", "longer-than-asked"])
def test_a_hostile_answer_to_the_range_request_fails_the_blob(case, push_image, fault_proxy, plain_registry,
                                                              second_plain_registry, unique_repo):
    pushed, layer, size, source = cut_source(push_image, fault_proxy, plain_registry)
    headers, body, refusal = hostile_answers(size, CUT)[case]
    source.fail("GET", f"/blobs/sha256:{layer}", status=206, body=body, times=None,
                headers={"Content-Type": "application/octet-stream", **headers})
    target_repo = unique_repo()

    with pytest.raises(BlobTransferFailed, match=f"^reading the source: .*blob sha256:{layer}: .*{refusal}"):
        mirror(f"{source.host}/{pushed.repo}:v1", f"{second_plain_registry.host}/{target_repo}:v1")
    reads = source_reads(source, layer)
    assert [r.headers.get("Range") for r in reads] == [None, f"bytes={CUT}-"], "one Range request, not retried"
    with RawRegistry(second_plain_registry) as raw:
        assert raw.head_blob(target_repo, f"sha256:{layer}").status_code == 404


def test_a_source_whose_bytes_change_between_answers_is_refused(push_image, fault_proxy, plain_registry,
                                                                second_plain_registry, unique_repo):
    """A 200 to the Range request is read from byte 0 again: the bytes already passed on must hash as before."""
    pushed, layer, size, source = cut_source(push_image, fault_proxy, plain_registry)
    source.fail("GET", f"/blobs/sha256:{layer}", status=200, body=b"\0" * size, times=None,
                headers={"Content-Type": "application/octet-stream"})

    with pytest.raises(BlobTransferFailed, match="answered the same bytes differently when asked again"):
        mirror(f"{source.host}/{pushed.repo}:v1", f"{second_plain_registry.host}/{unique_repo()}:v1")
