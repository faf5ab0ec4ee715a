"""registry/referrers.py: finding what refers to an image, against a real docker-registry 2.8.

docker-registry has no referrers API (it answers 404), so these cover the tags: the
spec's fallback index under ``sha256-<hex>`` and cosign's ``.sig``/``.att``/``.sbom``,
for an image and for the children of an index.
"""

from __future__ import annotations

import json

import pytest
import yaml

from reconciler.oci import limits, reference
from reconciler.oci.digest import Digest
from reconciler.oci.errors import OCIError
from reconciler.oci.referrer import COSIGN_ARTIFACT_TYPES, FoundBy
from reconciler.registry.referrers import find
from tests.harness import cosign as cosign_keys
from tests.harness.artifacts import (
    EMPTY_CONFIG, OCI_INDEX, OCI_MANIFEST, Artifact, push_artifact, push_referrers_index, subject_descriptor,
)
from tests.harness.rawhttp import RawRegistry
from tests.harness.skopeo import skopeo_inspect_raw
from tests.helpers_cli import run_cli, write_images
from tests.helpers_clients import registries, run

SBOM = "application/spdx+json"
PROVENANCE = "application/vnd.in-toto+json"


def discovered(registry, repo: str, subjects: list[str], artifact_types=None):
    async def main():
        async with registries() as regs:
            repository = regs.repository(reference.parse(f"{registry.host}/{repo}:x").repository)
            return await find(repository, [Digest.parse(s) for s in subjects], artifact_types)

    return run(main())


def test_an_image_s_fallback_index_and_cosign_tags_are_all_found(plain_registry, push_image):
    image = push_image("oci")
    subject = subject_descriptor(image.manifest, image.media_type)
    with RawRegistry(plain_registry) as raw:
        sbom = push_artifact(raw, image.repo, subject, SBOM, b'{"spdxVersion": "SPDX-2.3"}')
        provenance = push_artifact(raw, image.repo, subject, PROVENANCE, b'{"_type": "statement"}')
        push_referrers_index(raw, image.repo, image.digest, [sbom, provenance])
        signature = push_artifact(raw, image.repo, subject, "ignored", b"payload",
                                  tag=image.digest.replace(":", "-") + ".sig")

    found = discovered(plain_registry, image.repo, [image.digest])

    assert {(str(r.digest), r.artifact_type, r.found_by) for r in found} == {
        (sbom.digest, SBOM, FoundBy.INDEX_TAG),
        (provenance.digest, PROVENANCE, FoundBy.INDEX_TAG),
        (signature.digest, COSIGN_ARTIFACT_TYPES[FoundBy.COSIGN_SIGNATURE], FoundBy.COSIGN_SIGNATURE),
    }
    assert all(str(r.subject) == image.digest and r.media_type.endswith("manifest.v1+json") for r in found)
    assert [str(r.digest) for r in found] == sorted(str(r.digest) for r in found)


def test_referrers_of_an_index_s_children_are_found_and_a_filter_keeps_only_its_types(plain_registry, push_image):
    index = push_image("oci-index")
    child = index.children[0]
    with RawRegistry(plain_registry) as raw:
        attestation = push_artifact(raw, index.repo, {"mediaType": child.media_type, "digest": child.digest,
                                                      "size": child.size}, "x", b"att",
                                    tag=child.digest.replace(":", "-") + ".att")
        sbom = push_artifact(raw, index.repo, subject_descriptor(index.manifest, index.media_type), SBOM, b"{}")
        push_referrers_index(raw, index.repo, index.digest, [sbom])

    everything = discovered(plain_registry, index.repo, [index.digest, *index.child_digests])
    only_sboms = discovered(plain_registry, index.repo, [index.digest, *index.child_digests], frozenset({SBOM}))

    assert {(str(r.subject), str(r.digest), r.found_by) for r in everything} == {
        (child.digest, attestation.digest, FoundBy.COSIGN_ATTESTATION),
        (index.digest, sbom.digest, FoundBy.INDEX_TAG),
    }
    assert [str(r.digest) for r in only_sboms] == [sbom.digest]


def test_an_image_without_referrers_has_none(plain_registry, push_image):
    image = push_image("docker")

    assert discovered(plain_registry, image.repo, [image.digest]) == ()


