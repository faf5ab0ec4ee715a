"""Sigstore bundle signatures, verified offline against a pinned trusted root.

A keyless bundle (a Fulcio certificate) is verified by sigstore-python: the certificate's
chain to a CA of the trusted root, its SCT, the transparency log entry (inclusion proof,
checkpoint, signed entry timestamp), the signing time, identity and issuer. A bundle signed
with a key, which sigstore-python does not load, is checked here: the DSSE signature with
the key, nothing else (its log entry is not verified). Either way the in-toto statement must
name the image's digest, which sigstore-python does not look at.

sigstore-python is imported only when a keyless bundle is verified: its import takes a
quarter of a second, and most runs verify none.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import importlib.resources
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import attrs
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from reconciler.errors import one_line, shorten
from reconciler.oci import limits, mediatypes
from reconciler.oci.digest import Digest
from reconciler.oci.signature import SignatureProof
from reconciler.registry.errors import SignatureRefused

if TYPE_CHECKING:
    from cryptography.x509 import Certificate
    from sigstore.verify import Verifier

IN_TOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"
IN_TOTO_STATEMENTS = frozenset({"https://in-toto.io/Statement/v1", "https://in-toto.io/Statement/v0.1"})
BUNDLE_MEDIA_TYPES = frozenset({
    mediatypes.BUNDLE_MEDIA_TYPE,
    "application/vnd.dev.sigstore.bundle+json;version=0.3",
    "application/vnd.dev.sigstore.bundle+json;version=0.2",
    "application/vnd.dev.sigstore.bundle+json;version=0.1",
})
"""The bundle versions sigstore-python reads; a key-signed bundle is held to the same list."""
FULCIO_ISSUER_V2 = "1.3.6.1.4.1.57264.1.8"
FULCIO_ISSUER_V1 = "1.3.6.1.4.1.57264.1.1"
PUBLIC_GOOD_ROOT = ("_store", "https%3A%2F%2Ftuf-repo-cdn.sigstore.dev", "trusted_root.json")
"""The public-good trusted root inside sigstore-python's package, read as a file: never TUF."""
_DETAIL_CHARACTERS = 200


@attrs.frozen
class Trust:
    """What a signature must prove to satisfy images.yaml's ``verify:``: made with ``key``, or
    keyless by a certificate naming ``identity`` (or one matching ``identity_regexp``, searched
    as cosign's ``--certificate-identity-regexp`` is) issued for ``issuer``."""

    key: PublicKeyTypes | None = attrs.field(default=None, eq=False, repr=False)
    issuer: str | None = None
    identity: str | None = None
    identity_regexp: str | None = None
    trusted_root: Path | None = None
    """A TrustedRoot JSON file; None for the Sigstore public-good root that sigstore-python ships."""

    @property
    def keyless(self) -> bool:
        return self.identity is not None or self.identity_regexp is not None


def verify_bundle(bundle: bytes, digest: Digest, trust: Trust) -> SignatureProof:
    """What ``bundle`` proves of its signer, once it verifies under ``trust`` and its
    statement names ``digest``. Raises SignatureRefused, one line, otherwise."""
    try:
        document = _bundle_document(bundle)
        material = document["verificationMaterial"]
        with_certificate = "certificate" in material or "x509CertificateChain" in material
        if "publicKey" in material and not with_certificate:
            return _verify_with_key(document, digest, trust)
        if with_certificate and "publicKey" not in material:
            return _verify_keyless(bundle, digest, trust)
        raise _malformed("verificationMaterial holds neither a public key nor a certificate, or both")
    except SignatureRefused as refusal:
        # What a refusal quotes comes from the bundle: newlines and megabytes included.
        raise SignatureRefused(one_line(str(refusal))) from None


def key_fingerprint(key: PublicKeyTypes) -> str:
    """``sha256:<hex>`` of the key's DER SubjectPublicKeyInfo: how the lock names a key."""
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return f"sha256:{hashlib.sha256(der).hexdigest()}"


# ---- the bundle as JSON: read by us for its form, and in full for a key-signed one --------


def _bundle_document(bundle: bytes) -> dict[str, Any]:
    try:
        document = limits.parse_json(bundle)
    except ValueError as error:
        raise _malformed(f"not JSON: {_detail(error)}") from None
    if not isinstance(document, dict):
        raise _malformed("not a JSON object")
    media_type = document.get("mediaType")
    if media_type not in BUNDLE_MEDIA_TYPES:
        raise _malformed(f"mediaType is {_quoted(media_type)}")
    if not isinstance(document.get("verificationMaterial"), dict):
        raise _malformed("no verificationMaterial object")
    return document


def _malformed(why: str) -> SignatureRefused:
    return SignatureRefused(f"not a Sigstore bundle: {why}")


_JSON_KINDS = {str: "a string", int: "a number", float: "a number", bool: "a boolean", list: "an array",
               dict: "an object", type(None): "null"}


def _quoted(value: object) -> str:
    return f'"{shorten(value)}"' if isinstance(value, str) else _JSON_KINDS[type(value)]


