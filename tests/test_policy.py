"""policy.py: images.yaml's ``verify:`` as a SignaturePolicy (the Trust it makes, its digest
for the lock, its description for messages), read through config.load as users write it; every
verify: that asks nothing or the impossible is one line naming the file, line and key."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler import config, files
from reconciler.errors import InputError
from reconciler.oci.digest import Digest
from reconciler.policy import SignaturePolicy
from reconciler.registry.cosign import load_public_key
from reconciler.registry.sigstore import Trust
from tests.harness import cosign as cosign_keys
from tests.test_config import load_text, write


TRUSTED_ROOT = Path(__file__).parent / "data" / "sigstore" / "trusted_root_pgi.json"
ISSUER = "https://token.actions.githubusercontent.com"
WORKFLOW = "https://github.com/acme/app/.github/workflows/release.yml@refs/tags/v1.0.0"


@pytest.fixture
def signers(tmp_path: Path) -> Path:
    """A folder with images.yaml's neighbours: a cosign key and a trusted root."""
    cosign_keys.write_public_key(cosign_keys.new_key(), tmp_path / "cosign.pub")
    shutil.copy(TRUSTED_ROOT, tmp_path / "trusted_root.json")
    return tmp_path


def policy_of(tmp_path: Path, verify: str, top: str = "") -> SignaturePolicy | None:
    loaded = load_text(tmp_path, f"targetRepoPrefix: p.example/\n{top}images:\n- source: busybox:1\n  verify: {verify}\n")
    return loaded.desired[0].signature


def test_a_key_alone_is_its_file_and_the_digest_of_its_bytes_as_before_keyless(signers):
    policy = policy_of(signers, "{cosignKey: cosign.pub}")

    assert policy.key_file == signers / "cosign.pub"
    assert policy.digest == str(Digest.of((signers / "cosign.pub").read_bytes()))
    assert policy.described == "the cosign key cosign.pub"
    assert policy.trust.key.public_numbers() == load_public_key(signers / "cosign.pub").public_numbers()
    assert (policy.trust.issuer, policy.trust.identity, policy.trust.identity_regexp, policy.trust.trusted_root) == (
        None, None, None, None)


def test_keyless_with_a_trusted_root_makes_its_trust(signers):
    policy = policy_of(signers, f"{{keyless: {{issuer: '{ISSUER}', identity: '{WORKFLOW}'}}, trustedRoot: trusted_root.json}}")

    assert policy.trust == Trust(issuer=ISSUER, identity=WORKFLOW, trusted_root=signers / "trusted_root.json")
    assert policy.trust.key is None and policy.key_file is None
    assert policy.described == f'keyless identity "{WORKFLOW}" from issuer "{ISSUER}" (trusted root trusted_root.json)'
    canonical = json.dumps({"identity": WORKFLOW, "identityRegexp": None, "issuer": ISSUER, "key": None,
                            "trustedRoot": str(Digest.of(TRUSTED_ROOT.read_bytes()))}, separators=(",", ":"))
    assert policy.digest == str(Digest.of(canonical.encode()))


def test_a_key_and_a_keyless_pattern_together(signers):
    policy = policy_of(signers, f"{{cosignKey: cosign.pub, keyless: {{issuer: '{ISSUER}', identityRegexp: '^https://github\\.com/acme/'}}}}")

    assert policy.trust.key is not None and policy.trust.identity is None
    assert policy.trust.identity_regexp == "^https://github\\.com/acme/"
    assert policy.described == (f'the cosign key cosign.pub or keyless identity matching /^https://github\\.com/acme/'
                                f'/ from issuer "{ISSUER}"')
    assert policy.digest != policy_of(signers, "{cosignKey: cosign.pub}").digest


@pytest.mark.parametrize("verify", [
    f"{{keyless: {{issuer: '{ISSUER}', identity: '{WORKFLOW}x'}}}}",
    f"{{keyless: {{issuer: '{ISSUER}x', identity: '{WORKFLOW}'}}}}",
    f"{{keyless: {{issuer: '{ISSUER}', identityRegexp: '{WORKFLOW}'}}}}",
    f"{{keyless: {{issuer: '{ISSUER}', identity: '{WORKFLOW}'}}, trustedRoot: trusted_root.json}}",
    f"{{keyless: {{issuer: '{ISSUER}', identity: '{WORKFLOW}'}}, cosignKey: cosign.pub}}",
], ids=["identity", "issuer", "regexp", "trusted root", "key"])
def test_every_part_of_a_keyless_policy_changes_its_digest(signers, verify):
    plain = policy_of(signers, f"{{keyless: {{issuer: '{ISSUER}', identity: '{WORKFLOW}'}}}}")

    assert policy_of(signers, verify).digest != plain.digest


def test_a_verify_per_image_replaces_the_top_level_one_whole_and_files_are_read_once(signers):
    loaded = load_text(signers, f"""\
        targetRepoPrefix: p.example/
        verify: {{cosignKey: cosign.pub, trustedRoot: trusted_root.json}}
        images:
        - source: a:1
        - source: b:1
          verify: {{keyless: {{issuer: '{ISSUER}', identity: '{WORKFLOW}'}}}}
        - source: c:1
        """)

    first, keyless, third = (image.signature for image in loaded.desired)
    assert first is third and first.trust.trusted_root == signers / "trusted_root.json"
    assert keyless.trust == Trust(issuer=ISSUER, identity=WORKFLOW) and keyless.key_file is None


