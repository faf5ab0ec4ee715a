"""reconciler/oci/manifest.py over plain bytes: which media type a manifest is taken for (its body,
else its Content-Type, else its shape), what is refused, and what an image or index references.

(A JSON bomb nested 10,000 deep is in test_limits.py; a null annotations map on a cosign layer is
in test_cosign.py; refusals seen end to end through ``lock`` are in test_media_types.py.)
"""

from __future__ import annotations

import json

import pytest

from reconciler.oci import mediatypes
from reconciler.oci.digest import Digest
from reconciler.oci.errors import OCIError
from reconciler.oci.manifest import Descriptor, InvalidManifest, Manifest, Platform, parse
from reconciler.oci.mediatypes import DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST

CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
FOREIGN = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
NON_DISTRIBUTABLE = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"


def digest_of(name: str) -> Digest:
    return Digest.of(name.encode())


def descriptor(media_type: str, name: str, **more: object) -> dict:
    return {"mediaType": media_type, "digest": str(digest_of(name)), "size": len(name), **more}


def image_body(*layers: dict, media_type: str | None = OCI_MANIFEST) -> dict:
    body = {"schemaVersion": 2, "config": descriptor(CONFIG, "config"), "layers": list(layers)}
    if media_type is not None:
        body["mediaType"] = media_type
    return body


def index_body(*children: dict, media_type: str | None = OCI_INDEX) -> dict:
    body = {"schemaVersion": 2, "manifests": list(children)}
    if media_type is not None:
        body["mediaType"] = media_type
    return body


def parsed(body: dict | bytes, content_type: str | None = None) -> Manifest:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return parse(data, content_type, Digest.of(data))


def refusal(body: dict | bytes, content_type: str | None = None) -> str:
    with pytest.raises(InvalidManifest) as raised:
        parsed(body, content_type)
    return str(raised.value)


# --- the media type ------------------------------------------------------------------------


@pytest.mark.parametrize("content_type", [None, "application/json", "text/plain; charset=utf-8", OCI_INDEX])
def test_the_bodys_own_media_type_wins_over_a_generic_content_type(content_type):
    assert parsed(index_body(), content_type).media_type == OCI_INDEX


@pytest.mark.parametrize("served", [OCI_INDEX, DOCKER_MANIFEST_LIST, DOCKER_MANIFEST,
                                    f"{OCI_INDEX}; charset=utf-8"])
def test_a_body_without_media_type_takes_a_manifest_content_type(served):
    """OCI allows a body without ``mediaType``; the registry's Content-Type (parameters dropped) then says."""
    assert parsed(index_body(media_type=None), served).media_type == mediatypes.served(served)


@pytest.mark.parametrize(("body", "expected"), [
    (index_body(media_type=None), OCI_INDEX),
    (image_body(media_type=None), OCI_MANIFEST),
])
@pytest.mark.parametrize("content_type", [None, "application/json"])
def test_a_body_with_no_type_anywhere_is_known_by_its_shape(body, expected, content_type):
    assert parsed(body, content_type).media_type == expected


def test_a_content_type_naming_another_manifest_type_than_the_body_is_refused():
    """Which of the two would the lock pin? Neither: the registry contradicts itself."""
    body = index_body()
    message = refusal(body, DOCKER_MANIFEST_LIST)
    assert message.endswith(f"is served as {DOCKER_MANIFEST_LIST} but its body says '{OCI_INDEX}'")


@pytest.mark.parametrize(("body", "content_type", "named"), [
    ({"schemaVersion": 2, "mediaType": "application/vnd.example+json"}, None, "'application/vnd.example+json'"),
    ({"schemaVersion": 2}, "application/json", "'application/json'"),
    ({"schemaVersion": 3, "manifests": []}, None, "None"),
    ({"schemaVersion": 2, "config": {}}, None, "None"),  # an image needs layers too to be known by shape
])
def test_a_type_that_is_no_manifest_type_is_refused_and_named(body, content_type, named):
    assert refusal(body, content_type).endswith(f"has unsupported media type {named}")


def test_schema_1_is_refused_whatever_it_is_served_as():
    body = {"schemaVersion": 1, "name": "app", "tag": "1", "fsLayers": []}
    assert "has schemaVersion 1: " in refusal(body, DOCKER_MANIFEST)


@pytest.mark.parametrize(("data", "problem"), [
    (b"[1, 2]", "is not a JSON object"),
    (b'"manifest"', "is not a JSON object"),
    (b'{"schemaVersion": 2, "mediaType": 7}', "has a mediaType that is not a string"),
])
def test_a_body_that_is_no_manifest_object_is_refused(data, problem):
    assert refusal(data).endswith(problem)


