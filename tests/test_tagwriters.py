"""tagwriters.py: the tags each pin writes, as a table over plain values; and finding 2 of
issue 21 (one cosign tag wanted by two pins) end to end against docker-registry."""

from __future__ import annotations

import pytest
import yaml

from reconciler.lockfile import LockedImage
from reconciler.oci import reference
from reconciler.oci.digest import Digest
from reconciler.oci.mediatypes import OCI_INDEX, OCI_MANIFEST
from reconciler.oci.referrer import COSIGN_ARTIFACT_TYPES, FoundBy, Referrer
from reconciler.tagwriters import Conflict, TargetTag, Write, conflicts, writes
from tests.harness import cosign
from tests.harness.rawhttp import RawRegistry
from tests.helpers_cli import CliResult, run_cli, write_images

IMAGE, CHILD, SIG_1, SIG_2, SBOM, INDEX = (Digest.parse("sha256:" + f"{n:x}" * 64) for n in range(1, 7))
REPO = reference.parse("mirror.test/app:v1").repository


def referrer(found_by: FoundBy, digest: Digest, subject: Digest = IMAGE) -> Referrer:
    return Referrer(subject, digest, OCI_MANIFEST, COSIGN_ARTIFACT_TYPES.get(found_by, "application/spdx+json"),
                    found_by)


def pin(target: str, *referrers: Referrer, digest: Digest = IMAGE, platforms: tuple[str, ...] = ()) -> LockedImage:
    return LockedImage(source=reference.parse("source.test/app:v1"), target=reference.parse(target), digest=digest,
                       media_type=OCI_INDEX if platforms else OCI_MANIFEST, platforms=platforms,
                       referrers=referrers)


def tag(name: str) -> TargetTag:
    return TargetTag(REPO, name)


HEX, CHILD_HEX = f"sha256-{IMAGE.hex}", f"sha256-{CHILD.hex}"


@pytest.mark.parametrize(("image", "written"), [
    pytest.param(pin("mirror.test/app:v1"), [Write(tag("v1"), IMAGE)], id="its own tag"),
    pytest.param(pin("mirror.test/app:v1", referrer(FoundBy.COSIGN_SIGNATURE, SIG_1),
                     referrer(FoundBy.COSIGN_ATTESTATION, SIG_2), referrer(FoundBy.COSIGN_SBOM, SBOM)),
                 [Write(tag("v1"), IMAGE), Write(tag(f"{HEX}.sig"), SIG_1), Write(tag(f"{HEX}.att"), SIG_2),
                  Write(tag(f"{HEX}.sbom"), SBOM)], id="cosign's tags hold their referrer"),
    pytest.param(pin("mirror.test/app:v1", referrer(FoundBy.INDEX_TAG, SBOM), referrer(FoundBy.API, SIG_1)),
                 [Write(tag("v1"), IMAGE), Write(tag(HEX), None), Write(tag(HEX), None)],
                 id="the others are listed in the fallback index, found by tag or by API"),
    pytest.param(pin("mirror.test/app:v1", referrer(FoundBy.COSIGN_SIGNATURE, SIG_1, subject=CHILD),
                     digest=INDEX, platforms=("linux/amd64",)),
                 [Write(tag("v1"), INDEX), Write(tag(f"{CHILD_HEX}.sig"), SIG_1)],
                 id="a child's referrer is tagged by the child's digest"),
])
def test_a_pin_writes_its_tag_and_its_referrers_tags(image, written):
    assert list(writes(image)) == written


V1, STABLE, OTHER_REPO = "mirror.test/app:v1", "mirror.test/app:stable", "mirror.test/other:v1"


@pytest.mark.parametrize(("images", "disagree_on"), [
    pytest.param([pin(V1, referrer(FoundBy.COSIGN_SIGNATURE, SIG_1)),
                  pin(STABLE, referrer(FoundBy.COSIGN_SIGNATURE, SIG_2))], [f"{HEX}.sig"],
                 id="one digest under two tags of a repository, signed differently (finding 2)"),
    pytest.param([pin(V1, referrer(FoundBy.COSIGN_SIGNATURE, SIG_1)),
                  pin(STABLE, referrer(FoundBy.COSIGN_SIGNATURE, SIG_1))], [],
                 id="the same signature twice"),
    pytest.param([pin(V1, referrer(FoundBy.COSIGN_SIGNATURE, SIG_1)),
                  pin(OTHER_REPO, referrer(FoundBy.COSIGN_SIGNATURE, SIG_2))], [],
                 id="other repositories"),
    pytest.param([pin(V1, referrer(FoundBy.INDEX_TAG, SBOM)), pin(STABLE, referrer(FoundBy.API, SIG_1))], [],
                 id="two pins listing different referrers of one subject into its fallback index"),
    pytest.param([pin(V1, referrer(FoundBy.INDEX_TAG, SBOM)), pin(f"mirror.test/app:{HEX}")], [HEX],
                 id="an image pushed where another's fallback index goes"),
    pytest.param([pin(V1, referrer(FoundBy.COSIGN_SIGNATURE, SIG_1)), pin(f"mirror.test/app:{HEX}.sig", digest=SIG_1)],
                 [], id="an image pushed under a .sig tag holding that very signature"),
    pytest.param([pin(V1, referrer(FoundBy.COSIGN_SIGNATURE, SIG_1), referrer(FoundBy.COSIGN_SBOM, SBOM)),
                  pin(STABLE, referrer(FoundBy.COSIGN_SIGNATURE, SIG_2), referrer(FoundBy.COSIGN_SBOM, SIG_1))],
                 [f"{HEX}.sig", f"{HEX}.sbom"], id="each tag is one conflict"),
])
def test_two_pins_conflict_where_they_want_different_content_under_one_tag(images, disagree_on):
    found = conflicts(images)

    assert [str(conflict.tag) for conflict in found] == [f"mirror.test/app:{name}" for name in disagree_on]
    assert all((conflict.first, conflict.second) == tuple(images) for conflict in found)