def test_cosign_tags_name_the_subject_they_belong_to():
    digest = Digest.parse("sha256:" + "ab" * 32)

    assert FoundBy.COSIGN_SBOM.tag(digest) == "sha256-" + "ab" * 32 + ".sbom"
    assert FoundBy.INDEX_TAG.tag(digest) == "sha256-" + "ab" * 32
    assert FoundBy.API.tag(digest) is None


# -- locked and copied -----------------------------------------------------------------


def _signed_source(registry, push_image):
    """An image with a cosign-style signature tag and an SBOM listed in the fallback index."""
    image = push_image("oci")
    subject = subject_descriptor(image.manifest, image.media_type)
    with RawRegistry(registry) as raw:
        sbom = push_artifact(raw, image.repo, subject, SBOM, b'{"spdxVersion": "SPDX-2.3"}')
        push_referrers_index(raw, image.repo, image.digest, [sbom])
        signature = push_artifact(raw, image.repo, subject, "ignored", b"payload",
                                  tag=image.digest.replace(":", "-") + ".sig")
    return image, sbom, signature


def test_lock_pins_referrers_and_apply_writes_them_as_the_target_supports(
    tmp_path, plain_registry, second_plain_registry, push_image, unique_repo
):
    image, sbom, signature = _signed_source(plain_registry, push_image)
    mirror = f"{second_plain_registry.host}/{unique_repo('mirror')}"
    write_images(tmp_path, f"{mirror}/", [{"source": f"{plain_registry.host}/{image.repo}:v1"}])

    assert run_cli(tmp_path, "lock").code == 0
    pinned = yaml.safe_load((tmp_path / "images.lock").read_text())["images"][0]["referrers"]
    planned = run_cli(tmp_path, "plan")
    first = run_cli(tmp_path, "apply")
    again = run_cli(tmp_path, "apply")

    assert pinned == [
        {"subject": image.digest, "digest": digest, "mediaType": OCI_MANIFEST, "artifactType": artifact_type,
         "foundBy": found_by}
        for digest, artifact_type, found_by in sorted([
            (sbom.digest, SBOM, "referrers-tag"),
            (signature.digest, COSIGN_ARTIFACT_TYPES[FoundBy.COSIGN_SIGNATURE], "cosign-sig"),
        ])
    ]
    assert f"copy {plain_registry.host}/{image.repo}:v1@{image.digest[:19]} with 2 referrers" in planned.stdout
    assert first.code == 0 and again.code == 0, first.stdout + first.stderr + again.stdout
    target_repo = f"{mirror}/{plain_registry.host.replace(':', '_')}/{image.repo}"
    tag = image.digest.replace(":", "-")
    assert skopeo_inspect_raw(f"{target_repo}:{tag}.sig") == signature.raw
    assert skopeo_inspect_raw(f"{target_repo}@{sbom.digest}") == sbom.raw
    listed = json.loads(skopeo_inspect_raw(f"{target_repo}:{tag}"))["manifests"]
    assert listed == [{"mediaType": OCI_MANIFEST, "digest": sbom.digest, "size": len(sbom.raw), "artifactType": SBOM}]


def test_referrers_false_pins_none_and_a_filter_pins_only_its_types(
    tmp_path, plain_registry, second_plain_registry, push_image, unique_repo
):
    image, sbom, _ = _signed_source(plain_registry, push_image)
    source = f"{plain_registry.host}/{image.repo}:v1"
    write_images(tmp_path, f"{second_plain_registry.host}/{unique_repo('mirror')}/",
                 [{"source": source, "referrers": False},
                  {"source": source, "tag": "sboms", "referrers": {"artifactTypes": [SBOM]}}])

    assert run_cli(tmp_path, "lock").code == 0
    locked = {entry["target"].rsplit(":", 1)[1]: entry["referrers"]
              for entry in yaml.safe_load((tmp_path / "images.lock").read_text())["images"]}

    assert locked["v1"] == []
    assert [referrer["digest"] for referrer in locked["sboms"]] == [sbom.digest]


# -- a signature required --------------------------------------------------------------


