"""signatures.py: a signature images.yaml requires is found among the image's referrers (a
Sigstore bundle, as cosign v3 stores it) or under cosign's ``.sig`` tag, pinned by lock, and
checked again from the pinned bytes before apply copies.

The bundles come from sigstore-js signing against a private, offline Sigstore
(tests/harness/sigstore.py), stored as cosign's ``WriteReferrer`` stores them: an artifact
manifest and, as docker-registry 2.8 has no referrers API, the fallback index. Every
refusal is one line, exit 1, and leaves images.lock byte for byte as it was.
"""

from __future__ import annotations

import pytest
import yaml

from tests.harness import cosign as cosign_keys
from tests.harness.artifacts import push_artifact, subject_descriptor
from tests.harness.rawhttp import RawRegistry
from tests.harness.sigstore import (
    BUNDLE_MEDIA_TYPE, GITHUB_ISSUER, PrivateSigstore, SignRequest, attach_bundle, statement, tamper_payload,
)
from tests.helpers_cli import run_cli

SIGSTORE = PrivateSigstore("test_signatures")
STRANGER = PrivateSigstore("test_signatures: a Sigstore the trusted root does not list")
IDENTITY = "https://github.com/acme/app/.github/workflows/release.yml@refs/tags/v1.0.0"
OTHER_IDENTITY = "https://github.com/evil/app/.github/workflows/release.yml@refs/heads/main"
OTHER_HEX = "ab" * 32
NO_WAY_OUT = {"HTTPS_PROXY": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9"}
"""Only the registries (plain HTTP here) may be asked: a request for a trust update would meet a closed port."""


def keyless(identity: str = IDENTITY, **more: object) -> dict:
    return {"keyless": {"issuer": GITHUB_ISSUER, "identity": identity, **more}, "trustedRoot": "trusted_root.json"}


@pytest.fixture
def mirror(tmp_path, plain_registry, second_plain_registry, unique_repo):
    """``mirror(images, verify)``: images.yaml mirroring ``images`` (PushedImage) into the second
    registry under ``verify`` (None: none), with this Sigstore's trusted root beside it."""
    prefix = f"{second_plain_registry.host}/{unique_repo('mirror')}/"
    SIGSTORE.write_trusted_root(tmp_path / "trusted_root.json")

    def write(images, verify: dict | None, **more: object) -> None:
        document = {"targetRepoPrefix": prefix, **({"verify": verify} if verify else {}), **more,
                    "images": [{"source": f"{plain_registry.host}/{image.repo}:v1"} for image in images]}
        (tmp_path / "images.yaml").write_text(yaml.safe_dump(document, sort_keys=False))

    write.target = lambda image: f"{prefix.split('/', 1)[1]}{plain_registry.host.replace(':', '_')}/{image.repo}"
    return write


def attach(registry, image, bundle: bytes):
    with RawRegistry(registry) as raw:
        return attach_bundle(raw, image.repo, subject_descriptor(image.manifest, image.media_type), bundle)


def locked(tmp_path) -> dict:
    return yaml.safe_load((tmp_path / "images.lock").read_text())["images"][0]


def test_a_keyless_bundle_by_the_identity_is_pinned_and_travels_with_the_image(
    tmp_path, mirror, push_image, plain_registry, second_plain_registry
):
    image = push_image("oci")
    bundle = attach(plain_registry, image, SIGSTORE.sign_image(image.digest.removeprefix("sha256:"), IDENTITY))
    mirror([image], keyless())

    pinned = run_cli(tmp_path, "lock", env=NO_WAY_OUT)

    assert pinned.code == 0, pinned
    entry = locked(tmp_path)
    assert entry["signature"]["digest"] == bundle.digest and entry["signature"]["form"] == "bundle"
    proof = entry["signature"]["proof"]
    assert (proof["identity"], proof["issuer"]) == (IDENTITY, GITHUB_ISSUER)
    assert isinstance(proof["integratedTime"], int)
    assert bundle.digest in [referrer["digest"] for referrer in entry["referrers"]]

    applied = run_cli(tmp_path, "apply", env=NO_WAY_OUT)

    assert applied.code == 0, applied
    with RawRegistry(second_plain_registry) as raw:
        target = mirror.target(image)
        assert raw.get_manifest(target, "v1").content == image.manifest
        assert raw.get_manifest(target, bundle.digest).content == bundle.raw
        listed = raw.get_manifest(target, image.digest.replace(":", "-")).json()["manifests"]
        assert bundle.digest in [descriptor["digest"] for descriptor in listed]


def test_the_signature_travels_even_where_images_yaml_copies_no_referrers(
    tmp_path, mirror, push_image, plain_registry, second_plain_registry
):
    image = push_image("oci")
    bundle = attach(plain_registry, image, SIGSTORE.sign_image(image.digest.removeprefix("sha256:"), IDENTITY))
    mirror([image], keyless(), referrers=False)

    assert run_cli(tmp_path, "lock").code == 0
    assert [referrer["digest"] for referrer in locked(tmp_path)["referrers"]] == [bundle.digest]
    assert run_cli(tmp_path, "apply").code == 0
    with RawRegistry(second_plain_registry) as raw:
        assert raw.get_manifest(mirror.target(image), bundle.digest).content == bundle.raw


def test_an_index_signed_by_an_identity_the_regexp_finds_is_pinned(tmp_path, mirror, push_image, plain_registry):
    image = push_image("oci-index")
    bundle = attach(plain_registry, image, SIGSTORE.sign_image(image.digest.removeprefix("sha256:"), IDENTITY))
    mirror([image], {"keyless": {"issuer": GITHUB_ISSUER, "identityRegexp": r"^https://github\.com/acme/"},
                     "trustedRoot": "trusted_root.json"})

    assert run_cli(tmp_path, "lock").code == 0
    assert locked(tmp_path)["signature"]["digest"] == bundle.digest
    assert run_cli(tmp_path, "apply").code == 0


def _bundles(hex_: str) -> dict[str, bytes]:
    """Every way a bundle can fail to satisfy ``keyless()`` for the image ``hex_``, signed in one Node run."""
    made = SIGSTORE.sign_many([
        SignRequest(statement(hex_), identity=OTHER_IDENTITY, issuer=GITHUB_ISSUER),
        SignRequest(statement(hex_), identity=IDENTITY, issuer="https://accounts.google.com"),
        SignRequest(statement(OTHER_HEX), identity=IDENTITY, issuer=GITHUB_ISSUER),
        SignRequest(statement(hex_), key=SIGSTORE.signing_key(), tlog=True),
    ])
    return {"wrong identity": made[0], "wrong issuer": made[1], "another digest": made[2],
            "tampered": tamper_payload(made[2], hex_), "signed with a key": made[3],
            "unknown CA": STRANGER.sign_image(hex_, IDENTITY)}


REFUSALS = {
    "wrong identity": f'identity "{OTHER_IDENTITY}" is not "{IDENTITY}"',
    "wrong issuer": f'issuer "https://accounts.google.com" is not "{GITHUB_ISSUER}"',
    "another digest": f"signed digest sha256:{OTHER_HEX} is another image's",
    "tampered": "signature does not verify",
    "signed with a key": "signed with a key, but verify: asks for a keyless identity",
    "unknown CA": "certificate not issued by a CA of the trusted root",
    "unsigned": "no signature (no Sigstore bundle among its referrers, no tag sha256-",
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_a_bundle_that_does_not_satisfy_the_policy_is_one_line_and_the_lock_stays(
    tmp_path, mirror, push_image, plain_registry, case
):
    image = push_image("oci")
    mirror([image], None)
    assert run_cli(tmp_path, "lock").code == 0
    before = (tmp_path / "images.lock").read_bytes()
    if case != "unsigned":
        attach(plain_registry, image, _bundles(image.digest.removeprefix("sha256:"))[case])
    mirror([image], keyless())

    refused = run_cli(tmp_path, "lock")

    assert refused.code == 1, refused
    (error,) = refused.error_lines
    assert f"({image.digest}): " in error and REFUSALS[case] in error, error
    assert error.endswith(f'keyless identity "{IDENTITY}" from issuer "{GITHUB_ISSUER}" '
                          "(trusted root trusted_root.json) is required"), error
    assert (tmp_path / "images.lock").read_bytes() == before


@pytest.mark.parametrize("tlog", [True, False], ids=["with a log entry", "without a log entry"])
def test_a_bundle_signed_with_the_key_is_pinned_by_the_key(tmp_path, mirror, push_image, plain_registry, tlog):
    image = push_image("oci")
    key = SIGSTORE.signing_key()
    cosign_keys.write_public_key(key, tmp_path / "cosign.pub")
    bundle = attach(plain_registry, image, SIGSTORE.sign_with_key(image.digest.removeprefix("sha256:"), key,
                                                                   tlog=tlog))
    mirror([image], {"cosignKey": "cosign.pub"})

    assert run_cli(tmp_path, "lock").code == 0
    signature = locked(tmp_path)["signature"]
    assert signature["digest"] == bundle.digest and signature["proof"]["key"].startswith("sha256:")
    assert "identity" not in signature["proof"] and "integratedTime" not in signature["proof"]
    assert run_cli(tmp_path, "apply").code == 0


def test_a_legacy_signature_is_checked_only_with_a_key(tmp_path, mirror, push_image, plain_registry):
    image = push_image("oci")
    with RawRegistry(plain_registry) as raw:
        cosign_keys.push_signatures(raw, image.repo, image.digest,
                                    [cosign_keys.signature_by(cosign_keys.new_key(), image.digest)])
    mirror([image], keyless())

    refused = run_cli(tmp_path, "lock")

    assert refused.code == 1
    assert "a cosign .sig signature, which only a key verifies, and verify: names none" in refused.error_lines[0]


def test_a_pinned_bundle_removed_upstream_refuses_the_image_and_copies_nothing(
    tmp_path, mirror, push_image, plain_registry, second_plain_registry
):
    image = push_image("oci")
    hex_ = image.digest.removeprefix("sha256:")
    pinned = attach(plain_registry, image, SIGSTORE.sign_image(hex_, IDENTITY))
    mirror([image], keyless())
    assert run_cli(tmp_path, "lock").code == 0
    with RawRegistry(plain_registry) as raw:  # replaced: the pinned one deleted, a new one (also valid) listed
        assert raw.delete_manifest(image.repo, pinned.digest).status_code == 202
    attach(plain_registry, image, SIGSTORE.sign_image(hex_, IDENTITY))

    applied = run_cli(tmp_path, "apply")

    assert applied.code == 1, applied
    assert f"its pinned signature {pinned.digest} is gone from the source" in applied.stdout
    with RawRegistry(second_plain_registry) as raw:
        assert raw.head_manifest(mirror.target(image), "v1").status_code == 404
        assert raw.head_manifest(mirror.target(image), image.digest).status_code == 404


PROVENANCE = "https://slsa.dev/provenance/v1"


def test_an_attestation_the_policy_requires_is_pinned_and_checked_again_by_apply(
    tmp_path, mirror, push_image, plain_registry, second_plain_registry
):
    image, bare = push_image("oci"), push_image("oci")
    hexes = [pushed.digest.removeprefix("sha256:") for pushed in (image, bare)]
    signature, provenance, bare_signature = SIGSTORE.sign_many([
        SignRequest(statement(hexes[0]), identity=IDENTITY, issuer=GITHUB_ISSUER),
        SignRequest(statement(hexes[0], predicate_type=PROVENANCE), identity=IDENTITY, issuer=GITHUB_ISSUER),
        SignRequest(statement(hexes[1]), identity=IDENTITY, issuer=GITHUB_ISSUER)])
    signed = attach(plain_registry, image, signature)
    with RawRegistry(plain_registry) as raw:
        attested = attach_bundle(raw, image.repo, subject_descriptor(image.manifest, image.media_type), provenance,
                                 listed_with=[signed])
    attach(plain_registry, bare, bare_signature)
    policy = {**keyless(), "attestations": [PROVENANCE]}
    mirror([bare], policy)

    refused = run_cli(tmp_path, "lock")

    assert refused.code == 1 and not (tmp_path / "images.lock").exists()
    assert f"({bare.digest}): no attestation of {PROVENANCE} verifies; " in refused.error_lines[0]

    mirror([image], policy)
    assert run_cli(tmp_path, "lock").code == 0
    entry = locked(tmp_path)
    assert [(pinned["digest"], pinned["proof"]["predicateType"]) for pinned in entry["attestations"]] == [
        (attested.digest, PROVENANCE)]
    assert {signed.digest, attested.digest} <= {referrer["digest"] for referrer in entry["referrers"]}
    with RawRegistry(plain_registry) as raw:
        assert raw.delete_manifest(image.repo, attested.digest).status_code == 202

    applied = run_cli(tmp_path, "apply")

    assert applied.code == 1, applied
    assert f"its pinned attestation {attested.digest} is gone from the source" in applied.stdout
    with RawRegistry(second_plain_registry) as raw:
        assert raw.head_manifest(mirror.target(image), "v1").status_code == 404


def test_a_bundle_found_through_the_referrers_api_is_pinned_and_written_where_the_target_has_the_api(
    tmp_path, push_image, plain_registry, second_plain_registry, unique_repo, fault_proxy
):
    source, target = fault_proxy(plain_registry), fault_proxy(second_plain_registry)
    source.referrers_api()
    target.referrers_api()
    image = push_image("oci")
    bundle = SIGSTORE.sign_image(image.digest.removeprefix("sha256:"), IDENTITY)
    with RawRegistry(url=source.url) as raw:  # cosign with the API writes no fallback index: only the manifest
        signed = push_artifact(raw, image.repo, subject_descriptor(image.manifest, image.media_type),
                               BUNDLE_MEDIA_TYPE, bundle, layer_type=BUNDLE_MEDIA_TYPE)
    SIGSTORE.write_trusted_root(tmp_path / "trusted_root.json")
    prefix = f"{target.host}/{unique_repo('mirror')}/"
    (tmp_path / "images.yaml").write_text(yaml.safe_dump({
        "targetRepoPrefix": prefix, "verify": keyless(), "images": [{"source": f"{source.host}/{image.repo}:v1"}]}))

    assert run_cli(tmp_path, "lock").code == 0
    entry = locked(tmp_path)
    assert entry["signature"]["digest"] == signed.digest
    assert [(referrer["digest"], referrer["foundBy"]) for referrer in entry["referrers"]] == [
        (signed.digest, "referrers-api")]
    assert run_cli(tmp_path, "apply").code == 0
    repository = f"{prefix.split('/', 1)[1]}{source.host.replace(':', '_')}/{image.repo}"
    with RawRegistry(url=target.url) as raw:
        listed = raw.request("GET", f"/v2/{repository}/referrers/{image.digest}").json()["manifests"]
        assert [descriptor["digest"] for descriptor in listed] == [signed.digest]
