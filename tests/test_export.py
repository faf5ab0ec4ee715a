"""export.py: the lock's images in one OCI image layout, read back by skopeo (an independent
reader) with their locked digests; every blob once, named by the sha256 of its bytes."""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

import yaml

from tests.harness import cosign as cosign_keys
from tests.harness.artifacts import push_artifact, push_referrers_index, subject_descriptor
from tests.harness.images import MiB, build_large_image, build_oci_index, linux
from tests.harness.rawhttp import RawRegistry
from tests.harness.sigstore import GITHUB_ISSUER, PrivateSigstore, attach_bundle
from tests.helpers_cli import cli_env, run_cli, write_images

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
    three = build_oci_index("three platforms", platforms=(linux("amd64"), linux("arm64", "v8"), linux("s390x")))
    index, subset, single = push_image(three), push_image("oci-index"), push_image("oci")
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


def reachable(blobs: dict[str, bytes], roots: list[str]) -> set[str]:
    """Every digest the manifests ``roots`` reference, through indexes, read from the layout's own files."""
    seen, pending = set(), list(roots)
    while pending:
        digest = pending.pop()
        if digest in seen:
            continue
        seen.add(digest)
        try:
            document = json.loads(blobs[digest])
        except (KeyError, ValueError):  # a layer, or (the test's failure) a blob the layout lacks
            document = None
        if isinstance(document, dict) and "schemaVersion" in document:
            pending += [child["digest"] for child in document.get("manifests", ())]
            pending += [blob["digest"] for blob in [document.get("config", {}), *document.get("layers", ())] if blob]
    return seen


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
    # Exactly what the lock reaches, each once (the twin's blobs are the single's): nothing more, nothing less.
    roots = [pin.get("subset", {}).get("digest", pin["digest"]) for pin in pins(tmp_path)] + [
        referrer["digest"] for pin in pins(tmp_path) for referrer in pin.get("referrers", ())]
    assert set(blobs) == reachable(blobs, roots)
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


# -- killed and run again; a signed image across the gap (issue 24) --------------------------------


def served_blob_bytes(source, since: int = 0) -> int:
    """The blob bytes the proxy passed back from the source in its requests from number ``since`` on
    (it records each answer's body size once the answer is sent whole)."""
    return sum(request.response_bytes for request in source.requests[since:]
               if request.method == "GET" and "/blobs/sha256:" in request.url_path)


class _Holding:
    """A proxy handler's output that stops, ``after`` bytes in (headers and all), until ``release``."""

    def __init__(self, output, after: int, held: threading.Event, release: threading.Event) -> None:
        self.output, self.left, self.held, self.release = output, after, held, release

    def write(self, data: bytes) -> int:
        written = self.output.write(data)
        self.left -= len(data)
        if self.left <= 0 and not self.held.is_set():
            self.output.flush()
            self.held.set()
            self.release.wait(120)
        return written

    def __getattr__(self, name: str):
        return getattr(self.output, name)


def hold_answer(proxy, path: str, after: int) -> tuple[threading.Event, threading.Event]:
    """Make ``proxy`` stop in the middle of its answer to the first GET of ``path`` (a regexp), ``after``
    bytes in, until the second event returned is set; the first is set once it holds. The fault proxy
    delays only before an answer, so this wraps its handler's output."""
    held, release = threading.Event(), threading.Event()
    handler = proxy._server.RequestHandlerClass
    forward = handler._forward

    def holding(self, rec, rule, pull_limit):
        if self.command == "GET" and re.search(path, self.path) and not held.is_set():
            self.wfile = _Holding(self.wfile, after, held, release)
        return forward(self, rec, rule, pull_limit)

    handler._forward = holding
    return held, release


