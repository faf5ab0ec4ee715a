"""Runs that overlap: two applies of one lock at once, and an apply next to skopeo, into the same repositories.

Both must end exit 0 with every target holding exactly the locked bytes. Nothing here
can make two writers deterministic; each case runs its pair over fresh repositories
of several images that share blobs, several times, which is where the races showed.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
import yaml

from tests.harness import images as harness_images
from tests.harness.skopeo import skopeo_copy, skopeo_inspect_raw
from tests.helpers_cli import run_cli, write_images

ROUNDS = 10


def at_once(*calls: Callable[[], object]) -> list[object]:
    with ThreadPoolExecutor(len(calls)) as pool:
        futures = [pool.submit(call) for call in calls]
        return [future.result() for future in futures]


@pytest.fixture(scope="module")
def shared_blob_images(plain_registry):
    """Three images with layers in common (one index, and one of its platform images twice)."""
    index = harness_images.build_image("oci-index", seed="overlap")
    single = harness_images.build_image("oci", seed="overlap")
    return [harness_images.push_image(image, plain_registry, f"overlap/{name}", "v1")
            for name, image in (("index", index), ("single", single), ("again", single))]


def locked_mirror(tmp_path, images, prefix: str) -> list[str]:
    """Lock ``images`` for a mirror under ``prefix``; their targets, as the lock names them."""
    sources = [f"{image.host}/{image.repo}:v1" for image in images]
    write_images(tmp_path, prefix, [{"source": source} for source in sources])
    locked = run_cli(tmp_path, "lock")
    assert locked.code == 0, str(locked)
    targets = {pin["source"]: pin["target"] for pin in yaml.safe_load((tmp_path / "images.lock").read_text())["images"]}
    return [targets[source] for source in sources]


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_two_applies_of_one_lock_at_once_both_succeed(round_, tmp_path, shared_blob_images,
                                                      second_plain_registry, unique_repo):
    prefix = f"{second_plain_registry.host}/{unique_repo()}/"
    targets = locked_mirror(tmp_path, shared_blob_images, prefix)

    results = at_once(lambda: run_cli(tmp_path, "apply"), lambda: run_cli(tmp_path, "apply"))

    for result in results:
        assert result.code == 0, str(result)
        assert "Traceback" not in result.stderr, str(result)
    for image, target in zip(shared_blob_images, targets):
        assert skopeo_inspect_raw(target) == image.manifest


@pytest.mark.parametrize("round_", range(3))
def test_an_apply_next_to_skopeo_copies_into_the_same_repositories(round_, tmp_path, shared_blob_images,
                                                                   second_plain_registry, unique_repo):
    prefix = f"{second_plain_registry.host}/{unique_repo()}/"
    targets = locked_mirror(tmp_path, shared_blob_images, prefix)
    copies = [
        lambda image=image, target=target: skopeo_copy(f"docker://{image.host}/{image.repo}:v1", f"docker://{target}")
        for image, target in zip(shared_blob_images, targets)
    ]

    applied, *copied = at_once(lambda: run_cli(tmp_path, "apply"), *copies)

    assert applied.code == 0, str(applied)
    assert all(result.returncode == 0 for result in copied), [result.stderr for result in copied]
    for image, target in zip(shared_blob_images, targets):
        assert skopeo_inspect_raw(target) == image.manifest
