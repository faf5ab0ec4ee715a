"""export.py: the lock's images in one OCI image layout, read back by skopeo (an independent
reader) with their locked digests; every blob once, named by the sha256 of its bytes."""

from __future__ import annotations

import hashlib
import os
import subprocess

import yaml

from tests.harness import cosign as cosign_keys
from tests.harness.artifacts import push_artifact, push_referrers_index, subject_descriptor
from tests.harness.rawhttp import RawRegistry
from tests.helpers_cli import run_cli, write_images

SBOM = "application/spdx+json"


def skopeo_raw(location: str) -> bytes:
    """The manifest skopeo reads at ``location`` (``oci:DIR:REF``, ``oci-archive:FILE:REF``), exactly."""
    return subprocess.run(["skopeo", "inspect", "--raw", location], capture_output=True, check=True).stdout


def blob_files(layout) -> dict[str, bytes]:
    root = layout / "blobs" / "sha256"
    return {f"sha256:{name}": (root / name).read_bytes() for name in os.listdir(root)}


def mirrored(tmp_path, plain_registry, second_plain_registry, push_image, unique_repo):
    """A locked mirror of: an index, a subset of another, one image pushed to two repositories
    (its blobs shared), signed (a .sig) and with an SBOM in its fallback index."""
    index, subset, single = push_image("oci-index"), push_image("oci-index"), push_image("oci")
    twin = push_image(single.image, repo=unique_repo("twin"))
    with RawRegistry(plain_registry) as raw:
        signature = cosign_keys.push_signatures(raw, single.repo, single.digest,
                                                [cosign_keys.signature_by(cosign_keys.new_key(), single.digest)])
        sbom = push_artifact(raw, single.repo, subject_descriptor(single.manifest, single.media_type), SBOM, b"{}")
        push_referrers_index(raw, single.repo, single.digest, [sbom])
    source = plain_registry.host
    write_images(tmp_path, f"{second_plain_registry.host}/{unique_repo('mirror')}/", [
        {"source": f"{source}/{index.repo}:v1"},
        {"source": f"{source}/{subset.repo}:v1", "platforms": {"only": ["linux/amd64"]}},
        {"source": f"{source}/{single.repo}:v1"},
        {"source": f"{source}/{twin.repo}:v1"},
    ])
    assert run_cli(tmp_path, "lock").code == 0
    return {"index": index, "subset": subset, "single": single, "twin": twin, "signature": signature, "sbom": sbom}


def pins(tmp_path) -> list[dict]:
    return yaml.safe_load((tmp_path / "images.lock").read_text())["images"]


def test_an_export_holds_every_locked_image_once_and_skopeo_reads_each_by_its_target(
    tmp_path, plain_registry, second_plain_registry, push_image, unique_repo
):
    pushed = mirrored(tmp_path, plain_registry, second_plain_registry, push_image, unique_repo)
    layout = tmp_path / "layout"

    exported = run_cli(tmp_path, "export", str(layout))

    assert exported.code == 0, exported
    for pin in pins(tmp_path):
        pushed_digest = pin.get("subset", {}).get("digest", pin["digest"])
        manifest = skopeo_raw(f"oci:{layout}:{pin['target']}")
        assert "sha256:" + hashlib.sha256(manifest).hexdigest() == pushed_digest
    blobs = blob_files(layout)
    assert all(name == "sha256:" + hashlib.sha256(data).hexdigest() for name, data in blobs.items())
    assert pushed["single"].digest in blobs and pushed["signature"] in blobs and pushed["sbom"].digest in blobs
    assert len([name for name in blobs if name == pushed["single"].digest]) == 1  # the twin's is the same blob
    assert (layout / "images.lock").read_text() == (tmp_path / "images.lock").read_text()
    refs = [entry["annotations"]["org.opencontainers.image.ref.name"]
            for entry in yaml.safe_load((layout / "index.json").read_text())["manifests"]]
    assert sorted(refs) == sorted(pin["target"] for pin in pins(tmp_path))