def test_a_conflict_names_the_first_pin_and_the_first_that_disagrees_with_it():
    first, agreeing, disagreeing = (pin(target, referrer(FoundBy.COSIGN_SIGNATURE, signature)) for target, signature in
                                    ((V1, SIG_1), (STABLE, SIG_1), ("mirror.test/app:latest", SIG_2)))

    assert conflicts([first, agreeing, disagreeing]) == (
        Conflict(tag(f"{HEX}.sig"), first, SIG_1, disagreeing, SIG_2),
    )


# -- finding 2, end to end -------------------------------------------------------------------


def ok(result: CliResult, code: int = 0) -> CliResult:
    assert result.code == code, str(result)
    assert "Traceback" not in result.stderr, str(result)
    return result


def test_a_source_re_signed_upstream_then_mirrored_under_a_second_tag_is_refused_until_both_pin_one_signature(
    tmp_path, plain_registry, second_plain_registry, push_image, unique_repo
):
    image = push_image("oci")
    key = cosign.new_key()
    with RawRegistry(plain_registry) as raw:
        first_signature = cosign.push_signatures(raw, image.repo, image.digest,
                                                 [cosign.signature_by(key, image.digest)])
    source = f"{plain_registry.host}/{image.repo}:v1"
    prefix = f"{second_plain_registry.host}/{unique_repo('mirror')}/"
    write_images(tmp_path, prefix, [{"source": source}])
    ok(run_cli(tmp_path, "lock"))
    with RawRegistry(plain_registry) as raw:
        second_signature = cosign.push_signatures(
            raw, image.repo, image.digest, [cosign.signature_by(key, image.digest)])
    assert second_signature != first_signature
    write_images(tmp_path, prefix, [{"source": source}, {"source": source, "tag": "stable"}])
    before = (tmp_path / "images.lock").read_bytes()

    refused = ok(run_cli(tmp_path, "lock"), 1)

    target = f"{prefix}{plain_registry.host.replace(':', '_')}/{image.repo}"
    sig_tag = cosign.signature_tag(image.digest)

    def conflict(stable_wants: str, v1_wants: str) -> str:
        return (f"{target}:stable (images.yaml:4) and {target}:v1 (images.yaml:3) want different manifests under "
                f"their repository's tag {sig_tag} ({stable_wants} and {v1_wants}): re-pin both together "
                "(`image-syncer lock --upgrade` naming them), or mirror them to different repositories")

    assert refused.error_lines == [f"error: {conflict(second_signature, first_signature)}"], str(refused)
    assert (tmp_path / "images.lock").read_bytes() == before

    ok(run_cli(tmp_path, "lock", "--upgrade", f"{target}:v1"))
    ok(run_cli(tmp_path, "lock", "--check"))
    pinned = [[referrer["digest"] for referrer in image["referrers"]]
              for image in yaml.safe_load((tmp_path / "images.lock").read_text())["images"]]
    assert pinned == [[second_signature], [second_signature]]

    # The lock an older image-syncer wrote: both entries locked, each with its own signature.
    old = (tmp_path / "images.lock").read_text().replace(second_signature, first_signature, 1)
    (tmp_path / "images.lock").write_text(old)
    for command in ("plan", "apply"):
        refused = ok(run_cli(tmp_path, command), 1)
        assert refused.error_lines == [f"error: images.lock: {conflict(first_signature, second_signature)}"], str(
            refused)
    assert ok(run_cli(tmp_path, "lock"), 1).error_lines == [f"error: {conflict(first_signature, second_signature)}"]
    checked = ok(run_cli(tmp_path, "lock", "--check"), 1)
    assert f"  {conflict(first_signature, second_signature)}" in checked.stderr_lines, str(checked)
    with RawRegistry(second_plain_registry) as raw:
        assert raw.tags(target.split("/", 1)[1]) == []