def test_lock_pins_only_sources_signed_by_the_key_and_apply_checks_again(
    tmp_path, plain_registry, second_plain_registry, push_image, unique_repo
):
    trusted, stranger = cosign_keys.new_key(), cosign_keys.new_key()
    cosign_keys.write_public_key(trusted, tmp_path / "cosign.pub")
    signed, unsigned, forged = (push_image("oci"), push_image("docker"), push_image("oci-index"))
    with RawRegistry(plain_registry) as raw:
        signature = cosign_keys.push_signatures(raw, signed.repo, signed.digest,
                                                [cosign_keys.signature_by(trusted, signed.digest)])
        cosign_keys.push_signatures(raw, forged.repo, forged.digest, [cosign_keys.signature_by(stranger, forged.digest)])
    (tmp_path / "images.yaml").write_text(yaml.safe_dump({
        "targetRepoPrefix": f"{second_plain_registry.host}/{unique_repo('mirror')}/",
        "verify": {"cosignKey": "cosign.pub"},
        "images": [{"source": f"{plain_registry.host}/{image.repo}:v1"} for image in (signed, unsigned, forged)],
    }))

    refused = run_cli(tmp_path, "lock")

    assert refused.code == 1 and not (tmp_path / "images.lock").exists()
    errors = "\n".join(refused.stderr_lines)
    assert f"{unsigned.repo}:v1 ({unsigned.digest}): no signature (no Sigstore bundle among its referrers, " \
           f"no tag {cosign_keys.signature_tag(unsigned.digest)}); the cosign key cosign.pub is required" in errors
    assert f"{forged.repo}:v1 ({forged.digest}): no valid cosign signature: 1 checked, the first: signature " \
           "does not verify with the key; the cosign key cosign.pub is required" in errors
    assert signed.repo not in errors

    (tmp_path / "images.yaml").write_text(yaml.safe_dump({
        "targetRepoPrefix": f"{second_plain_registry.host}/{unique_repo('mirror')}/",
        "verify": {"cosignKey": "cosign.pub"},
        "images": [{"source": f"{plain_registry.host}/{signed.repo}:v1"}],
    }))
    assert run_cli(tmp_path, "lock").code == 0
    pinned = yaml.safe_load((tmp_path / "images.lock").read_text())["images"][0]["referrers"]
    assert [referrer["digest"] for referrer in pinned] == [signature]
    with RawRegistry(plain_registry) as raw:  # the signature is replaced by a stranger's after the lock
        cosign_keys.push_signatures(raw, signed.repo, signed.digest, [cosign_keys.signature_by(stranger, signed.digest)])

    applied = run_cli(tmp_path, "apply")

    assert applied.code == 1
    replaced = cosign_keys.signature_tag(signed.digest)
    assert f"refused: {plain_registry.host}/{signed.repo}:v1 ({signed.digest}): its pinned signature {signature} " \
           f"was replaced upstream: the tag {replaced} holds sha256:" in applied.stdout


def test_an_unusable_key_is_one_line_naming_the_file_and_place(tmp_path):
    (tmp_path / "not-a-key.pub").write_text("hello\n")
    (tmp_path / "images.yaml").write_text(
        "targetRepoPrefix: r.example/m/\nimages:\n- source: busybox:1\n  verify: {cosignKey: not-a-key.pub}\n")

    result = run_cli(tmp_path, "lock")

    assert result.code == 1
    assert result.stderr_lines == ['error: images.yaml:4: images[1] (source "busybox:1"): '
                                   "verify.cosignKey: not-a-key.pub: not a PEM public key"]


# -- the referrers API (the fault proxy's shim in front of docker-registry) ------------


