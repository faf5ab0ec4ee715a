"""Platform subsets of an index: over index bytes built here, and once through a real registry."""

from __future__ import annotations

import asyncio
import json

import pytest
import yaml

from reconciler.oci import mediatypes, platforms, reference
from reconciler.oci.digest import Digest
from reconciler.oci.errors import OCIError
from reconciler.oci.manifest import parse
from reconciler.oci.platforms import PlatformSubsetRefused, subset
from reconciler.registry.options import TransportOptions
from reconciler.registry.registries import Registries
from tests.harness import images
from tests.harness.skopeo import skopeo_inspect_raw
from tests.helpers_cli import run_cli, write_images

SUBJECT = {"mediaType": mediatypes.OCI_MANIFEST, "digest": str(Digest.of(b"subject")), "size": 321}


def child(name: str, platform: str, **fields) -> dict:
    """An index entry for a made-up manifest ``name`` of ``platform`` (``os/arch[/variant]``)."""
    os_name, architecture, *variant = platform.split("/")
    return {
        "mediaType": mediatypes.OCI_MANIFEST,
        "digest": str(Digest.of(name.encode())),
        "size": 500 + len(name),
        "platform": {"os": os_name, "architecture": architecture} | ({"variant": variant[0]} if variant else {}),
    } | fields


def attestation(of: dict) -> dict:
    """What docker buildx lists beside each image: its provenance, for platform unknown/unknown."""
    return child(f"attestation of {of['digest']}", "unknown/unknown", annotations={
        "vnd.docker.reference.digest": of["digest"],
        "vnd.docker.reference.type": "attestation-manifest",
    })


def index_of(entries: list[dict], *, media_type: str = mediatypes.OCI_INDEX, indent: int | None = 3, **fields):
    body = {"schemaVersion": 2, "mediaType": media_type, "manifests": entries} | fields
    data = json.dumps(body, indent=indent).encode()
    return parse(data, media_type, Digest.of(data))


def entries_of(manifest) -> list[dict]:
    return json.loads(manifest.data)["manifests"]


AMD64 = child("amd64", "linux/amd64", annotations={"org.opencontainers.image.ref.name": "1.22"})
ARM64 = child("arm64", "linux/arm64")
ARM64_V8 = child("arm64 v8", "linux/arm64/v8")
ARM_V6 = child("arm v6", "linux/arm/v6")
ARM_V7 = child("arm v7", "linux/arm/v7")
S390X = child("s390x", "linux/s390x", urls=["https://example.invalid/s390x"])
WINDOWS = child("windows", "windows/amd64")
WINDOWS["platform"]["os.version"] = "10.0.20348.2655"


def test_children_in_source_order_each_kept_whole():
    source = index_of([WINDOWS, S390X, ARM_V7, AMD64, ARM64_V8])
    result = subset(source, ["linux/amd64", "windows/amd64", "linux/s390x"])
    assert entries_of(result) == [WINDOWS, S390X, AMD64]


def test_index_fields_and_annotations_kept():
    fields = {
        "artifactType": "application/vnd.example.bundle",
        "annotations": {"org.opencontainers.image.created": "2024-07-02T00:00:00Z", "com.example.note": "Grüße ✓"},
        "subject": SUBJECT,
        "com.example.extension": {"kept": [1, 2, 3]},
    }
    source = index_of([AMD64, ARM64_V8, S390X], **fields)
    result = json.loads(subset(source, ["linux/arm64"]).data)
    assert result == {"schemaVersion": 2, "mediaType": mediatypes.OCI_INDEX, "manifests": [ARM64_V8]} | fields


def test_one_fixed_serialization():
    entries = [child("amd64", "linux/amd64") | {"digest": "sha256:" + "a" * 64, "size": 7},
               child("arm64", "linux/arm64/v8") | {"digest": "sha256:" + "b" * 64, "size": 8}]
    source = index_of(entries, annotations={"org.opencontainers.image.description": "Bücher ✓"})
    result = subset(source, ["linux/arm64"])
    assert result.data == (
        '{"annotations":{"org.opencontainers.image.description":"Bücher ✓"},'
        '"manifests":[{"digest":"sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",'
        '"mediaType":"application/vnd.oci.image.manifest.v1+json",'
        '"platform":{"architecture":"arm64","os":"linux","variant":"v8"},"size":8}],'
        '"mediaType":"application/vnd.oci.image.index.v1+json","schemaVersion":2}'
    ).encode()
    assert result.digest == Digest.of(result.data)
    assert result.media_type == mediatypes.OCI_INDEX


