"""OCI 1.1 artifacts that refer to an image (``subject``), pushed to a real registry as their tools do.

``push_artifact`` writes one artifact manifest (an empty config, one payload layer,
``artifactType``) by digest or under a tag; ``push_referrers_index`` writes the spec's
fallback: an image index of referrer descriptors under the tag ``sha256-<hex>``.
"""

from __future__ import annotations

from dataclasses import dataclass

from tests.harness.images import canonical_json, sha256_digest
from tests.harness.rawhttp import RawRegistry

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
EMPTY_CONFIG = "application/vnd.oci.empty.v1+json"
EMPTY = b"{}"


@dataclass(frozen=True)
class Artifact:
    digest: str
    raw: bytes
    artifact_type: str
    annotations: dict | None = None

    def descriptor(self) -> dict:
        """As the fallback index lists it: the manifest's annotations copied, as the spec asks."""
        return {"mediaType": OCI_MANIFEST, "digest": self.digest, "size": len(self.raw),
                "artifactType": self.artifact_type, **({"annotations": self.annotations} if self.annotations else {})}


def subject_descriptor(raw_manifest: bytes, media_type: str) -> dict:
    return {"mediaType": media_type, "digest": sha256_digest(raw_manifest), "size": len(raw_manifest)}


def push_artifact(raw: RawRegistry, repo: str, subject: dict, artifact_type: str, payload: bytes,
                  *, tag: str | None = None, layer_type: str = "application/octet-stream",
                  annotations: dict | None = None) -> Artifact:
    """One artifact manifest referring to ``subject`` (a descriptor), by digest or under ``tag``."""
    raw.push_blob(repo, EMPTY)
    layer = raw.push_blob(repo, payload)
    manifest = canonical_json({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": artifact_type,
        "config": {"mediaType": EMPTY_CONFIG, "digest": sha256_digest(EMPTY), "size": len(EMPTY)},
        "layers": [{"mediaType": layer_type, "digest": layer, "size": len(payload)}],
        "subject": subject, **({"annotations": annotations} if annotations else {}),
    })
    digest = sha256_digest(manifest)
    answer = raw.put_manifest(repo, tag or digest, manifest, OCI_MANIFEST)
    assert answer.status_code == 201, answer.text
    return Artifact(digest, manifest, artifact_type, annotations)


def push_referrers_index(raw: RawRegistry, repo: str, subject_digest: str, artifacts: list[Artifact]) -> str:
    """The spec's fallback for registries without the referrers API: an index under ``sha256-<hex>``."""
    index = canonical_json({"schemaVersion": 2, "mediaType": OCI_INDEX,
                            "manifests": [artifact.descriptor() for artifact in artifacts]})
    answer = raw.put_manifest(repo, subject_digest.replace(":", "-"), index, OCI_INDEX)
    assert answer.status_code == 201, answer.text
    return sha256_digest(index)