def test_referrers_listed_by_the_api_are_pinned_page_by_page_and_written_by_the_api_or_the_fallback(
    tmp_path, plain_registry, second_plain_registry, push_image, unique_repo, fault_proxy
):
    source = fault_proxy(plain_registry)
    source.referrers_api(page_size=1)
    image = push_image("oci")
    with RawRegistry(url=source.url) as raw:  # pushed by digest through the shim: no tag names them
        artifacts = [push_artifact(raw, image.repo, subject_descriptor(image.manifest, image.media_type), kind, body)
                     for kind, body in ((SBOM, b"{}"), (PROVENANCE, b'{"_type": "x"}'))]
    with_api = fault_proxy(second_plain_registry)
    with_api.referrers_api()
    mirrors = {"api": f"{with_api.host}/{unique_repo('api')}", "fallback": f"{second_plain_registry.host}/"
                                                                             f"{unique_repo('fallback')}"}
    runs = {}
    for name, mirror in mirrors.items():
        (tmp_path / name).mkdir()
        write_images(tmp_path / name, f"{mirror}/", [{"source": f"{source.host}/{image.repo}:v1"}])
        assert run_cli(tmp_path / name, "lock").code == 0
        runs[name] = yaml.safe_load((tmp_path / name / "images.lock").read_text())["images"][0], \
            run_cli(tmp_path / name, "apply")

    expected = sorted((artifact.digest, artifact.artifact_type) for artifact in artifacts)
    for entry, applied in runs.values():
        assert [(r["digest"], r["artifactType"], r["foundBy"]) for r in entry["referrers"]] == [
            (digest, kind, "referrers-api") for digest, kind in expected]
        assert applied.code == 0, applied.stdout + applied.stderr
    assert source.count("GET", f"/referrers/{image.digest}") == 2 * 2  # two locks, two pages of one each
    index_tag = image.digest.replace(":", "-")
    repository = f"{source.host.replace(':', '_')}/{image.repo}"
    with RawRegistry(second_plain_registry) as raw:
        api_repo = f"{mirrors['api'].split('/', 1)[1]}/{repository}"
        fallback_repo = f"{mirrors['fallback'].split('/', 1)[1]}/{repository}"
        assert raw.head_manifest(api_repo, index_tag).status_code == 404  # the API lists them there
        listed = raw.get_manifest(fallback_repo, index_tag).json()["manifests"]
        for artifact in artifacts:
            for repo in (api_repo, fallback_repo):
                assert raw.get_manifest(repo, artifact.digest).content == artifact.raw
    assert sorted((entry["digest"], entry["artifactType"]) for entry in listed) == expected
    served = with_api.requests_matching("GET", f"/referrers/{image.digest}")
    assert served, "apply asks the target whether it offers the API"


def test_a_referrer_that_appeared_upstream_after_the_lock_is_a_plan_note_until_lock_upgrade(
    tmp_path, plain_registry, second_plain_registry, push_image, unique_repo, fault_proxy
):
    image = push_image("oci")
    source = fault_proxy(plain_registry)
    write_images(tmp_path, f"{second_plain_registry.host}/{unique_repo('mirror')}/",
                 [{"source": f"{source.host}/{image.repo}:v1"}])
    assert run_cli(tmp_path, "lock").code == 0
    with RawRegistry(plain_registry) as raw:
        sbom = push_artifact(raw, image.repo, subject_descriptor(image.manifest, image.media_type), SBOM, b"{}")
        push_referrers_index(raw, image.repo, image.digest, [sbom])
    source.clear()

    noted = run_cli(tmp_path, "plan")
    asked = sorted((r.method, r.url_path.rsplit("/", 2)[-2]) for r in source.requests)
    assert run_cli(tmp_path, "lock", "--upgrade").code == 0
    source.clear()
    again = run_cli(tmp_path, "plan")
    asked_again = sorted((r.method, r.url_path.rsplit("/", 2)[-2]) for r in source.requests)

    assert noted.code == 0, noted.stderr
    assert ("~ note: 1 referrer upstream that the lock does not pin (application/spdx+json); "
            "`image-syncer lock --upgrade` pins them") in noted.stdout
    # the source HEAD, its tags list, one referrers API question (404: asked once per run), the index tag,
    # and the referrer it lists (whose own subject must be the image)
    assert asked == [("GET", "manifests"), ("GET", "manifests"), ("GET", "referrers"), ("GET", "tags"),
                     ("HEAD", "manifests")], asked
    # pinned now, so checked already: the referrer itself is not fetched again (on Docker Hub a GET is a pull)
    assert asked_again == [("GET", "manifests"), ("GET", "referrers"), ("GET", "tags"), ("HEAD", "manifests")], \
        asked_again
    assert "note:" not in again.stdout and "with 1 referrer" in again.stdout


# -- a hostile or broken source (issue 20) ---------------------------------------------


def _listing(*descriptors: dict) -> bytes:
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": list(descriptors)}).encode()