def test_same_bytes_whatever_the_request_order_or_source_layout():
    entries = [AMD64, ARM64_V8, ARM_V7, S390X]
    pretty, compact = index_of(entries, indent=3), index_of(entries, indent=None)
    assert pretty.digest != compact.digest
    results = {
        subset(source, platforms).data
        for source in (pretty, compact)
        for platforms in (["linux/amd64", "linux/arm/v7"], ["linux/arm/v7", "linux/amd64"],
                          ["linux/arm/v7", "linux/amd64", "linux/arm/v7"])
    }
    assert len(results) == 1
    assert subset(pretty, ["linux/amd64", "linux/arm/v7"]) == subset(pretty, ["linux/amd64", "linux/arm/v7"])


def test_attestations_follow_their_child():
    source = index_of([AMD64, ARM64_V8, S390X, attestation(AMD64), attestation(ARM64_V8), attestation(S390X)])
    result = subset(source, ["linux/s390x", "linux/arm64"])
    assert entries_of(result) == [ARM64_V8, S390X, attestation(ARM64_V8), attestation(S390X)]


def test_unannotated_unknown_platform_is_not_an_attestation():
    unknown = child("artifact", "unknown/unknown")
    source = index_of([AMD64, unknown])
    assert entries_of(subset(source, ["linux/amd64"])) == [AMD64]
    assert entries_of(subset(source, ["unknown/unknown"])) == [unknown]


@pytest.mark.parametrize(
    ("platforms", "expected"),
    [
        (["linux/arm64"], [ARM64, ARM64_V8]),
        (["linux/arm64/v8"], [ARM64_V8]),
        (["linux/arm"], [ARM_V6, ARM_V7]),
        (["linux/arm/v7"], [ARM_V7]),
        (["linux/arm/v6", "linux/arm/v7"], [ARM_V6, ARM_V7]),
    ],
)
def test_variants(platforms, expected):
    source = index_of([ARM_V6, ARM64, ARM_V7, AMD64, ARM64_V8])
    assert entries_of(subset(source, platforms)) == expected


def test_docker_manifest_list_stays_one():
    entries = [child(name, platform) | {"mediaType": mediatypes.DOCKER_MANIFEST}
               for name, platform in (("amd64", "linux/amd64"), ("arm64", "linux/arm64/v8"))]
    result = subset(index_of(entries, media_type=mediatypes.DOCKER_MANIFEST_LIST), ["linux/amd64"])
    assert result.media_type == mediatypes.DOCKER_MANIFEST_LIST
    assert json.loads(result.data) == {"schemaVersion": 2, "mediaType": mediatypes.DOCKER_MANIFEST_LIST,
                                       "manifests": entries[:1]}


def refusal(source, platforms) -> str:
    with pytest.raises(PlatformSubsetRefused) as refused:
        subset(source, platforms)
    assert isinstance(refused.value, OCIError)
    message = str(refused.value)
    assert "\n" not in message
    return message


def test_a_single_image_is_refused():
    data = json.dumps({"schemaVersion": 2, "mediaType": mediatypes.OCI_MANIFEST,
                       "config": child("config", "linux/amd64"), "layers": []}).encode()
    image = parse(data, mediatypes.OCI_MANIFEST, Digest.of(data))
    assert refusal(image, ["linux/amd64"]) == (
        f"manifest {image.digest} is a single image ({mediatypes.OCI_MANIFEST}), not an index of platforms to choose from"
    )


def test_missing_platforms_are_named_with_what_the_index_has():
    source = index_of([AMD64, ARM_V7, attestation(AMD64)])
    assert refusal(source, ["linux/amd64", "linux/s390x", "linux/arm/v6"]) == (
        f"index {source.digest} has no linux/s390x, linux/arm/v6; it has linux/amd64, linux/arm/v7"
    )
    assert refusal(source, ["unknown/unknown"]) == (
        f"index {source.digest} has no unknown/unknown; it has linux/amd64, linux/arm/v7"
    )


