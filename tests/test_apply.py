"""apply.py: copies start as soon as a target is found lacking its image, not after the whole plan."""

from __future__ import annotations

from tests.harness.skopeo import skopeo_inspect_raw
from tests.helpers_cli import run_cli, write_images


def test_an_image_is_copied_while_another_target_is_still_being_asked(
    tmp_path, push_image, plain_registry, second_plain_registry, unique_repo, fault_proxy
):
    base = unique_repo("pipeline")
    quick, slow = (push_image("oci", repo=f"{base}/{name}") for name in ("quick", "slow"))
    target = fault_proxy(second_plain_registry)
    mirror = unique_repo("mirror")
    write_images(tmp_path, f"{target.host}/{mirror}/", [{"source": f"{plain_registry.host}/{image.repo}:v1"}
                                                        for image in (quick, slow)])
    assert run_cli(tmp_path, "lock").code == 0
    target.delay("HEAD", f"/{slow.repo}/manifests/v1$", seconds=3.0)  # the slow target's first question

    applied = run_cli(tmp_path, "apply")

    assert applied.code == 0, applied.stdout + applied.stderr
    asked_slow = target.requests_matching("HEAD", f"/{slow.repo}/manifests/v1$")[0]
    tagged_quick = target.requests_matching("PUT", f"/{quick.repo}/manifests/v1$")[0]
    assert tagged_quick.time < asked_slow.time + 3.0  # copied and tagged while that HEAD was held
    for image in (quick, slow):
        prefix = f"{second_plain_registry.host}/{mirror}/{plain_registry.host.replace(':', '_')}"
        assert skopeo_inspect_raw(f"{prefix}/{image.repo}:v1") == image.manifest