def test_exporting_again_asks_no_source_and_rewrites_nothing(
    tmp_path, plain_registry, second_plain_registry, push_image, unique_repo, fault_proxy
):
    source = fault_proxy(plain_registry)
    image = push_image("oci-index")
    write_images(tmp_path, f"{second_plain_registry.host}/{unique_repo('mirror')}/",
                 [{"source": f"{source.host}/{image.repo}:v1"}])
    assert run_cli(tmp_path, "lock").code == 0
    layout = tmp_path / "layout"
    assert run_cli(tmp_path, "export", str(layout)).code == 0
    before = {name: os.stat(layout / "blobs" / "sha256" / name.split(":")[1]).st_ino for name in blob_files(layout)}
    asked = len(source.requests)

    again = run_cli(tmp_path, "export", str(layout))

    assert again.code == 0, again
    assert "Export: 0 copied, 1 unchanged" in again.stdout
    assert len(source.requests) == asked
    assert {name: os.stat(layout / "blobs" / "sha256" / name.split(":")[1]).st_ino
            for name in blob_files(layout)} == before


def test_a_tar_export_is_the_same_bytes_for_the_same_lock_and_skopeo_reads_it(
    tmp_path, plain_registry, second_plain_registry, push_image, unique_repo
):
    mirrored(tmp_path, plain_registry, second_plain_registry, push_image, unique_repo)

    first, second = run_cli(tmp_path, "export", "one.tar"), run_cli(tmp_path, "export", "two.tar")

    assert first.code == 0 and second.code == 0, first
    assert (tmp_path / "one.tar").read_bytes() == (tmp_path / "two.tar").read_bytes()
    assert not (tmp_path / "one.tar.partial").exists()
    target = pins(tmp_path)[0]["target"]
    assert "sha256:" + hashlib.sha256(skopeo_raw(f"oci-archive:{tmp_path / 'one.tar'}:{target}")).hexdigest() == \
        pins(tmp_path)[0]["digest"]
    assert "Export: 0 copied, 4 unchanged" in run_cli(tmp_path, "export", "one.tar").stdout


def test_a_blob_whose_bytes_do_not_match_fails_its_image_and_nothing_is_kept_under_its_name(
    tmp_path, plain_registry, second_plain_registry, push_image, unique_repo, fault_proxy
):
    source = fault_proxy(plain_registry)
    broken, sound = push_image("oci"), push_image("docker")
    write_images(tmp_path, f"{second_plain_registry.host}/{unique_repo('mirror')}/",
                 [{"source": f"{source.host}/{image.repo}:v1"} for image in (broken, sound)])
    assert run_cli(tmp_path, "lock").code == 0
    layer = next(digest for digest in broken.blobs if digest not in sound.blobs)
    source.fail("GET", f"/{broken.repo}/blobs/{layer}$", status=200, body=b"x" * broken.blobs[layer], times=None)
    layout = tmp_path / "layout"

    exported = run_cli(tmp_path, "export", str(layout))

    assert exported.code == 1, exported
    assert "failed: " in exported.stdout and layer in exported.stdout
    assert layer not in blob_files(layout)
    assert [entry["digest"] for entry in yaml.safe_load((layout / "index.json").read_text())["manifests"]] == [
        sound.digest]
    assert not [name for name in os.listdir(layout / "blobs" / "sha256") if name.startswith(".")]


def test_a_path_that_cannot_hold_a_layout_is_one_error_line(tmp_path, plain_registry, second_plain_registry,
                                                             push_image, unique_repo):
    image = push_image("oci")
    write_images(tmp_path, f"{second_plain_registry.host}/{unique_repo('mirror')}/",
                 [{"source": f"{plain_registry.host}/{image.repo}:v1"}])
    assert run_cli(tmp_path, "lock").code == 0
    (tmp_path / "taken").write_text("a file\n")

    refused = run_cli(tmp_path, "export", "taken")

    assert refused.code == 1
    assert refused.error_lines == ["error: taken: not a directory"], refused.stderr
    assert "Traceback" not in refused.stderr


# -- across the gap: plan and apply --from the export, never asking a source (issue 24) -----------