def _api_lists(proxy, repo: str, subject: str, descriptors: list[dict], page_size: int = 200) -> None:
    """The proxy's referrers API answers ``descriptors`` for ``subject``, a page of ``page_size`` at a time."""
    pages = [descriptors[start:start + page_size] for start in range(0, len(descriptors), page_size)]
    proxy.referrers_api()
    for number, page in enumerate(pages):
        headers = {"Content-Type": OCI_INDEX}
        if number + 1 < len(pages):
            headers["Link"] = f'</v2/{repo}/referrers/{subject}?page={number + 1}>; rel="next"'
        query = rf"\?page={number}" if number else ""
        proxy.fail("GET", f"/referrers/{subject}{query}$", 200, headers=headers, body=_listing(*page), times=None)


def _deep(levels: int) -> bytes:
    return b"[" * levels + b"]" * levels


def _one_image_and_another(push_image):
    """Image 1.0 and, in the same repository, image 1.1."""
    image = push_image("oci", tag="1.0")
    return image, push_image("docker", repo=image.repo, tag="1.1")


@pytest.mark.parametrize("listed_by", ["referrers-api", "referrers-tag"])
def test_a_referrer_listed_under_another_subject_is_not_pinned_nor_written_and_one_warning_names_both(
    tmp_path, plain_registry, second_plain_registry, push_image, unique_repo, fault_proxy, listed_by
):
    source = fault_proxy(plain_registry)
    image, other = _one_image_and_another(push_image)
    with RawRegistry(plain_registry) as raw:
        own = push_artifact(raw, image.repo, subject_descriptor(image.manifest, image.media_type), SBOM, b"{}")
        stranger = push_artifact(raw, image.repo, subject_descriptor(other.manifest, other.media_type), SBOM,
                                 b'{"spdxVersion": "SPDX-2.3"}')
        if listed_by == "referrers-tag":
            push_referrers_index(raw, image.repo, image.digest, [own, stranger])
    if listed_by == "referrers-api":  # the registry's API lists, under 1.0, a referrer of 1.1
        _api_lists(source, image.repo, image.digest, [own.descriptor(), stranger.descriptor()])
    mirror = f"{second_plain_registry.host}/{unique_repo('mirror')}"
    write_images(tmp_path, f"{mirror}/", [{"source": f"{source.host}/{image.repo}:1.0"}])

    locked = run_cli(tmp_path, "lock")
    applied = run_cli(tmp_path, "apply")

    assert locked.code == 0, locked.stderr
    pinned = yaml.safe_load((tmp_path / "images.lock").read_text())["images"][0]["referrers"]
    assert [(r["subject"], r["digest"], r["foundBy"]) for r in pinned] == [(image.digest, own.digest, listed_by)]
    assert [line for line in locked.stderr_lines if line.startswith("WARNING")] == [
        f"WARNING: {source.host}/{image.repo}: {stranger.digest} is listed as a referrer of {image.digest} "
        f"but its subject is {other.digest}; not pinned"]
    assert applied.code == 0, applied.stdout + applied.stderr
    target_repo = f"{mirror.split('/', 1)[1]}/{source.host.replace(':', '_')}/{image.repo}"
    with RawRegistry(second_plain_registry) as raw:
        listed = raw.get_manifest(target_repo, image.digest.replace(":", "-")).json()["manifests"]
        assert raw.head_manifest(target_repo, stranger.digest).status_code == 404
    assert [entry["digest"] for entry in listed] == [own.digest]


