"""A private, offline Sigstore whose bundles sigstore-js makes (issue 23).

The signatures come from an implementation other than the one the product verifies
with (sigstore-python): ``tests/sigstore_js/sign.mjs`` signs with ``@sigstore/sign``
(DSSE envelope, ephemeral key, Fulcio, Rekor and RFC 3161 requests, bundle) against a
Fulcio CA of root and intermediate, a CT log (``@sigstore/mock``'s), a Rekor that logs
the canonical DSSE entry in a Merkle tree with an inclusion proof, a signed checkpoint
and a signed entry timestamp, and a TSA; it checks every bundle with
``@sigstore/verify`` before handing it back. All its HTTP goes to in-process
interceptors: nothing leaves the machine.

Keys are derived from the seed, and the clock is fixed (``DEFAULT_TIME``): the same
seed gives the same keys, log ids and identities. ECDSA signatures (and so certificate
bytes) differ from run to run; one ``PrivateSigstore`` keeps its CA certificates and its
log across calls, so every bundle it made verifies against its ``trusted_root_json()``.

    sigstore = PrivateSigstore("seed")
    bundle = sigstore.sign_image(hex64, identity=..., issuer=...)   # bytes: bundle JSON
    root = sigstore.trusted_root_json()                             # bytes: TrustedRoot JSON
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.harness.artifacts import Artifact, push_artifact, push_referrers_index
from tests.harness.rawhttp import RawRegistry

BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
TRUSTED_ROOT_MEDIA_TYPE = "application/vnd.dev.sigstore.trustedroot+json;version=0.1"
IN_TOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_V1 = "https://in-toto.io/Statement/v1"
COSIGN_SIGN_PREDICATE = "https://sigstore.dev/cosign/sign/v1"
DEFAULT_TIME = "2025-06-01T12:00:00Z"
DEFAULT_NAME = "registry.test/app"
GITHUB_ISSUER = "https://token.actions.githubusercontent.com"

SIGSTORE_JS = Path(__file__).resolve().parent.parent / "sigstore_js"
SIGN_SCRIPT = SIGSTORE_JS / "sign.mjs"
SETUP_HINT = "run `bash scripts/dev setup` (it installs tests/sigstore_js's Node packages from its lockfile)"


# cosign's pkg/cosign/testdata/oci-attestation.sigstore.json and trusted_root_pgi.json, signed
# by the public-good Sigstore (tests/data/sigstore/SOURCE.md). Its statement names
# go-containerregistry's empty.Image, rebuilt here byte for byte: a Docker schema 2 manifest
# (264 bytes) over this config (113 bytes), no layers.
COSIGN_DATA = Path(__file__).resolve().parent.parent / "data" / "sigstore"
COSIGN_BUNDLE = COSIGN_DATA / "oci-attestation.sigstore.json"
COSIGN_TRUSTED_ROOT = COSIGN_DATA / "trusted_root_pgi.json"
COSIGN_IDENTITY = "cody@soyland.com"
COSIGN_ISSUER = "https://github.com/login/oauth"
EMPTY_IMAGE_CONFIG = (
    b'{"architecture":"","created":"0001-01-01T00:00:00Z","os":"",'
    b'"rootfs":{"type":"layers","diff_ids":null},"config":{}}'
)
EMPTY_IMAGE_MANIFEST = (
    b'{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json",'
    b'"config":{"mediaType":"application/vnd.docker.container.image.v1+json","size":%d,'
    b'"digest":"sha256:%s"},"layers":[]}'
) % (len(EMPTY_IMAGE_CONFIG), hashlib.sha256(EMPTY_IMAGE_CONFIG).hexdigest().encode())
EMPTY_IMAGE_DIGEST = "732112270d7e59418a8c080b134b24cabd67d250d0d0147a97ed95ba5c280aa4"


class SigstoreHarnessError(RuntimeError):
    """The Node signer is missing or failed."""


def derived_key(seed: str, label: str, curve: ec.EllipticCurve | None = None) -> ec.EllipticCurvePrivateKey:
    """An EC private key that depends only on (seed, label): the same test, the same key."""
    scalar = int.from_bytes(hashlib.sha256(f"{seed}\0{label}".encode()).digest(), "big")
    return ec.derive_private_key(scalar % 2**255 + 1, curve or ec.SECP256R1())


def pkcs8_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def statement(digest_hex: str, name: str = DEFAULT_NAME, predicate_type: str = COSIGN_SIGN_PREDICATE) -> bytes:
    """The in-toto v1 statement cosign v3 signs for an image: its subject is the image's digest."""
    return json.dumps(
        {
            "_type": STATEMENT_V1,
            "subject": [{"name": name, "digest": {"sha256": digest_hex}}],
            "predicateType": predicate_type,
            "predicate": {},
        },
        separators=(",", ":"),
    ).encode()


