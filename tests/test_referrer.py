"""oci/referrer.py: the referrer record, and the order referrers of referrers are written in."""

from __future__ import annotations

import random

import pytest

from reconciler.oci.digest import Digest
from reconciler.oci.mediatypes import OCI_MANIFEST
from reconciler.oci.referrer import FoundBy, Referrer, in_levels

IMAGE, CHILD = Digest.of(b"image"), Digest.of(b"child")


def referrer(subject: Digest, name: str) -> Referrer:
    return Referrer(subject, Digest.of(name.encode()), OCI_MANIFEST, None, FoundBy.INDEX_TAG)


SBOM = referrer(IMAGE, "sbom")
CHILD_SBOM = referrer(CHILD, "child sbom")
SBOM_SIGNATURE = referrer(SBOM.digest, "signature of the sbom")
SIGNATURE_ATTESTATION = referrer(SBOM_SIGNATURE.digest, "attestation of that signature")


@pytest.mark.parametrize("seed", range(5))
def test_each_referrer_comes_after_the_referrer_it_refers_to(seed):
    shuffled = [SIGNATURE_ATTESTATION, SBOM_SIGNATURE, CHILD_SBOM, SBOM]
    random.Random(seed).shuffle(shuffled)

    levels = in_levels(shuffled)

    assert [set(level) for level in levels] == [{SBOM, CHILD_SBOM}, {SBOM_SIGNATURE}, {SIGNATURE_ATTESTATION}], seed


def test_referrers_of_the_image_alone_are_one_level_and_none_are_no_level():
    assert in_levels([SBOM, CHILD_SBOM]) == [(SBOM, CHILD_SBOM)]
    assert in_levels([]) == []


def test_a_cycle_only_a_hand_edited_lock_could_hold_is_still_written_whole():
    first = Referrer(Digest.of(b"b"), Digest.of(b"a"), OCI_MANIFEST, None, FoundBy.INDEX_TAG)
    second = Referrer(Digest.of(b"a"), Digest.of(b"b"), OCI_MANIFEST, None, FoundBy.INDEX_TAG)

    assert in_levels([SBOM, first, second]) == [(SBOM,), (first, second)]