def test_bytes_that_are_not_json_are_refused_in_one_line_naming_the_digest():
    data = b'{"schemaVersion": 2,\n\n  "mediaType": '
    message = refusal(data)
    assert message.startswith(f"manifest {Digest.of(data)} is not JSON: ")
    assert "\n" not in message


def test_an_invalid_manifest_is_an_oci_error_so_it_fails_its_image_only():
    assert issubclass(InvalidManifest, OCIError)


def test_the_bytes_are_kept_exactly_as_given():
    """The digest is of these bytes: a manifest is never serialized again."""
    data = b'{ "schemaVersion" : 2 ,"mediaType":"' + OCI_INDEX.encode() + b'","manifests":[] }\n'
    manifest = parse(data, None, Digest.of(data))
    assert manifest.data is data
    assert manifest.digest == Digest.of(data)


# --- what it references --------------------------------------------------------------------


def test_an_index_lists_its_children_with_platforms_and_no_blobs():
    manifest = parsed(index_body(
        descriptor(OCI_MANIFEST, "arm", platform={"os": "linux", "architecture": "arm", "variant": "v7"}),
        descriptor(OCI_MANIFEST, "amd", platform={"os": "linux", "architecture": "amd64"}),
        descriptor(OCI_MANIFEST, "attestation"),
    ))

    assert manifest.is_index
    assert [child.digest for child in manifest.children()] == [digest_of("arm"), digest_of("amd"),
                                                                digest_of("attestation")]
    assert manifest.children()[0].platform == Platform("linux", "arm", "v7")
    assert manifest.platforms() == ("linux/amd64", "linux/arm/v7")
    assert manifest.blobs() == () and manifest.layers() == ()


def test_an_image_has_blobs_config_first_and_no_children():
    manifest = parsed(image_body(descriptor(LAYER, "one"), descriptor(LAYER, "two")))

    assert not manifest.is_index
    assert [blob.digest for blob in manifest.blobs()] == [digest_of("config"), digest_of("one"), digest_of("two")]
    assert manifest.children() == () and manifest.platforms() == ()


@pytest.mark.parametrize("skipped_type", [FOREIGN, NON_DISTRIBUTABLE])
def test_non_distributable_layers_are_no_blobs_to_copy_but_are_still_layers(skipped_type):
    """Windows base layers live at Microsoft's URLs; a registry is not expected to hold them."""
    foreign = descriptor(skipped_type, "foreign", urls=["https://example.com/layer"])
    manifest = parsed(image_body(descriptor(LAYER, "ours"), foreign))

    assert [blob.digest for blob in manifest.blobs()] == [digest_of("config"), digest_of("ours")]
    assert [layer.digest for layer in manifest.layers()] == [digest_of("ours"), digest_of("foreign")]
    assert manifest.layers()[1].urls == ("https://example.com/layer",)


def test_null_annotations_on_an_index_child_read_as_none():
    manifest = parsed(index_body(descriptor(OCI_MANIFEST, "child", annotations=None)))
    assert manifest.children()[0].annotations == {}


def test_unknown_descriptor_keys_are_ignored():
    """Later OCI versions add fields (artifactType, data); an older reader must still find the digest."""
    child = descriptor(OCI_MANIFEST, "child", artifactType="application/example", data="e30=")
    assert parsed(index_body(child)).children() == (Descriptor(OCI_MANIFEST, digest_of("child"), 5),)


@pytest.mark.parametrize(("child", "problem"), [
    ({"mediaType": OCI_MANIFEST, "size": 1}, "$.manifests[0].digest"),
    ({"mediaType": OCI_MANIFEST, "digest": "sha256:short", "size": 1}, "expected Digest @ $.manifests[0].digest"),
    ({"mediaType": OCI_MANIFEST, "digest": str(digest_of("x")), "size": "big"}, "$.manifests[0].size"),
])
def test_a_malformed_child_is_refused_in_one_line_naming_the_problem(child, problem):
    manifest = parsed(index_body(child))
    with pytest.raises(InvalidManifest) as raised:
        manifest.children()
    message = str(raised.value)
    assert message.startswith(f"manifest {manifest.digest} is malformed: ")
    assert problem in message
    assert "\n" not in message


def test_an_image_without_config_is_malformed_when_its_blobs_are_read():
    manifest = parsed({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": []})
    with pytest.raises(InvalidManifest, match="is malformed: .*config"):
        manifest.blobs()