def test_apply_never_lists_a_pinned_referrer_in_the_fallback_index_of_another_subject(
    tmp_path, plain_registry, second_plain_registry, push_image, unique_repo
):
    image, other = _one_image_and_another(push_image)
    with RawRegistry(plain_registry) as raw:
        stranger = push_artifact(raw, image.repo, subject_descriptor(other.manifest, other.media_type), SBOM, b"{}")
    mirror = f"{second_plain_registry.host}/{unique_repo('mirror')}"
    write_images(tmp_path, f"{mirror}/", [{"source": f"{plain_registry.host}/{image.repo}:1.0"}])
    assert run_cli(tmp_path, "lock").code == 0
    lock = yaml.safe_load((tmp_path / "images.lock").read_text())  # as a lock made before subjects were checked
    lock["images"][0]["referrers"] = [{"subject": image.digest, "digest": stranger.digest, "mediaType": OCI_MANIFEST,
                                       "artifactType": SBOM, "foundBy": "referrers-tag"}]
    (tmp_path / "images.lock").write_text(yaml.safe_dump(lock, sort_keys=False))

    applied = run_cli(tmp_path, "apply")

    assert applied.code == 1
    assert (f"a referrer was refused: {stranger.digest}'s subject is {other.digest}, not {image.digest}; "
            f"not listed in ") in applied.stdout, applied.stdout
    target_repo = f"{mirror.split('/', 1)[1]}/{plain_registry.host.replace(':', '_')}/{image.repo}"
    with RawRegistry(second_plain_registry) as raw:
        assert raw.head_manifest(target_repo, image.digest.replace(":", "-")).status_code == 404


def test_more_referrers_than_the_cap_refuse_the_image_before_any_is_fetched(
    tmp_path, plain_registry, second_plain_registry, push_image, unique_repo, fault_proxy
):
    image = push_image("oci")
    listed = [Artifact(f"sha256:{number:064x}", b"{}", SBOM) for number in range(limits.REFERRERS_PER_SUBJECT + 1)]
    source = fault_proxy(plain_registry)
    _api_lists(source, image.repo, image.digest, [artifact.descriptor() for artifact in listed])
    mirror = f"{second_plain_registry.host}/{unique_repo('mirror')}"
    write_images(tmp_path, f"{mirror}/", [{"source": f"{source.host}/{image.repo}:v1"}])

    refused = run_cli(tmp_path, "lock")

    assert refused.code == 1 and not (tmp_path / "images.lock").exists()
    assert refused.error_lines == [
        f"error: {mirror}/{source.host.replace(':', '_')}/{image.repo}:v1: {source.host}/{image.repo}: "
        f"{image.digest} has 1001 referrers, more than the limit of 1000; not pinned"], refused.stderr
    assert "Traceback" not in refused.stderr
    assert source.count("GET", "/manifests/sha256:0{40}") == 0  # counted from the listing alone


def test_as_many_referrers_as_the_cap_are_pinned_and_one_more_refuses(plain_registry, push_image, monkeypatch):
    monkeypatch.setattr(limits, "REFERRERS_PER_SUBJECT", 2)
    image, sbom, signature = _signed_source(plain_registry, push_image)

    pinned = discovered(plain_registry, image.repo, [image.digest])
    with RawRegistry(plain_registry) as raw:
        provenance = push_artifact(raw, image.repo, subject_descriptor(image.manifest, image.media_type),
                                   PROVENANCE, b"{}")
        push_referrers_index(raw, image.repo, image.digest, [sbom, provenance])
    with pytest.raises(OCIError, match=f"^{plain_registry.host}/{image.repo}: {image.digest} has 3 referrers, "
                                            "more than the limit of 2; not pinned$"):
        discovered(plain_registry, image.repo, [image.digest])

    assert {str(referrer.digest) for referrer in pinned} == {sbom.digest, signature.digest}


def test_a_listing_nested_10000_deep_fails_the_image_in_one_line(
    tmp_path, plain_registry, second_plain_registry, push_image, unique_repo, fault_proxy
):
    image = push_image("oci")
    source = fault_proxy(plain_registry)
    source.referrers_api()
    source.fail("GET", f"/referrers/{image.digest}$", 200, headers={"Content-Type": OCI_INDEX},
                body=b'{"schemaVersion":2,"manifests":' + _deep(10_000) + b"}", times=None)
    write_images(tmp_path, f"{second_plain_registry.host}/{unique_repo('mirror')}/",
                 [{"source": f"{source.host}/{image.repo}:v1"}])

    refused = run_cli(tmp_path, "lock")

    assert refused.code == 1 and not (tmp_path / "images.lock").exists()
    assert len(refused.error_lines) == 1 and "Traceback" not in refused.stderr, refused.stderr
    assert refused.error_lines[0].endswith(
        f": {source.host}/{image.repo}: a referrers listing is not an image index of descriptors")