def test_an_export_killed_mid_way_finishes_when_run_again_reading_less_than_a_whole_export(
    tmp_path, plain_registry, second_plain_registry, push_image, unique_repo, fault_proxy
):
    seed = int(os.environ.get("EXPORT_KILL_SEED", random.randrange(2 ** 32)))
    chosen = random.Random(seed)
    source = fault_proxy(plain_registry)
    images = [push_image(build_large_image(f"resume-{seed}-{n}", size=chosen.choice((4, 6, 8)) * MiB))
              for n in range(3)]
    write_images(tmp_path, f"{second_plain_registry.host}/{unique_repo('mirror')}/",
                 [{"source": f"{source.host}/{image.repo}:v1"} for image in images])
    assert run_cli(tmp_path, "lock").code == 0
    asked = len(source.requests)
    assert run_cli(tmp_path, "export", "whole").code == 0
    whole = served_blob_bytes(source, asked)
    held_image = chosen.choice(images)  # its big layer's answer stops half-way while the rest are exported
    big = max(held_image.blobs, key=held_image.blobs.get)
    held, release = hold_answer(source, f"/{held_image.repo}/blobs/{big}$", after=held_image.blobs[big] // 2)
    asked = len(source.requests)

    blobs, hex_ = tmp_path / "layout" / "blobs" / "sha256", big.split(":")[1]

    def mid_way() -> bool:
        """The big layer half sent and some of it in a file; another blob sent whole and kept."""
        names = os.listdir(blobs) if blobs.is_dir() else []
        return held.is_set() and served_blob_bytes(source, asked) > 0 and any(
            hex_ in name and (blobs / name).stat().st_size > 0 for name in names) and any(
            not name.startswith(".") and hex_ not in name for name in names)

    export = subprocess.Popen([sys.executable, "-m", "reconciler", "export", "layout"], cwd=tmp_path,
                              env=cli_env(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(600):  # at most a minute
            try:
                if mid_way():
                    break
            except FileNotFoundError:  # a temporary renamed meanwhile
                pass
            assert export.poll() is None, f"export ended before it was killed (seed {seed})"
            time.sleep(0.1)
        else:
            raise AssertionError(f"the export never got mid-way (seed {seed})")
    finally:
        os.kill(export.pid, signal.SIGKILL)
        export.wait()
        release.set()

    kept = {name: (blobs / name).read_bytes() for name in os.listdir(blobs) if not name.startswith(".")}
    assert kept, f"nothing written before the kill (seed {seed})"
    assert all(hashlib.sha256(data).hexdigest() == name for name, data in kept.items()), f"seed {seed}"
    assert hex_ not in kept, f"seed {seed}"
    asked = len(source.requests)

    again = run_cli(tmp_path, "export", "layout")

    assert again.code == 0, f"seed {seed}: {again}"
    manifests = {image.digest: image.manifest for image in images}
    assert sorted(pin["digest"] for pin in pins(tmp_path)) == sorted(manifests)
    for pin in pins(tmp_path):
        assert skopeo_raw(f"oci:{tmp_path / 'layout'}:{pin['target']}") == manifests[pin["digest"]], f"seed {seed}"
    assert not [name for name in os.listdir(blobs) if name.startswith(".")], f"seed {seed}"
    rerun = served_blob_bytes(source, asked)
    assert 0 < rerun < whole, f"seed {seed}: the rerun read {rerun} blob bytes, a whole export {whole}"


SIGSTORE = PrivateSigstore("test_export")
IDENTITY = "https://github.com/acme/app/.github/workflows/release.yml@refs/tags/v1.0.0"


def signed_export(tmp_path, plain_registry, second_plain_registry, push_image, unique_repo, fault_proxy):
    """An image with a keyless Sigstore bundle, locked under ``verify:`` through a proxy to its source and
    exported to ``layout``; a copy, ``damaged``, whose bundle blob has one byte flipped; then the proxy
    answers nothing but 503. Returns the proxy, requests it had seen, image, bundle, bundle blob, target."""
    source = fault_proxy(plain_registry)
    image = push_image("oci")
    signed = SIGSTORE.sign_image(image.digest.removeprefix("sha256:"), IDENTITY)
    with RawRegistry(plain_registry) as raw:
        bundle = attach_bundle(raw, image.repo, subject_descriptor(image.manifest, image.media_type), signed)
    SIGSTORE.write_trusted_root(tmp_path / "trusted_root.json")
    mirror = unique_repo("mirror")
    (tmp_path / "images.yaml").write_text(yaml.safe_dump({
        "targetRepoPrefix": f"{second_plain_registry.host}/{mirror}/",
        "verify": {"keyless": {"issuer": GITHUB_ISSUER, "identity": IDENTITY}, "trustedRoot": "trusted_root.json"},
        "images": [{"source": f"{source.host}/{image.repo}:v1"}]}, sort_keys=False))
    assert run_cli(tmp_path, "lock").code == 0
    assert pins(tmp_path)[0]["signature"]["digest"] == bundle.digest
    assert run_cli(tmp_path, "export", "layout").code == 0
    shutil.copytree(tmp_path / "layout", tmp_path / "damaged")
    blob = "sha256:" + hashlib.sha256(signed).hexdigest()
    damaged = tmp_path / "damaged" / "blobs" / "sha256" / blob.split(":")[1]
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    source.fail(None, ".*", status=503, times=None)
    target = f"{mirror}/{source.host.replace(':', '_')}/{image.repo}"
    return source, len(source.requests), image, bundle, blob, target


def test_a_signed_image_is_checked_again_from_the_export_offline_and_a_damaged_bundle_copies_nothing(
    tmp_path, plain_registry, second_plain_registry, push_image, unique_repo, fault_proxy
):
    source, asked, image, bundle, blob, target = signed_export(
        tmp_path, plain_registry, second_plain_registry, push_image, unique_repo, fault_proxy)

    refused = run_cli(tmp_path, "apply", "--from", "damaged")

    assert refused.code == 1, str(refused)
    assert "Apply: 0 copied, 0 unchanged" in refused.stdout, str(refused)
    lines = [line for line in refused.stdout_lines if "failed:" in line or "refused:" in line]
    assert len(lines) == 1 and blob in lines[0], str(refused)
    with RawRegistry(second_plain_registry) as raw:
        assert raw.head_manifest(target, "v1").status_code == 404
        assert raw.head_manifest(target, bundle.digest).status_code == 404
        assert all(raw.head_blob(target, digest).status_code == 404 for digest in [*image.blobs, blob])

    applied = run_cli(tmp_path, "apply", "--from", "layout")

    assert applied.code == 0, str(applied)
    assert len(source.requests) == asked
    with RawRegistry(second_plain_registry) as raw:
        assert raw.get_manifest(target, "v1").content == image.manifest
        assert raw.get_manifest(target, bundle.digest).content == bundle.raw


def test_a_damaged_bundle_in_the_export_is_named_as_the_images_signature(
    tmp_path, plain_registry, second_plain_registry, push_image, unique_repo, fault_proxy
):
    _, _, _, bundle, _, _ = signed_export(tmp_path, plain_registry, second_plain_registry, push_image,
                                          unique_repo, fault_proxy)

    refused = run_cli(tmp_path, "apply", "--from", "damaged")

    lines = [line for line in refused.stdout_lines if "failed:" in line or "refused:" in line]
    assert len(lines) == 1 and "signature" in lines[0] and bundle.digest in lines[0], str(refused)