def test_sigstore_is_imported_only_for_a_trusted_root(signers):
    """``import sigstore`` costs a quarter of a second: a keyless policy without a trusted root does not need it."""
    write(signers, f"targetRepoPrefix: p.example/\nimages:\n- source: a:1\n"
                   f"  verify: {{keyless: {{issuer: '{ISSUER}', identity: '{WORKFLOW}'}}, cosignKey: cosign.pub}}\n")
    probe = ("import sys; from reconciler import config; config.load(sys.argv[1]); "
             "print('sigstore' in sys.modules, 'pydantic' in sys.modules)")

    ran = subprocess.run([sys.executable, "-c", probe, str(signers / "images.yaml")], capture_output=True, text=True,
                         check=True)

    assert ran.stdout.split() == ["False", "False"]


def test_attestations_are_required_by_predicate_type_each_once_and_count_in_the_digest(signers):
    plain = policy_of(signers, "{cosignKey: cosign.pub}")
    attested = policy_of(signers, "{cosignKey: cosign.pub, attestations: [https://slsa.dev/provenance/v1, "
                                  "https://spdx.dev/Document, https://slsa.dev/provenance/v1]}")

    assert attested.attestations == ("https://slsa.dev/provenance/v1", "https://spdx.dev/Document")
    assert attested.digest != plain.digest and plain.attestations == ()
    assert attested.described == ("the cosign key cosign.pub, with attestations of https://slsa.dev/provenance/v1, "
                                  "https://spdx.dev/Document")


KEYLESS_AT = 'images[1] (source "busybox:1"): verify.keyless'


@pytest.mark.parametrize(("verify", "message"), [
    ("{}", 'images[1] (source "busybox:1"): verify: names no signer: write cosignKey, keyless or both'),
    ("{trustedRoot: trusted_root.json}",
     'images[1] (source "busybox:1"): verify: names no signer: write cosignKey, keyless or both'),
    ("{keyless: {identity: a}}", f'{KEYLESS_AT}: missing required key "issuer"'),
    ("{keyless: {issuer: i}}", f"{KEYLESS_AT}: write exactly one of identity and identityRegexp"),
    ("{keyless: {issuer: i, identity: a, identityRegexp: b}}",
     f"{KEYLESS_AT}: write exactly one of identity and identityRegexp"),
    ("{keyless: {issuer: '', identity: a}}", f"{KEYLESS_AT}.issuer: must not be empty"),
    ("{keyless: {issuer: i, identity: ''}}", f"{KEYLESS_AT}.identity: must not be empty"),
    ("{keyless: {issuer: i, identityRegexp: ''}}", f"{KEYLESS_AT}.identityRegexp: must not be empty"),
    ("{keyless: {issuer: i, identityRegexp: '(['}}",
     f"{KEYLESS_AT}.identityRegexp: not a Python regex: unterminated character set at position 1"),
    ("{keyless: {issuer: i, identity: a, subject: b}}", f'{KEYLESS_AT}: unknown key "subject"'),
    ("{keyless: {issuer: 7, identity: a}}", f"{KEYLESS_AT}.issuer: expected a string, got a number 7"),
    ("{cosignKey: ''}", 'images[1] (source "busybox:1"): verify.cosignKey: must not be empty'),
    ("{cosignKey: cosign.pub, attestations: ['']}",
     'images[1] (source "busybox:1"): verify.attestations[1]: must not be empty'),
    ("{cosignKey: cosign.pub, trustedRoot: ''}", 'images[1] (source "busybox:1"): verify.trustedRoot: must not be empty'),
    ("{cosignKey: cosign.pub, trustedRoot: absent.json}",
     'images[1] (source "busybox:1"): verify.trustedRoot: absent.json: no such file'),
    ("{cosignKey: cosign.pub, trustedRoot: cosign.pub}",
     'images[1] (source "busybox:1"): verify.trustedRoot: cosign.pub: not a Sigstore trusted root: '
     "Invalid JSON: invalid number at line 1 column 2"),
    ("{cosignKey: cosign.pub, trustedRoot: empty.json}",
     'images[1] (source "busybox:1"): verify.trustedRoot: empty.json: not a Sigstore trusted root: '
     "mediaType: Field required"),
    ("{cosignKey: cosign.pub, trustedRoot: huge.json}",
     'images[1] (source "busybox:1"): verify.trustedRoot: huge.json: cannot be read: larger than the limit of 10 MiB'),
    ("{cosignKey: cosign.pub, trustedRoot: latin-1.json}",
     'images[1] (source "busybox:1"): verify.trustedRoot: latin-1.json: not UTF-8 text'),
], ids=["empty", "trusted root alone", "no issuer", "no identity", "two identities", "empty issuer", "empty identity",
        "empty regexp", "regexp that does not compile", "unknown key", "issuer a number", "empty key file name",
        "empty attestation",
        "empty trusted root name", "trusted root missing", "trusted root not JSON", "trusted root not a root",
        "trusted root over the cap", "trusted root not UTF-8"])
def test_a_verify_that_asks_nothing_or_the_impossible_is_one_line(signers, verify, message):
    (signers / "empty.json").write_text("{}")
    (signers / "huge.json").write_bytes(b" " * (files.MAX_BYTES + 1))
    (signers / "latin-1.json").write_bytes(b'{"mediaType": "caf\xe9"}')
    path = write(signers, f"targetRepoPrefix: p.example/\nimages:\n- source: busybox:1\n  verify: {verify}\n")

    with pytest.raises(InputError) as raised:
        config.load(path)

    assert str(raised.value) == f"{path}:4: {message}"


def test_a_top_level_verify_error_names_its_line(signers):
    path = write(signers, "targetRepoPrefix: p.example/\nverify:\n  keyless: {issuer: i}\nimages: []\n")

    with pytest.raises(InputError) as raised:
        config.load(path)

    assert str(raised.value) == f"{path}:3: verify.keyless: write exactly one of identity and identityRegexp"