@pytest.mark.parametrize("nested", ["sig-manifest", "signed-payload"])
def test_a_signature_nested_10000_deep_is_one_line_naming_its_image_with_verify_or_without(
    tmp_path, plain_registry, second_plain_registry, push_image, unique_repo, nested
):
    key = cosign_keys.new_key()
    cosign_keys.write_public_key(key, tmp_path / "cosign.pub")
    deep, bystander = push_image("oci"), push_image("docker")
    with RawRegistry(plain_registry) as raw:
        cosign_keys.push_signatures(raw, bystander.repo, bystander.digest,
                                    [cosign_keys.signature_by(key, bystander.digest)])
        if nested == "signed-payload":
            payload = cosign_keys.payload(deep.digest).replace(b"null", b'{"a":' * 10_000 + b"1" + b"}" * 10_000)
            cosign_keys.push_signatures(raw, deep.repo, deep.digest,
                                        [cosign_keys.Signature(payload, cosign_keys.sign(key, payload))])
        else:  # docker-registry keeps a member it does not know, however deep
            manifest = (b'{"schemaVersion":2,"mediaType":"%s","config":{"mediaType":"%s","digest":"%s","size":2},'
                        b'"layers":[],"x":%s}' % (OCI_MANIFEST.encode(), EMPTY_CONFIG.encode(),
                                                  raw.push_blob(deep.repo, b"{}").encode(), _deep(9_000)))
            answer = raw.put_manifest(deep.repo, cosign_keys.signature_tag(deep.digest), manifest, OCI_MANIFEST)
            assert answer.status_code == 201, answer.text
    runs = {}
    for verify in (True, False):  # without verify, referrer discovery reads the .sig manifest
        images = {"targetRepoPrefix": f"{second_plain_registry.host}/{unique_repo('mirror')}/",
                  "images": [{"source": f"{plain_registry.host}/{image.repo}:v1"} for image in (deep, bystander)]}
        (tmp_path / "images.yaml").write_text(yaml.safe_dump(
            {**images, "verify": {"cosignKey": "cosign.pub"}} if verify else images))
        runs[verify] = run_cli(tmp_path, "lock"), (tmp_path / "images.lock").exists()

    (verified, written_verified), (unverified, written_unverified) = runs[True], runs[False]
    assert verified.code == 1 and not written_verified, verified.stderr
    for result in (verified, unverified) if nested == "sig-manifest" else (verified,):
        assert len(result.error_lines) == 1 and "Traceback" not in result.stderr, result.stderr
        assert f"{deep.repo}:v1" in result.error_lines[0] and "internal error" not in result.error_lines[0]
    if nested == "signed-payload":
        assert verified.error_lines[0].endswith(f"{deep.repo}:v1 ({deep.digest}): no valid cosign signature: "
                                                "1 checked, the first: payload is not a cosign simple signing "
                                                "payload; the cosign key cosign.pub is required")
        assert unverified.code == 0 and written_unverified, unverified.stderr
    else:
        assert unverified.code == 1 and not written_unverified, unverified.stderr


def test_a_referrer_listed_with_a_type_that_is_no_media_type_is_not_pinned_nor_fetched(
    tmp_path, plain_registry, push_image, unique_repo, fault_proxy
):
    """The lock keeps what a listing says of a type; a 1 MiB "type" would bloat it, so it is not taken."""
    source = fault_proxy(plain_registry)
    image = push_image("oci")
    bloated = "application/vnd.example." + "x" * (1024 * 1024)
    with RawRegistry(plain_registry) as raw:
        own = push_artifact(raw, image.repo, subject_descriptor(image.manifest, image.media_type), SBOM, b"{}")
        other = push_artifact(raw, image.repo, subject_descriptor(image.manifest, image.media_type), SBOM, b"[]")
        push_referrers_index(raw, image.repo, image.digest, [own, Artifact(other.digest, other.raw, bloated)])
    write_images(tmp_path, f"{plain_registry.host}/{unique_repo('mirror')}/",
                 [{"source": f"{source.host}/{image.repo}:v1"}])

    locked = run_cli(tmp_path, "lock")

    assert locked.code == 0, locked.stderr
    pinned = yaml.safe_load((tmp_path / "images.lock").read_text())["images"][0]["referrers"]
    assert [r["digest"] for r in pinned] == [own.digest]
    assert [line for line in locked.stderr_lines if line.startswith("WARNING")] == [
        f"WARNING: {source.host}/{image.repo}: {other.digest} is listed as a referrer of {image.digest} "
        "with a type that is no media type; not pinned"]
    assert source.count("GET", f"/manifests/{other.digest}$") == 0