def gapped(tmp_path, plain_registry, second_plain_registry, push_image, unique_repo, fault_proxy, layout: str):
    """Two images locked through a proxy to their source, exported to ``layout``; then the proxy
    answers nothing but 503, so a request to the source cannot go unnoticed."""
    source = fault_proxy(plain_registry)
    images = [push_image("oci-index"), push_image("oci")]
    mirror = unique_repo("mirror")
    write_images(tmp_path, f"{second_plain_registry.host}/{mirror}/", [
        {"source": f"{source.host}/{image.repo}:v1"} for image in images])
    assert run_cli(tmp_path, "lock").code == 0
    assert run_cli(tmp_path, "export", layout).code == 0
    source.fail(None, ".*", status=503, times=None)
    asked = len(source.requests)
    targets = [f"{mirror}/{source.host.replace(':', '_')}/{image.repo}" for image in images]
    return source, asked, images, targets


def test_apply_from_a_tar_copies_every_image_asking_no_source_and_again_writes_nothing(
    tmp_path, plain_registry, second_plain_registry, push_image, unique_repo, fault_proxy
):
    source, asked, images, targets = gapped(tmp_path, plain_registry, second_plain_registry, push_image,
                                            unique_repo, fault_proxy, "mirror.tar")

    planned = run_cli(tmp_path, "plan", "--from", "mirror.tar")
    applied = run_cli(tmp_path, "apply", "--from", "mirror.tar")
    again = run_cli(tmp_path, "apply", "--from", "mirror.tar")

    assert planned.code == 0 and "2 to create" in planned.stdout, planned
    assert applied.code == 0, applied
    assert "Apply: 0 copied, 2 unchanged" in again.stdout, again
    assert len(source.requests) == asked
    with RawRegistry(second_plain_registry) as raw:
        for image, target in zip(images, targets):
            assert raw.get_manifest(target, "v1").content == image.manifest


def test_a_corrupted_blob_in_the_export_fails_its_image_only(
    tmp_path, plain_registry, second_plain_registry, push_image, unique_repo, fault_proxy
):
    _, _, images, targets = gapped(tmp_path, plain_registry, second_plain_registry, push_image, unique_repo,
                                   fault_proxy, "layout")
    single = images[1]
    layer = next(digest for digest in single.blobs if digest not in images[0].blobs)
    damaged = tmp_path / "layout" / "blobs" / "sha256" / layer.split(":")[1]
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))

    applied = run_cli(tmp_path, "apply", "--from", "layout")

    assert applied.code == 1, applied
    assert "Apply: 1 copied, 0 unchanged, 0 refused, 1 failed" in applied.stdout
    assert layer in [line for line in applied.stdout_lines if "failed:" in line][0]
    with RawRegistry(second_plain_registry) as raw:
        assert raw.get_manifest(targets[0], "v1").content == images[0].manifest
        assert raw.head_manifest(targets[1], "v1").status_code == 404


def test_an_export_of_another_lock_is_refused_and_nothing_is_written(
    tmp_path, plain_registry, second_plain_registry, push_image, unique_repo, fault_proxy
):
    _, _, _, targets = gapped(tmp_path, plain_registry, second_plain_registry, push_image, unique_repo,
                              fault_proxy, "layout")
    (tmp_path / "layout" / "images.lock").write_text((tmp_path / "images.lock").read_text() + "# another\n")

    refused = run_cli(tmp_path, "apply", "--from", "layout")

    assert refused.code == 1
    assert refused.error_lines == ["error: layout: holds an export of another lock than images.lock; export again, "
                                   "or use its lock"], refused.stderr
    with RawRegistry(second_plain_registry) as raw:
        assert all(raw.head_manifest(target, "v1").status_code == 404 for target in targets)


def test_a_target_tag_that_drifted_is_refused_and_kept_when_applying_from_an_export(
    tmp_path, plain_registry, second_plain_registry, push_image, unique_repo, fault_proxy
):
    _, _, images, targets = gapped(tmp_path, plain_registry, second_plain_registry, push_image, unique_repo,
                                   fault_proxy, "layout")
    other = push_image("docker", registry=second_plain_registry, repo=targets[1])

    applied = run_cli(tmp_path, "apply", "--from", "layout")

    assert applied.code == 1 and "1 copied, 0 unchanged, 1 refused" in applied.stdout, applied
    with RawRegistry(second_plain_registry) as raw:
        assert raw.get_manifest(targets[1], "v1").content == other.manifest