def test_an_empty_index_has_no_platforms():
    source = index_of([])
    assert refusal(source, ["linux/amd64"]) == f"index {source.digest} has no linux/amd64; it has no platforms listed"


@pytest.mark.parametrize("platforms", [[], ["linux"], ["linux/arm/v7/extra"], ["linux//v7"]])
def test_malformed_requests_are_refused(platforms):
    source = index_of([AMD64])
    message = refusal(source, platforms)
    assert message == (f"index {source.digest}: no platforms asked for" if not platforms
                       else f"{platforms[0]!r} is not a platform: write os/arch or os/arch/variant")


def test_subset_pushed_to_a_real_registry_reads_back_byte_for_byte(push_image, plain_registry):
    """The subset's bytes go in under a tag, and skopeo reads back exactly those bytes."""
    three = images.build_oci_index("platform-subset", platforms=(
        images.linux("amd64"), images.linux("arm64", "v8"), images.linux("s390x")))
    pushed = push_image(three, tag="all")
    repository = reference.parse(pushed.ref).repository

    async def main():
        async with Registries(TransportOptions(), lambda registry: None) as regs:
            remote = regs.repository(repository)
            source = await remote.get_manifest("all")
            two = subset(source, ["linux/s390x", "linux/amd64"])
            stored = await remote.put_manifest("two", two)
            return source, two, stored

    source, two, stored = asyncio.run(main())
    assert source.data == pushed.manifest
    assert stored == two.digest
    served = skopeo_inspect_raw(f"{plain_registry.host}/{pushed.repo}:two")
    assert served == two.data
    assert Digest.of(served) == two.digest
    amd64, _, s390x = pushed.children
    assert [entry["digest"] for entry in json.loads(served)["manifests"]] == [amd64.digest, s390x.digest]


def test_a_platform_without_a_variant_is_any_variant_of_it_for_required_platforms_too():
    available = ["linux/amd64", "linux/arm/v7", "linux/arm64/v8"]

    assert platforms.missing(["linux/arm64", "linux/arm", "linux/amd64"], available) == []
    assert platforms.missing(["linux/arm/v6", "linux/arm64/v8", "linux/s390x"], available) == [
        "linux/arm/v6", "linux/s390x"]


@pytest.mark.parametrize("required", [["linux/amd64"], []], ids=["platforms required", "none required"])
def test_a_single_images_platform_is_recorded_when_the_entry_requires_platforms(
    tmp_path, push_image, plain_registry, fault_proxy, required
):
    """From its config, read only then: so a platform required later can be checked against the pin."""
    pushed = push_image("oci")
    proxy = fault_proxy(plain_registry)
    entry = {"source": f"{proxy.host}/{pushed.repo}:{pushed.tag}"}
    if required:
        entry["platforms"] = required
    write_images(tmp_path, "mirror.example/m/", [entry])

    result = run_cli(tmp_path, "lock")

    assert result.code == 0, str(result)
    (image,) = yaml.safe_load((tmp_path / "images.lock").read_text())["images"]
    assert (image["mediaType"], image["platforms"]) == (mediatypes.OCI_MANIFEST, required)
    assert proxy.count("GET", "/blobs/") == len(required)
    assert run_cli(tmp_path, "lock", "--check").code == 0


def test_lock_refuses_a_subset_of_a_single_image_however_its_head_names_it(
    tmp_path, plain_registry, push_image, unique_repo
):
    """A single image behind a HEAD of its own type once skipped the GET, and so the subset: lock pinned it
    without one, and `lock --check` then said the platforms to keep had changed, for ever."""
    image = push_image("oci")
    write_images(tmp_path, f"{plain_registry.host}/{unique_repo('mirror')}/",
                 [{"source": f"{plain_registry.host}/{image.repo}:v1", "platforms": {"only": ["linux/arm64"]}}])

    locked = run_cli(tmp_path, "lock")

    assert locked.code == 1, str(locked)
    assert len(locked.error_lines) == 1 and "is a single image" in locked.error_lines[0], str(locked)
    assert "Traceback" not in locked.stderr
    assert not (tmp_path / "images.lock").exists()
