"""images.yaml's ``verify:``: which signer a source's signature must come from, as a
SignaturePolicy (the Trust that registry/sigstore.py and cosign.py check signatures against,
and what the lock records of it). Its files (a key, a trusted root) are read once per load.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

import attrs

from reconciler import files
from reconciler.documents import YamlDocument
from reconciler.oci.digest import Digest

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

    from reconciler.registry.sigstore import Trust


@attrs.frozen
class KeylessEntry:
    issuer: str
    identity: str | None = None
    identity_regexp: str | None = None


@attrs.frozen
class VerifyEntry:
    cosign_key: str | None = None
    keyless: KeylessEntry | None = None
    trusted_root: str | None = None
    attestations: tuple[str, ...] = ()


@attrs.frozen
class SignaturePolicy:
    """What images.yaml's ``verify:`` requires of a source's signature before it is pinned or copied."""

    trust: Trust
    key_file: Path | None
    digest: str
    """What the lock's ``signedBy`` records: a changed key, identity, issuer or trusted root is a new
    input, so the pins get checked again. For a key alone, the digest of the key file's bytes."""
    described: str
    """For one-line messages: ``the cosign key cosign.pub``, ``keyless identity "…" from issuer "…"``."""
    attestations: tuple[str, ...] = ()
    """Predicate types (SLSA provenance, …) of in-toto attestations the same signer must have made
    of the image, each besides its signature."""


def signature_policy(
    document: YamlDocument, where: tuple, verify: VerifyEntry | None, signer_files: SignerFiles
) -> SignaturePolicy | None:
    """What a ``verify:`` requires, its files relative to images.yaml."""
    if verify is None:
        return None
    if verify.cosign_key is None and verify.keyless is None:
        raise document.error(where, "names no signer: write cosignKey, keyless or both")
    from reconciler.registry.sigstore import Trust

    key_file, key, key_digest = (signer_files.key((*where, "cosignKey"), verify.cosign_key)
                                 if verify.cosign_key is not None else (None, None, None))
    keyless = verify.keyless
    if keyless is not None:
        _check_keyless(document, (*where, "keyless"), keyless)
    root_file, root_digest = (signer_files.trusted_root((*where, "trustedRoot"), verify.trusted_root)
                              if verify.trusted_root is not None else (None, None))
    # KeylessEntry's fields are Trust's, by name.
    trust = Trust(key=key, trusted_root=root_file, **(attrs.asdict(keyless) if keyless else {}))
    attestations = _attestations(document, (*where, "attestations"), verify.attestations)
    if keyless is None and root_file is None and not attestations:
        digest = key_digest  # as before keyless signatures: the locks made then keep matching
    else:
        digest = str(Digest.of(json.dumps(
            {"key": key_digest, "issuer": trust.issuer, "identity": trust.identity,
             "identityRegexp": trust.identity_regexp, "trustedRoot": root_digest,
             **({"attestations": list(attestations)} if attestations else {})},
            sort_keys=True, separators=(",", ":")).encode()))
    return SignaturePolicy(trust=trust, key_file=key_file, digest=digest, described=_described(verify),
                           attestations=attestations)


def _attestations(document: YamlDocument, where: tuple, written: tuple[str, ...]) -> tuple[str, ...]:
    """The predicate types required, each once, sorted: the order they are written in says nothing."""
    for index, predicate_type in enumerate(written):
        if not predicate_type:
            raise document.error((*where, index), "must not be empty")
    return tuple(sorted(set(written)))


def _check_keyless(document: YamlDocument, where: tuple, keyless: KeylessEntry) -> None:
    """An identity names one signer exactly, or by a pattern that compiles; never nobody or everybody."""
    if (keyless.identity is None) == (keyless.identity_regexp is None):
        raise document.error(where, "write exactly one of identity and identityRegexp")
    for key, value in (("issuer", keyless.issuer), ("identity", keyless.identity),
                       ("identityRegexp", keyless.identity_regexp)):
        if value == "":
            raise document.error((*where, key), "must not be empty")
    if keyless.identity_regexp is not None:
        try:
            re.compile(keyless.identity_regexp)
        except re.error as error:
            raise document.error((*where, "identityRegexp"), f"not a Python regex: {error}") from None


def _described(verify: VerifyEntry) -> str:
    signers = [f"the cosign key {verify.cosign_key}"] if verify.cosign_key is not None else []
    if (keyless := verify.keyless) is not None:
        identity = (f'identity "{keyless.identity}"' if keyless.identity is not None
                    else f"identity matching /{keyless.identity_regexp}/")
        signers.append(f'keyless {identity} from issuer "{keyless.issuer}"')
    trusted_root = f" (trusted root {verify.trusted_root})" if verify.trusted_root is not None else ""
    attested = f", with attestations of {', '.join(sorted(set(verify.attestations)))}" if verify.attestations else ""
    return " or ".join(signers) + trusted_root + attested


@attrs.define
class SignerFiles:
    """The key and trusted root files that ``verify:`` entries name, each read once per load."""

    document: YamlDocument
    keys: dict[Path, tuple[PublicKeyTypes, str]] = attrs.Factory(dict)
    trusted_roots: dict[Path, str] = attrs.Factory(dict)

    def key(self, where: tuple, written: str) -> tuple[Path, PublicKeyTypes, str]:
        """The key file, its key, and the digest of its bytes."""
        from reconciler.registry import cosign  # cryptography is loaded only for files that ask for signatures

        path = self._path(where, written)
        if path not in self.keys:
            try:
                key = cosign.load_public_key(path)
            except cosign.InvalidKey as error:
                raise self.document.error(where, f"{written}: {error}") from None
            self.keys[path] = key, str(Digest.of(path.read_bytes()))
        return path, *self.keys[path]

    def trusted_root(self, where: tuple, written: str) -> tuple[Path, str]:
        """The trusted root file, once sigstore-python reads it, and the digest of its bytes."""
        path = self._path(where, written)
        if path not in self.trusted_roots:
            try:
                self.trusted_roots[path] = _trusted_root_digest(path)
            except ValueError as error:
                raise self.document.error(where, f"{written}: {error}") from None
        return path, self.trusted_roots[path]

    def _path(self, where: tuple, written: str) -> Path:
        if not written:
            raise self.document.error(where, "must not be empty")
        return self.document.path.parent / written


def _trusted_root_digest(path: Path) -> str:
    """Raises ValueError saying why the file is no trusted root, in a few words without its name."""
    text = files.read_named(path, not_text="not UTF-8 text")  # bounded; sigstore-python reads a file whole
    import pydantic  # sigstore-python's models are pydantic's
    from sigstore.models import TrustedRoot  # slow to import: only for files that name a trusted root

    try:
        TrustedRoot.from_file(str(path))
    except Exception as error:  # whatever it raises (JSON, pydantic, protobuf), sigstore-python refuses the file
        if isinstance(error, pydantic.ValidationError) and error.errors():  # a few lines for each field
            first = error.errors()[0]
            problem = ": ".join(filter(None, (".".join(map(str, first["loc"])), first["msg"])))
        else:
            problem = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ValueError(f"not a Sigstore trusted root: {problem}") from None
    return str(Digest.of(text.encode()))