# -- referrers of referrers (issue 23) -----------------------------------------------------------


def _chain(raw, repo: str, subject: dict, length: int) -> list:
    """``length`` artifacts, each referring to the one before (the first to ``subject``), each
    listed in its subject's fallback index."""
    chain = []
    for level in range(length):
        artifact = push_artifact(raw, repo, subject, SBOM, b'{"level": %d}' % level)
        push_referrers_index(raw, repo, subject["digest"], [artifact])
        chain.append(artifact)
        subject = {"mediaType": OCI_MANIFEST, "digest": artifact.digest, "size": len(artifact.raw)}
    return chain


def test_a_signature_of_an_sbom_is_pinned_and_written_after_the_sbom(
    tmp_path, plain_registry, second_plain_registry, push_image, unique_repo
):
    image = push_image("oci")
    key = cosign_keys.new_key()
    with RawRegistry(plain_registry) as raw:
        (sbom,) = _chain(raw, image.repo, subject_descriptor(image.manifest, image.media_type), 1)
        signature = cosign_keys.push_signatures(raw, image.repo, sbom.digest, [cosign_keys.signature_by(key, sbom.digest)])
    write_images(tmp_path, f"{second_plain_registry.host}/{unique_repo('mirror')}/",
                 [{"source": f"{plain_registry.host}/{image.repo}:v1"}])

    assert run_cli(tmp_path, "lock").code == 0
    pinned = yaml.safe_load((tmp_path / "images.lock").read_text())["images"][0]["referrers"]
    assert {(referrer["subject"], referrer["digest"]) for referrer in pinned} == {
        (image.digest, sbom.digest), (sbom.digest, signature)}
    applied = run_cli(tmp_path, "apply")

    assert applied.code == 0, applied
    target = yaml.safe_load((tmp_path / "images.yaml").read_text())["targetRepoPrefix"].split("/", 1)[1] + \
        f"{plain_registry.host.replace(':', '_')}/{image.repo}"
    with RawRegistry(second_plain_registry) as raw:
        assert raw.get_manifest(target, sbom.digest).content == sbom.raw
        assert raw.head_manifest(target, cosign_keys.signature_tag(sbom.digest)).headers[
            "Docker-Content-Digest"] == signature


def test_referrers_are_followed_three_levels_deep_and_a_deeper_one_is_a_warning(plain_registry, push_image, caplog):
    image = push_image("oci")
    with RawRegistry(plain_registry) as raw:
        chain = _chain(raw, image.repo, subject_descriptor(image.manifest, image.media_type), limits.REFERRER_DEPTH + 1)

    found = discovered(plain_registry, image.repo, [image.digest])

    assert {(str(referrer.subject), str(referrer.digest)) for referrer in found} == {
        (subject, artifact.digest) for subject, artifact in zip([image.digest, *(a.digest for a in chain)],
                                                                 chain[:limits.REFERRER_DEPTH])}
    warnings = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    assert warnings == [f"{plain_registry.host}/{image.repo}: {chain[limits.REFERRER_DEPTH - 1].digest} and 0 more "
                        f"have referrers of their own, more than {limits.REFERRER_DEPTH} levels deep; those are "
                        "not pinned"]


def test_more_referrers_of_one_image_than_its_cap_over_all_levels_refuse_it(plain_registry, push_image, monkeypatch):
    monkeypatch.setattr(limits, "REFERRERS_PER_IMAGE", 2)
    image = push_image("oci")
    with RawRegistry(plain_registry) as raw:
        chain = _chain(raw, image.repo, subject_descriptor(image.manifest, image.media_type), 3)

    with pytest.raises(OCIError, match=f"^{plain_registry.host}/{image.repo}: more than 2 referrers of one image, "
                                            "over its subjects and what refers to them; not pinned$"):
        discovered(plain_registry, image.repo, [image.digest])
    assert {str(referrer.digest) for referrer in discovered(plain_registry, image.repo, [chain[1].digest])} == {
        chain[2].digest}
