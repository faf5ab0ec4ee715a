"""The behaviour that makes image-syncer fast, counted in requests and bytes, never in seconds."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import pytest

from reconciler import config, workflow
from reconciler.oci import reference
from reconciler.registry.copy import Copier
from reconciler.registry.registries import Registries
from tests.harness import images as harness_images
from tests.harness.skopeo import skopeo_inspect_raw
from tests.helpers_clients import registries, run

MiB = 1024 * 1024


def write_images(path: Path, prefix: str, sources: list[str]) -> config.Config:
    lines = [f'targetRepoPrefix: "{prefix}"', "images:"] + [f'- source: "{source}"' for source in sources]
    (path / "images.yaml").write_text("\n".join(lines) + "\n")
    return config.load(path / "images.yaml")


async def lock_and_apply(regs: Registries, loaded: config.Config, lock_path: Path):
    result = await workflow.lock(regs, loaded, lock_path)
    assert not result.errors, result.errors
    return await workflow.apply(regs, loaded, lock_path)


def test_shared_blobs_are_fetched_and_uploaded_once_then_mounted(
    tmp_path, push_image, plain_registry, second_plain_registry, unique_repo, fault_proxy
):
    image = harness_images.build_image("oci-index", seed="shared")
    pushed = [push_image(image) for _ in range(4)]  # four repositories holding the same blobs
    source_proxy = fault_proxy(plain_registry)
    target_proxy = fault_proxy(second_plain_registry)
    loaded = write_images(
        tmp_path, f"{target_proxy.host}/{unique_repo()}/", [f"{source_proxy.host}/{p.repo}:v1" for p in pushed]
    )

    async def main():
        async with registries() as regs:
            return await lock_and_apply(regs, loaded, tmp_path / "images.lock")

    report = run(main())

    assert report.ok
    blobs = pushed[0].blobs
    assert report.stats.blobs_uploaded == len(blobs)
    assert report.stats.blobs_mounted == 3 * len(blobs)
    for digest in blobs:
        assert source_proxy.count("GET", f"/blobs/{digest}$") == 1, digest
        assert target_proxy.count("PUT", f"digest={digest.replace(':', '%3A')}") == 1, digest
    mounts = target_proxy.requests_matching("POST", r"mount=")
    assert sorted(r.status for r in mounts) == [201] * (3 * len(blobs)) + [202] * len(blobs)
    assert target_proxy.count("HEAD", "/blobs/") == 0  # the first repository asks by mounting from itself
    # per tag: the plan's HEAD, the re-check right before tagging, one PUT; its answer is the proof
    assert target_proxy.count("HEAD", "/manifests/v1$") == 2 * len(pushed)
    assert target_proxy.count("PUT", "/manifests/v1$") == len(pushed)
    for desired in loaded.desired:
        target = str(desired.target).replace(target_proxy.host, second_plain_registry.host)
        assert skopeo_inspect_raw(target) == image.raw


@pytest.fixture
def mirrored(tmp_path, push_image, plain_registry, second_plain_registry, unique_repo, fault_proxy):
    """Images already mirrored through counting proxies; ``second_run(work)`` runs again on fresh clients."""

    def mirror(kinds):
        pushed = [push_image(kind) for kind in kinds]
        source_proxy = fault_proxy(plain_registry)
        target_proxy = fault_proxy(second_plain_registry)
        loaded = write_images(
            tmp_path, f"{target_proxy.host}/{unique_repo()}/", [f"{source_proxy.host}/{p.repo}:v1" for p in pushed]
        )
        lock_path = tmp_path / "images.lock"

        async def first_run():
            async with registries() as regs:
                await lock_and_apply(regs, loaded, lock_path)

        run(first_run())
        source_proxy.clear()
        target_proxy.clear()

        def second_run(work):
            async def main():
                async with registries() as regs:
                    return await work(regs, loaded, lock_path)

            return run(main())

        return pushed, source_proxy, target_proxy, second_run

    return mirror


def test_no_op_plan_costs_one_head_per_image_per_registry(mirrored):
    """Plus, on the source, its repository's tags list and one referrers API question per
    registry: what refers to the image now, for the note on referrers the lock lacks."""
    pushed, source_proxy, target_proxy, second_run = mirrored(("oci", "docker", "oci-index"))

    plan = second_run(workflow.plan)

    assert {image.action.value for image in plan.images} == {"unchanged"}
    for proxy in (source_proxy, target_proxy):
        heads = [path for method, path in ((r.method, r.url_path) for r in proxy.requests) if method == "HEAD"]
        assert len(heads) == len(pushed) and all("/manifests/" in path for path in heads), heads
    target_calls = [(r.method, r.url_path) for r in target_proxy.requests]
    assert len(target_calls) == len(pushed), target_calls  # no /v2/ ping: the first HEAD shows no auth is wanted
    others = sorted((r.method, r.url_path.rsplit("/", 2)[-2]) for r in source_proxy.requests if r.method != "HEAD")
    assert others == [("GET", "referrers")] + [("GET", "tags")] * len(pushed), others


def test_no_op_apply_asks_only_the_target(mirrored):
    pushed, source_proxy, target_proxy, second_run = mirrored(("oci", "oci-index"))

    report = second_run(workflow.apply)

    assert {image.outcome.value for image in report.images} == {"unchanged"}
    assert source_proxy.requests == []
    calls = [(r.method, r.url_path) for r in target_proxy.requests]
    assert len(calls) == len(pushed) and all(method == "HEAD" for method, _ in calls), calls


def test_memory_does_not_grow_with_layer_size(push_image, second_plain_registry, unique_repo):
    pushed = push_image(harness_images.build_large_image("memory", size=48 * MiB))
    source = reference.parse(pushed.ref)
    target = reference.parse(f"{second_plain_registry.host}/{unique_repo()}:v1")

    async def copy():
        async with registries() as regs:
            digest = await regs.repository(source.repository).resolve_digest("v1")
            async with Copier(regs) as copier:
                await copier.copy_referenced(regs.repository(source.repository), digest,
                                             regs.repository(target.repository))
            return copier.stats

    tracemalloc.start()
    try:
        stats = run(copy())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert stats.bytes_uploaded > 48 * MiB
    assert peak < 12 * MiB, f"peak Python allocations {peak / MiB:.1f} MiB while streaming a 48 MiB layer"


def test_a_rules_tags_list_is_read_once_per_repository(
    tmp_path, push_image, plain_registry, second_plain_registry, unique_repo, fault_proxy
):
    """A rule's selection and the referrers of each tag it selects read one listing: a tags
    list of 200 pages costs 200 requests, not 200 more per selected tag."""
    repo, pages = unique_repo(), 200
    releases = ["1.0.0", "1.1.0", "1.2.0"]
    for tag in releases:
        push_image(harness_images.build_image("oci", seed=tag), repo=repo, tag=tag)
    source = fault_proxy(plain_registry)
    for page in range(pages):
        query = r"n=1000" if page == 0 else rf"n=1000&last=p{page}"
        following = {} if page == pages - 1 else {
            "Link": f'</v2/{repo}/tags/list?n=1000&last=p{page + 1}>; rel="next"'}
        tags = [f"p{page}", *(releases if page == pages - 1 else ())]
        source.fail("GET", rf"/{repo}/tags/list\?{query}$", 200, times=None, headers=following,
                    body=json.dumps({"name": repo, "tags": tags}))
    (tmp_path / "images.yaml").write_text(
        f'targetRepoPrefix: "{second_plain_registry.host}/{unique_repo()}/"\n'
        f'images:\n- source: "{source.host}/{repo}"\n  tags: {{semver: ">=1"}}\n')
    loaded = config.load(tmp_path / "images.yaml")

    async def lock():
        async with registries() as regs:
            return await workflow.lock(regs, loaded, tmp_path / "images.lock")

    result = run(lock())

    assert not result.errors, result.errors
    assert sorted(str(image.source.tag) for image in result.lock.images) == releases
    assert source.count("GET", "/tags/list") == pages