def _member(container: dict[str, Any], name: str, kind: type, where: str) -> Any:
    if name not in container:
        raise _malformed(f"{where} has no {name}")
    value = container[name]
    if not isinstance(value, kind):
        raise _malformed(f"{where}.{name} is {_quoted(value)}, not {_JSON_KINDS[kind]}")
    return value


def _base64(text: str, where: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise _malformed(f"{where} is not base64") from None


# ---- a bundle signed with a key -------------------------------------------------------


def _verify_with_key(document: dict[str, Any], digest: Digest, trust: Trust) -> SignatureProof:
    if trust.key is None:
        raise SignatureRefused("signed with a key, but verify: asks for a keyless identity")
    envelope = _member(document, "dsseEnvelope", dict, "bundle")
    payload_type = _member(envelope, "payloadType", str, "dsseEnvelope")
    payload = _base64(_member(envelope, "payload", str, "dsseEnvelope"), "dsseEnvelope.payload")
    signatures = _member(envelope, "signatures", list, "dsseEnvelope")
    if len(signatures) != 1 or not isinstance(signatures[0], dict):
        raise _malformed(f"the DSSE envelope holds {len(signatures)} signatures, not one")
    signature = _base64(_member(signatures[0], "sig", str, "dsseEnvelope.signatures[0]"),
                        "dsseEnvelope.signatures[0].sig")
    if not isinstance(trust.key, ec.EllipticCurvePublicKey) or not isinstance(trust.key.curve, ec.SECP256R1):
        raise SignatureRefused("verify: key is not ECDSA P-256, the only kind of key checked")
    try:
        trust.key.verify(signature, _pre_authentication_encoding(payload_type, payload), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise SignatureRefused(f"signature does not verify with the key {key_fingerprint(trust.key)}") from None
    predicate_type = _check_statement(payload_type, payload, digest)
    return SignatureProof(key=key_fingerprint(trust.key), predicate_type=predicate_type)


def _pre_authentication_encoding(payload_type: str, payload: bytes) -> bytes:
    """What a DSSE signature signs: type and body, each after its length, so that neither can
    be moved into the other."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


# ---- a keyless bundle, verified by sigstore-python -------------------------------------


def _verify_keyless(bundle: bytes, digest: Digest, trust: Trust) -> SignatureProof:
    if not trust.keyless:
        asks = f"the key {key_fingerprint(trust.key)}" if trust.key is not None else "no signer"
        raise SignatureRefused(f"signed keyless, but verify: asks for {asks}")
    if trust.issuer is None:
        raise SignatureRefused("verify: names a keyless identity but no issuer")
    from sigstore.errors import Error as SigstoreError
    from sigstore.models import Bundle

    verifier = _verifier(trust.trusted_root)
    try:
        parsed = Bundle.from_json(bundle)
        payload_type, payload = verifier.verify_dsse(parsed, _policy(trust))
    except _PolicyRefusal as refusal:
        raise SignatureRefused(str(refusal)) from None
    except (SigstoreError, ValueError) as error:
        raise SignatureRefused(_explained(error)) from None
    predicate_type = _check_statement(payload_type, payload, digest)
    certificate = parsed.signing_certificate
    entry = parsed.log_entry._inner
    return SignatureProof(
        identity=trust.identity if trust.identity is not None else _matching_identity(certificate, trust.identity_regexp or ""),
        issuer=_issuer(certificate),
        # sigstore-python verifies the integrated time (through the signed entry timestamp)
        # only when the entry carries a promise; an entry without one proves no time.
        integrated_time=(entry.integrated_time or None) if entry.inclusion_promise else None,
        predicate_type=predicate_type,
    )


@functools.lru_cache(maxsize=None)
def _verifier(trusted_root: Path | None) -> Verifier:
    """One Verifier per trusted root: reading a root's certificates and keys takes time."""
    from sigstore.errors import Error as SigstoreError
    from sigstore.models import TrustedRoot
    from sigstore.verify import Verifier

    path = trusted_root or importlib.resources.files("sigstore").joinpath(*PUBLIC_GOOD_ROOT)
    try:
        return Verifier(trusted_root=TrustedRoot.from_file(str(path)))
    except (OSError, ValueError, SigstoreError) as error:
        raise SignatureRefused(f"trusted root {path} cannot be used: {_detail(error)}") from None


class _PolicyRefusal(Exception):
    """The certificate is sound but names another signer: the message is the whole refusal."""


@attrs.frozen
class _Explained:
    """One of sigstore-python's policies, its refusal said in our words for the certificate."""

    policy: Any
    refusal: Callable[[Certificate], str]

    def verify(self, certificate: Certificate) -> None:
        from sigstore.errors import VerificationError

        try:
            self.policy.verify(certificate)
        except VerificationError:
            raise _PolicyRefusal(self.refusal(certificate)) from None


@attrs.frozen
class _IdentityMatching:
    """cosign's ``--certificate-identity-regexp``: a SAN (URI or email) in which the pattern is found."""

    pattern: str

    def verify(self, certificate: Certificate) -> None:
        if not any(re.search(self.pattern, san) for san in _identities(certificate)):
            raise _PolicyRefusal(f'identity "{_identity(certificate)}" does not match /{shorten(self.pattern)}/')


def _policy(trust: Trust) -> Any:
    from sigstore.verify import policy

    issuer = _Explained(policy.OIDCIssuer(trust.issuer),
                        lambda cert: f'issuer "{shorten(_issuer(cert) or "")}" is not "{shorten(trust.issuer)}"')
    if trust.identity is not None:
        identity: Any = _Explained(policy.Identity(identity=trust.identity),
                                   lambda cert: f'identity "{_identity(cert)}" is not "{shorten(trust.identity)}"')
    else:
        try:
            re.compile(trust.identity_regexp or "")
        except re.error as error:
            raise SignatureRefused(f"verify: identityRegexp /{shorten(trust.identity_regexp)}/: {error}") from None
        identity = _IdentityMatching(trust.identity_regexp or "")
    return policy.AllOf([issuer, identity])


def _identities(certificate: Certificate) -> list[str]:
    from cryptography import x509

    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return names.get_values_for_type(x509.UniformResourceIdentifier) + names.get_values_for_type(x509.RFC822Name)


def _identity(certificate: Certificate) -> str:
    """The certificate's identity as a refusal quotes it (Fulcio writes one SAN)."""
    return shorten(", ".join(_identities(certificate)) or "(none)")


def _matching_identity(certificate: Certificate, pattern: str) -> str:
    return next(san for san in _identities(certificate) if re.search(pattern, san))


def _issuer(certificate: Certificate) -> str | None:
    """Fulcio's issuer extension: the DER string of 1.3.6.1.4.1.57264.1.8, else the raw bytes of .1.1."""
    from cryptography import x509
    from cryptography.hazmat import asn1

    for oid, decode in ((FULCIO_ISSUER_V2, lambda raw: asn1.decode_der(str, raw)), (FULCIO_ISSUER_V1, bytes.decode)):
        try:
            raw = certificate.extensions.get_extension_for_oid(x509.ObjectIdentifier(oid)).value.value
            return decode(raw)
        except (x509.ExtensionNotFound, ValueError):
            continue
    return None


def _explained(error: Exception) -> str:
    """sigstore-python's refusal as one line that says which part failed."""
    from sigstore.dsse import InvalidEnvelope
    from sigstore.errors import CertValidationError
    from sigstore.models import InvalidBundle

    detail = _detail(error)
    if isinstance(error, (InvalidBundle, InvalidEnvelope, ValueError)):
        return f"not a Sigstore bundle: {detail.removeprefix('failed to load bundle: ')}"
    if isinstance(error, CertValidationError):
        why = detail.removeprefix("failed to build timestamp certificate chain: validation failed: ")
        return f"certificate not issued by a CA of the trusted root, or not valid when signed: {why}"
    if "log entry" in detail:
        return f"transparency log entry invalid: {detail.removeprefix('invalid log entry: ')}"
    if detail.startswith("DSSE: "):
        return f"signature does not verify with the certificate's key: {detail.removeprefix('DSSE: ')}"
    return f"Sigstore verification failed: {detail}"


def _detail(error: Exception) -> str:
    return shorten(" ".join(str(error).split()), _DETAIL_CHARACTERS)


# ---- what was signed --------------------------------------------------------------------


_PREDICATE_TYPE_CHARACTERS = 500
"""A predicate type is a URI the lock records; a longer or unprintable one records none (and meets no policy)."""


def _check_statement(payload_type: str, payload: bytes, digest: Digest) -> str | None:
    """The payload must be an in-toto statement whose subject names ``digest``, exactly: a
    signature over another image proves nothing of this one. Any predicate, as cosign's; its
    type is returned (None when it names none), for a policy that requires an attestation."""
    if payload_type != IN_TOTO_PAYLOAD_TYPE:
        raise SignatureRefused(f'payload type "{shorten(payload_type)}" is not {IN_TOTO_PAYLOAD_TYPE}')
    try:
        statement = limits.parse_json(payload)
    except ValueError:
        raise SignatureRefused("the signed payload is not JSON") from None
    if not isinstance(statement, dict) or statement.get("_type") not in IN_TOTO_STATEMENTS:
        raise SignatureRefused("the signed payload is not an in-toto statement")
    subjects = statement.get("subject")
    if not isinstance(subjects, list):
        raise SignatureRefused("the signed statement has no subject list")
    signed = [subject["digest"].get(digest.algorithm) for subject in subjects
              if isinstance(subject, dict) and isinstance(subject.get("digest"), dict)]
    if digest.hex in signed:
        predicate_type = statement.get("predicateType")
        readable = isinstance(predicate_type, str) and 0 < len(predicate_type) <= _PREDICATE_TYPE_CHARACTERS
        return predicate_type if readable and predicate_type.isprintable() else None
    named = [value for value in signed if isinstance(value, str)]
    if not named:
        raise SignatureRefused(f"the signed statement names no {digest.algorithm} digest")
    more = f" (and {len(named) - 1} more)" if len(named) > 1 else ""
    raise SignatureRefused(f"signed digest {digest.algorithm}:{shorten(named[0])}{more} is another image's")