def bundle_statement(bundle: bytes) -> dict:
    """The in-toto statement a DSSE bundle carries (what the product must check the subject of)."""
    envelope = json.loads(bundle)["dsseEnvelope"]
    return json.loads(base64.b64decode(envelope["payload"]))


def tamper_payload(bundle: bytes, digest_hex: str) -> bytes:
    """The bundle with its envelope's payload swapped for a statement about another digest,
    the signature and log entry left as they were."""
    doc = json.loads(bundle)
    old = json.loads(base64.b64decode(doc["dsseEnvelope"]["payload"]))
    old["subject"][0]["digest"]["sha256"] = digest_hex
    doc["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(old, separators=(",", ":")).encode()).decode()
    return json.dumps(doc).encode()


@dataclass(frozen=True)
class SignRequest:
    """One bundle to make: keyless (identity, issuer) or with a key (key)."""

    statement: bytes
    identity: str | None = None
    issuer: str | None = None
    key: ec.EllipticCurvePrivateKey | None = None
    tlog: bool = True
    tsa: bool = False

    def to_json(self) -> dict:
        if self.key is not None:
            return {
                "kind": "key",
                "statement": self.statement.decode(),
                "key": pkcs8_pem(self.key),
                "tlog": self.tlog,
                "tsa": self.tsa,
            }
        if not (self.identity and self.issuer):
            raise ValueError("a keyless bundle needs an identity and an issuer")
        return {
            "kind": "keyless",
            "statement": self.statement.decode(),
            "identity": self.identity,
            "issuer": self.issuer,
            "tsa": self.tsa,
        }


@dataclass
class PrivateSigstore:
    """A Fulcio (root + intermediate), CT log, Rekor and TSA of its own, keys from ``seed``.

    ``tsa_in_root``: list the TSA in the trusted root (bundles carry an RFC 3161
    timestamp only when asked, ``tsa=True``). ``time``: the one clock (certificate
    issuance, SCT, integrated time, timestamps), RFC 3339.
    """

    seed: str = "image-syncer"
    time: str = DEFAULT_TIME
    tsa_in_root: bool = True
    filler: int = 5
    _state: dict | None = field(default=None, repr=False)
    _root: bytes | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    # ---- keys -----------------------------------------------------------------

    def _keys(self) -> dict[str, str]:
        p384 = ec.SECP384R1()
        return {
            "fulcioRoot": pkcs8_pem(derived_key(self.seed, "fulcio root", p384)),
            "fulcioIntermediate": pkcs8_pem(derived_key(self.seed, "fulcio intermediate", p384)),
            "ctlog": pkcs8_pem(derived_key(self.seed, "ctlog")),
            "rekor": pkcs8_pem(derived_key(self.seed, "rekor")),
            "tsaRoot": pkcs8_pem(derived_key(self.seed, "tsa root")),
            "tsa": pkcs8_pem(derived_key(self.seed, "tsa")),
        }

    def signing_key(self, label: str = "cosign") -> ec.EllipticCurvePrivateKey:
        """A P-256 key for ``sign_with_key``, derived from the seed and ``label``."""
        return derived_key(self.seed, f"user key {label}")

    def rekor_key(self) -> ec.EllipticCurvePublicKey:
        return derived_key(self.seed, "rekor").public_key()

    # ---- signing ------------------------------------------------------------------

    def sign_image(
        self,
        digest_hex: str,
        identity: str,
        issuer: str = GITHUB_ISSUER,
        *,
        name: str = DEFAULT_NAME,
        tsa: bool = False,
        predicate_type: str = COSIGN_SIGN_PREDICATE,
    ) -> bytes:
        """A keyless bundle (certificate for ``identity``/``issuer``, Rekor entry with
        inclusion proof, checkpoint and SET; an RFC 3161 timestamp with ``tsa``) over the
        statement naming ``digest_hex``."""
        (bundle,) = self.sign_many(
            [SignRequest(statement(digest_hex, name, predicate_type), identity=identity, issuer=issuer, tsa=tsa)]
        )
        return bundle

    def sign_with_key(
        self,
        digest_hex: str,
        key: ec.EllipticCurvePrivateKey | None = None,
        *,
        tlog: bool = True,
        tsa: bool = False,
        name: str = DEFAULT_NAME,
        predicate_type: str = COSIGN_SIGN_PREDICATE,
    ) -> bytes:
        """A key-signed bundle (``verificationMaterial.publicKey.hint``: base64 of the
        SHA-256 of the key's SubjectPublicKeyInfo, as cosign writes it; no certificate),
        with a Rekor entry unless ``tlog=False`` and an RFC 3161 timestamp with ``tsa``
        (cosign v3 ``sign --key`` writes both). ``key`` defaults to ``signing_key()``."""
        key = key or self.signing_key()
        (bundle,) = self.sign_many(
            [SignRequest(statement(digest_hex, name, predicate_type), key=key, tlog=tlog, tsa=tsa)]
        )
        return bundle

    def sign_many(self, requests: Sequence[SignRequest]) -> list[bytes]:
        """Several bundles in one Node run (a run takes about half a second)."""
        if any(r.tsa for r in requests) and not self.tsa_in_root:
            raise ValueError("a timestamp from a TSA the trusted root does not list would not verify")
        with self._lock:
            answer = self._run([r.to_json() for r in requests])
            self._state = answer["state"]
            self._root = _dump(answer["trustedRoot"])
        return [_dump(b) for b in answer["bundles"]]

    def trusted_root_json(self) -> bytes:
        """The TrustedRoot JSON (Fulcio root+intermediate, Rekor key and log id, CT log
        key, the TSA unless ``tsa_in_root=False``) every bundle of this instance verifies
        against."""
        with self._lock:
            if self._root is None:
                answer = self._run([])
                self._state = answer["state"]
                self._root = _dump(answer["trustedRoot"])
            return self._root

    def write_trusted_root(self, path: Path) -> Path:
        path.write_bytes(self.trusted_root_json())
        return path

    def _run(self, requests: list[dict]) -> dict:
        node = shutil.which("node")
        if node is None:
            raise SigstoreHarnessError(f"node is not installed: {SETUP_HINT}")
        if not (SIGSTORE_JS / "node_modules" / "@sigstore" / "sign").is_dir():
            raise SigstoreHarnessError(f"{SIGSTORE_JS / 'node_modules'} is missing: {SETUP_HINT}")
        request = {
            "time": self.time,
            "keys": self._keys(),
            "treeId": int.from_bytes(hashlib.sha256(f"{self.seed}\0tree".encode()).digest()[:6], "big"),
            "filler": self.filler,
            "tsaInRoot": self.tsa_in_root,
            "state": self._state,
            "requests": requests,
        }
        proc = subprocess.run(
            [node, str(SIGN_SCRIPT)],
            input=json.dumps(request).encode(),
            capture_output=True,
            cwd=SIGSTORE_JS,
            timeout=120,
        )
        if proc.returncode != 0:
            raise SigstoreHarnessError(f"sign.mjs failed ({proc.returncode}): {proc.stderr.decode(errors='replace')}")
        return json.loads(proc.stdout)


def _dump(doc: dict) -> bytes:
    return json.dumps(doc, indent=2).encode()


def attach_bundle(raw: RawRegistry, repo: str, subject: dict, bundle: bytes,
                  listed_with: Sequence[Artifact] = ()) -> Artifact:
    """``bundle`` stored as cosign's ``WriteReferrer`` stores it (cosign's specs/BUNDLE_SPEC.md):
    a manifest of ``artifactType`` the bundle's media type, the empty config, the bundle as its
    one layer, annotated with its content and predicate type, ``subject`` the image's
    descriptor; then, for a registry without the referrers API (docker-registry 2.8), the
    fallback index ``sha256-<hex>`` listing it after ``listed_with``."""
    predicate_type = bundle_statement(bundle).get("predicateType", "")
    artifact = push_artifact(raw, repo, subject, BUNDLE_MEDIA_TYPE, bundle, layer_type=BUNDLE_MEDIA_TYPE,
                             annotations={"dev.sigstore.bundle.content": "dsse-envelope",
                                          "dev.sigstore.bundle.predicateType": predicate_type})
    push_referrers_index(raw, repo, subject["digest"], [*listed_with, artifact])
    return artifact
