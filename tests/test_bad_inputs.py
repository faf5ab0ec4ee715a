"""A corpus of bad input: every case is one line, the documented exit status, no traceback, nothing written.

The baseline (images.yaml, the lock and a saved plan) is made once by the real CLI
against ``plain_registry``; each case copies it into its own directory, breaks one
thing (a file, a flag, an environment variable) and runs the CLI as a user would.
Bad input is refused before any registry is asked, so no case needs more than that.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from reconciler.errors import MAX_MESSAGE
from reconciler.files import MAX_BYTES
from tests.helpers_cli import CliResult, run_cli, write_images

HUGE = "x" * (1024 * 1024)
OVER_THE_CAP = b"#" * (MAX_BYTES + 1)
# One exec argument may hold at most 128 KiB on Linux.
LONG_ARGUMENT = "y" * 100_000
IS_ROOT = os.geteuid() == 0


@dataclass(frozen=True)
class Baseline:
    directory: Path
    images: str
    lock: str
    plan: str


@pytest.fixture(scope="module")
def baseline(tmp_path_factory, plain_registry, seeded_images) -> Baseline:
    directory = tmp_path_factory.mktemp("baseline")
    write_images(directory, f"{plain_registry.host}/bad-inputs/", [{"source": seeded_images["oci"].ref}])
    for args in (("lock",), ("plan", "--out", "plan.json")):
        result = run_cli(directory, *args)
        assert result.code == 0, str(result)
    return Baseline(directory, *((directory / name).read_text() for name in ("images.yaml", "images.lock", "plan.json")))


# ----------------------------------------------------------------------------------------- what a case changes

Setup = Callable[[Path, Baseline], None]


def write(name: str, content: str | bytes | Callable[[Baseline], str | bytes]) -> Setup:
    def setup(directory: Path, base: Baseline) -> None:
        data = content(base) if callable(content) else content
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)

    return setup


def lock_edit(old: str, new: str) -> Setup:
    """The baseline's lock with ``old`` replaced by ``new``; the edit must apply."""

    def edited(base: Baseline) -> str:
        assert old in base.lock, old
        return base.lock.replace(old, new, 1)

    return write("images.lock", edited)


def images(body: str) -> Setup:
    """An images.yaml of ``body`` after a valid prefix line (so line 2 is the body's first)."""
    return write("images.yaml", lambda base: base.images.splitlines(keepends=True)[0] + body)


def directory(name: str) -> Setup:
    return lambda workdir, _: (workdir / name).mkdir(parents=True, exist_ok=True)


def symlink(name: str, target: str) -> Setup:
    return lambda workdir, _: (workdir / name).symlink_to(target)


def unreadable(name: str) -> Setup:
    return lambda workdir, _: (workdir / name).chmod(0)


def plan_json(change: Callable[[dict], object]) -> Setup:
    def edited(base: Baseline) -> str:
        document = json.loads(base.plan)
        changed = change(document)
        return json.dumps(document if changed is None else changed, indent=2)

    return write("plan.json", edited)


def key_file(content: str | bytes | Callable[[dict], object]) -> Setup:
    """``key.json``: as given, or a service-account key passed through ``content``."""
    service_account = {"type": "service_account", "client_email": "syncer@example.iam.gserviceaccount.com",
                       "private_key": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
                       "token_uri": "https://127.0.0.1:9/token"}
    if callable(content):
        return write("key.json", lambda _: json.dumps(content(dict(service_account))))
    return write("key.json", content)


def docker_config(content: str | bytes | dict) -> Setup:
    return write("docker/config.json", json.dumps(content) if isinstance(content, dict) else content)


def without(key: str) -> Callable[[dict], dict]:
    return lambda document: {name: value for name, value in document.items() if name != key}


def nested_json(depth: int) -> str:
    return "[" * depth + "]" * depth


DOCKER = {"DOCKER_CONFIG": "docker"}


@dataclass(frozen=True)
class Case:
    args: tuple[str, ...]
    setups: tuple[Setup, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    says: str = ""
    """Text the error line must hold (the file and place, or the flag)."""
    help_for: str | None = None
    """A usage error (exit 2): the command whose help the second line points at ("" for none)."""
    needs_non_root: bool = False


def case(id_: str, *args: str, setups: tuple[Setup, ...] = (), env: dict[str, str] | None = None,
         says: str = "", help_for: str | None = None, needs_non_root: bool = False):
    return pytest.param(Case(args, setups, env or {}, says, help_for, needs_non_root), id=id_)


BILLION_LAUGHS = """\
images: &a [&b "lol", *b, *b, *b, *b, *b, *b, *b, *b]
b: &c [*a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
d: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
e: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
f: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
g: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
h: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]
i: [*i, *i, *i, *i, *i, *i, *i, *i, *i]
"""

TRUSTED_ROOT = ("verify: {keyless: {issuer: https://issuer.example, identity: ci@example.com}, trustedRoot: root.json}\n"
                "images: []\n")

CASES = [
    # --- images.yaml ---------------------------------------------------------------------------------------------
    case("yaml-billion-laughs", "lock", setups=(images(BILLION_LAUGHS),), says="images.yaml:2: YAML anchors"),
    case("yaml-one-anchor", "lock", setups=(images('images:\n- &a {source: "busybox:1"}\n'),),
         says="images.yaml:3: YAML anchors"),
    case("yaml-merge-alias", "plan", setups=(images('base: &b {tag: "1"}\nimages:\n- <<: *b\n  source: a:1\n'),),
         says="images.yaml:2: YAML anchors"),
    case("yaml-deep-nesting", "lock", setups=(images("images: " + "[" * 100 + "]" * 100 + "\n"),),
         says="images.yaml:2: nested deeper than"),
    case("yaml-nesting-past-libyaml", "lock", setups=(images("images: " + "[" * 200_000 + "\n"),),
         says="images.yaml:2: "),
    case("yaml-huge-source", "lock", setups=(images(f'images:\n- source: "{HUGE}"\n'),),
         says="images.yaml:3: images[1]"),
    case("yaml-huge-key", "lock", setups=(images(f"images: []\n{HUGE}: 1\n"),), says="images.yaml:3: "),
    case("yaml-huge-tag", "lock", setups=(images(f'images:\n- source: "busybox@sha256:{"0" * 64}"\n  tag: "{HUGE}"\n'),),
         says="images.yaml:3: images[1]"),
    case("yaml-huge-prefix", "lock", setups=(write("images.yaml", f'targetRepoPrefix: "{HUGE}"\nimages:\n- source: a:1\n'),),
         says="images.yaml:3: images[1]"),
    case("yaml-over-the-cap", "lock", setups=(write("images.yaml", OVER_THE_CAP),), says="images.yaml: cannot read: larger"),
    case("yaml-binary-junk", "lock", setups=(write("images.yaml", bytes(range(256)) * 4),),
         says="images.yaml:2: not UTF-8"),
    case("yaml-latin-1", "lock", setups=(write("images.yaml", b'targetRepoPrefix: x/\nimages:\n- source: "caf\xe9:1"\n'),),
         says="images.yaml:3: not UTF-8"),
    case("yaml-utf-16", "lock", setups=(write("images.yaml", "targetRepoPrefix: x/\nimages: []\n".encode("utf-16")),),
         says="images.yaml:1: not UTF-8"),
    case("yaml-nul-character", "lock", setups=(images('images:\n- source: "a\x00b"\n'),),
         says="images.yaml:3: invalid YAML"),
    case("yaml-empty", "lock", setups=(write("images.yaml", ""),), says="images.yaml: expected a mapping"),
    case("yaml-top-level-list", "lock", setups=(write("images.yaml", "- source: a:1\n"),),
         says="images.yaml:1: expected a mapping"),
    case("yaml-number-too-long", "lock", setups=(images("images: " + "9" * 5000 + "\n"),),
         says="images.yaml:2: invalid YAML"),
    case("yaml-impossible-date", "lock", setups=(images("images: []\nwhen: 2024-13-45\n"),),
         says="images.yaml:3: invalid YAML"),
    case("yaml-python-tag", "lock", setups=(images("images: !!python/object:os.system []\n"),),
         says="images.yaml:2: invalid YAML"),
    case("yaml-duplicate-key", "lock", setups=(images("images: []\nimages: []\n"),),
         says='images.yaml:3: duplicate key "images"'),
    case("yaml-unterminated-quote", "lock", setups=(images('images:\n- source: "a:1\n'),),
         says="images.yaml:"),
    case("yaml-images-not-a-list", "plan", setups=(images("images: busybox\n"),), says="images.yaml:2: images"),
    case("yaml-invalid-reference", "sync", "-i", "images.yaml",
         setups=(images("images:\n- source: Bad_Name:1\n"),), says="images.yaml:3: images[1]"),
    case("tags-invalid-range", "lock", setups=(images('images:\n- source: golang\n  tags: {semver: ">=1.22 <<1.24"}\n'),),
         says='images.yaml:4: images[1] (source "golang"): tags: invalid semver range'),
    case("tags-invalid-regex", "plan", setups=(images('images:\n- source: golang\n  tags: {regex: "(["}\n'),),
         says='images.yaml:4: images[1] (source "golang"): tags: invalid regex pattern'),
    case("tags-latest-zero", "lock", setups=(images('images:\n- source: golang\n  tags: {semver: ">=1", latest: 0}\n'),),
         says='images.yaml:4: images[1] (source "golang"): tags: latest must be 1 or more'),
    case("tags-and-tag", "apply", setups=(images('images:\n- source: golang\n  tag: "1"\n  tags: {semver: ">=1"}\n'),),
         says='images.yaml:4: images[1] (source "golang"): tag: names one tag and "tags" a rule: keep one'),
    case("tags-with-a-tagged-source", "lock", setups=(images('images:\n- source: golang:1\n  tags: {regex: "^1"}\n'),),
         says='images.yaml:3: images[1] (source "golang:1"): source: a tag rule chooses the tags'),
    case("platforms-only-empty", "verify", setups=(images("images:\n- source: a:1\n  platforms: {only: []}\n"),),
         says='images.yaml:4: images[1] (source "a:1"): platforms: only must name at least one platform'),
    case("verify-no-signer", "lock", setups=(images("images:\n- source: a:1\n  verify: {}\n"),),
         says='images.yaml:4: images[1] (source "a:1"): verify: names no signer'),
    case("verify-keyless-no-issuer", "plan", setups=(images("verify: {keyless: {identity: ci}}\nimages: []\n"),),
         says='images.yaml:2: verify.keyless: missing required key "issuer"'),
    case("verify-keyless-two-identities", "lock",
         setups=(images("verify: {keyless: {issuer: i, identity: a, identityRegexp: b}}\nimages: []\n"),),
         says="images.yaml:2: verify.keyless: write exactly one of identity and identityRegexp"),
    case("verify-keyless-bad-regexp", "apply",
         setups=(images("verify: {keyless: {issuer: i, identityRegexp: '(?<'}}\nimages: []\n"),),
         says="images.yaml:2: verify.keyless.identityRegexp: not a Python regex"),
    case("verify-trusted-root-missing", "lock", setups=(images(TRUSTED_ROOT),),
         says="images.yaml:2: verify.trustedRoot: root.json: no such file"),
    case("verify-trusted-root-over-the-cap", "plan", setups=(write("root.json", OVER_THE_CAP), images(TRUSTED_ROOT)),
         says="images.yaml:2: verify.trustedRoot: root.json: cannot be read: larger than"),
    case("verify-trusted-root-not-a-root", "lock", setups=(write("root.json", "{}"), images(TRUSTED_ROOT)),
         says="images.yaml:2: verify.trustedRoot: root.json: not a Sigstore trusted root"),

    # --- paths that cannot be read or written ------------------------------------------------------------------------
    case("images-missing", "lock", "-i", "absent.yaml", says="absent.yaml: file not found"),
    case("images-directory", "plan", "-i", "adir", setups=(directory("adir"),), says="adir: cannot read: Is a directory"),
    case("images-under-a-file", "lock", "-i", "images.yaml/x.yaml", says="images.yaml/x.yaml: cannot read: Not a directory"),
    case("images-dangling-symlink", "apply", "-i", "link.yaml", setups=(symlink("link.yaml", "nowhere.yaml"),),
         says="link.yaml: file not found"),
    case("images-symlink-loop", "lock", "-i", "loop.yaml", setups=(symlink("loop.yaml", "loop.yaml"),),
         says="loop.yaml: cannot read: Too many levels of symbolic links"),
    case("images-endless-device", "lock", "-i", "/dev/zero", says="/dev/zero: cannot read: larger than"),
    case("images-unreadable", "lock", setups=(unreadable("images.yaml"),), says="images.yaml: cannot read: Permission",
         needs_non_root=True),
    case("lock-file-directory", "lock", "-l", "adir", setups=(directory("adir"),), says="adir: cannot write"),
    case("lock-file-directory-plan", "plan", "-l", "adir", setups=(directory("adir"),), says="adir: cannot read"),
    case("lock-missing", "plan", setups=(lambda workdir, _: (workdir / "images.lock").unlink(),),
         says="images.lock: file not found"),
    case("plan-out-directory", "plan", "--out", "adir", setups=(directory("adir"),), says="adir: cannot write"),
    case("plan-out-missing-directory", "plan", "--out", "nodir/plan.json", says="nodir/plan.json: cannot write"),
    case("plan-file-missing", "apply", "absent.json", says="absent.json: saved plan not found"),
    case("plan-file-directory", "apply", "adir", setups=(directory("adir"),), says="adir: cannot read: Is a directory"),
    case("plan-file-unreadable", "apply", "plan.json", setups=(unreadable("plan.json"),),
         says="plan.json: cannot read: Permission", needs_non_root=True),

    # --- edited locks: (id, command, text replaced, by what, what the error says) --------------------------------------
    *[case(id_, *command.split(), setups=(lock_edit(old, new),), says=says) for id_, command, old, new, says in [
        ("lock-bad-digest", "plan", "digest: sha256:", "digest: sha256:zz", "images.lock:7: images[1]"),
        ("lock-digest-number", "lock --check", "digest: sha256:", "digest: 42 # sha256:", "images.lock:7: images[1]"),
        ("lock-version-2", "apply", "version: 1", "version: 2", "images.lock:2: version: unsupported lock version 2"),
        ("lock-version-string", "plan", "version: 1", "version: '1'", "images.lock:2: version"),
        ("lock-no-version", "plan", "version: 1\n", "", 'images.lock:2: missing required key "version"'),
        ("lock-duplicate-key", "plan", "  target:", "  source: again\n  target:", "images.lock:6: images[1]"),
        ("lock-extra-field", "lock --check", "  target:", "  extra: 1\n  target:", 'unknown key "extra"'),
        ("lock-platforms-string", "plan", "platforms: []", "platforms: linux/amd64", "images.lock:9: images[1]"),
        ("lock-media-type", "plan", "mediaType: ", "mediaType: text/plain # ", "images.lock:8: images[1]"),
        ("lock-anchor", "plan", "platforms: []", "platforms: &p []", "images.lock:9: YAML anchors"),
        ("lock-signature-unknown-form", "plan", "  mediaType: ",
         f"  signature: {{digest: sha256:{'a' * 64}, form: sig, proof: {{key: k}}}}\n  mediaType: ",
         "images.lock:8: images[1]"),
        ("lock-signature-no-signer", "lock --check", "  mediaType: ",
         f"  signature: {{digest: sha256:{'a' * 64}, form: bundle, proof: {{integratedTime: 1}}}}\n  mediaType: ",
         "signature.proof: names neither a key nor an identity"),
    ]],
    case("lock-truncated", "plan", setups=(write("images.lock", lambda base: base.lock[: base.lock.index("digest:")]),),
         says="images.lock"),
    case("lock-over-the-cap", "plan", setups=(write("images.lock", OVER_THE_CAP),), says="images.lock: cannot read: larger"),

    # --- saved plans -------------------------------------------------------------------------------------------------
    case("plan-unknown-action", "apply", "plan.json",
         setups=(plan_json(lambda plan: plan["images"][0].update(action="explode")),), says="plan.json:"),
    case("plan-version-2", "apply", "plan.json", setups=(plan_json(lambda plan: plan.update(version=2)),),
         says="plan.json:1: not a saved plan of version 1"),
    case("plan-extra-field", "apply", "plan.json", setups=(plan_json(lambda plan: plan.update(extra=True)),),
         says='unknown key "extra"'),
    case("plan-bad-digest", "apply", "plan.json",
         setups=(plan_json(lambda plan: plan["images"][0].update(digest="sha256:nothex")),), says="plan.json:"),
    case("plan-huge-action", "apply", "plan.json",
         setups=(plan_json(lambda plan: plan["images"][0].update(action=HUGE)),), says="plan.json:"),
    case("plan-truncated", "apply", "plan.json", setups=(write("plan.json", lambda base: base.plan[:40]),),
         says="plan.json:"),
    case("plan-a-list", "apply", "plan.json", setups=(plan_json(lambda plan: [plan]),), says="plan.json:"),
    case("plan-duplicate-key", "apply", "plan.json",
         setups=(write("plan.json", lambda base: base.plan.replace('"version": 1,', '"version": 1, "version": 1,')),),
         says='duplicate key "version"'),
    case("plan-binary", "apply", "plan.json", setups=(write("plan.json", os.urandom(4096)),), says="plan.json"),

    # --- key files ---------------------------------------------------------------------------------------------------
    case("key-missing", "lock", "-t", "absent.json", says="absent.json does not exist"),
    case("key-directory", "plan", "--target-key-file", "adir", setups=(directory("adir"),), says="key file adir"),
    case("key-not-json", "lock", "-t", "key.json", setups=(key_file("{not json"),), says="key.json is not JSON"),
    case("key-a-list", "lock", "-t", "key.json", setups=(key_file("[]"),), says="key.json is not a JSON object"),
    case("key-wrong-type", "lock", "-t", "key.json", setups=(key_file(lambda key: {**key, "type": "user"}),),
         says="not a service-account key"),
    case("key-missing-field", "lock", "-t", "key.json", setups=(key_file(without("private_key")),),
         says="lacks the field(s) private_key"),
    case("key-bad-private-key", "lock", "-t", "key.json", setups=(key_file(lambda key: key),),
         says="its private_key is not a PEM RSA private key"),
    case("key-not-utf-8", "lock", "-t", "key.json", setups=(key_file(b"\xff\xfe{}"),), says="not UTF-8"),
    case("key-deeply-nested", "lock", "-t", "key.json", setups=(key_file(nested_json(100_000)),),
         says="key.json is not JSON"),
    case("key-over-the-cap", "lock", "-t", "key.json", setups=(key_file(OVER_THE_CAP),), says="larger than"),
    case("key-from-environment", "lock", env={"SYNCER_TARGET_KEY_FILE": "absent.json"}, says="absent.json"),

    # --- docker and podman auth files --------------------------------------------------------------------------------
    case("docker-bad-json", "lock", setups=(docker_config('{"auths": {'),), env=DOCKER,
         says="docker/config.json: invalid JSON at line 1"),
    case("docker-bad-base64", "plan", setups=(docker_config({"auths": {"quay.io": {"auth": "!!not base64!!"}}}),),
         env=DOCKER, says="auth is not base64"),
    case("docker-auth-without-colon", "lock", setups=(docker_config({"auths": {"x.io": {"auth": "dXNlcg=="}}}),),
         env=DOCKER, says="has no ':' between user and password"),
    case("docker-auths-a-list", "lock", setups=(docker_config({"auths": []}),), env=DOCKER,
         says="auths is not a JSON object"),
    case("docker-helper-not-a-name", "lock", setups=(docker_config({"credHelpers": {"x.io": 7}}),), env=DOCKER,
         says="is not a credential helper name"),
    case("docker-deeply-nested", "lock", setups=(docker_config(nested_json(100_000)),), env=DOCKER,
         says="docker/config.json: invalid JSON"),
    case("docker-over-the-cap", "lock", setups=(docker_config(OVER_THE_CAP),), env=DOCKER, says="larger than"),
    case("docker-config-directory", "lock", setups=(directory("docker/config.json"),), env=DOCKER,
         says="docker/config.json: cannot read: Is a directory"),
    case("registry-auth-file-not-utf-8", "lock", setups=(write("auth.json", b'{"auths": "\xff"}'),),
         env={"REGISTRY_AUTH_FILE": "auth.json"}, says="auth.json: not UTF-8"),
    case("docker-huge-key", "lock", setups=(docker_config({"auths": {HUGE: "x"}}),), env=DOCKER,
         says="is not a JSON object"),

    # --- CA files ----------------------------------------------------------------------------------------------------
    case("ca-missing", "lock", "--ca-file", "absent.pem", says="CA file absent.pem: file not found"),
    case("ca-directory", "plan", "--ca-file", "adir", setups=(directory("adir"),), says="CA file adir: cannot read"),
    case("ca-empty", "lock", "--ca-file", "ca.pem", setups=(write("ca.pem", ""),), says="CA file ca.pem: not a bundle"),
    case("ca-not-pem", "lock", "--ca-file", "images.yaml", says="CA file images.yaml: not a bundle"),
    case("ca-binary", "apply", "--ca-file", "ca.pem", setups=(write("ca.pem", bytes(range(256))),),
         says="CA file ca.pem: not a bundle"),
    case("ca-broken-certificate", "lock", "--ca-file", "ca.pem",
         setups=(write("ca.pem", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),),
         says="CA file ca.pem: not a bundle"),
    case("ca-over-the-cap", "lock", "--ca-file", "ca.pem", setups=(write("ca.pem", OVER_THE_CAP),),
         says="CA file ca.pem: cannot read: larger"),
    case("ssl-cert-file-garbage", "lock", setups=(write("ca.pem", "garbage\n"),), env={"SSL_CERT_FILE": "ca.pem"},
         says="CA file ca.pem: not a bundle"),
    case("ssl-cert-file-missing", "sync", "-i", "images.yaml", env={"SSL_CERT_FILE": "absent.pem"},
         says="CA file absent.pem"),

    # --- flags and arguments -----------------------------------------------------------------------------------------
    case("flag-unknown-lock", "lock", "--bogus", help_for="lock", says="No such option: --bogus"),
    case("flag-unknown-plan", "plan", "--refresh", help_for="plan", says="No such option: --refresh"),
    case("flag-unknown-apply", "apply", "--force", help_for="apply", says="No such option: --force"),
    case("flag-unknown-sync", "sync", "-i", "images.yaml", "--bogus", help_for="sync", says="No such option: --bogus"),
    case("flag-unknown-old-command-line", "--images-file=images.yaml", "--dry-run=false", "--bogus", help_for="sync",
         says="No such option: --bogus"),
    case("command-unknown", "frobnicate", help_for="", says="No such command"),
    case("flag-missing-value", "lock", "-i", help_for="lock", says="'-i' requires an argument"),
    case("flag-missing-value-old-command-line", "--images-file", help_for="sync", says="'--images-file' requires an argument"),
    case("option-missing-sync", "sync", help_for="sync", says="Missing option '--images-file'"),
    case("names-without-upgrade", "lock", "busybox:1", help_for="lock", says="naming sources needs --upgrade"),
    case("format-unknown", "plan", "--format", "yaml", help_for="plan", says="'--format'"),
    case("max-requests-zero", "apply", "--max-requests", "0", help_for="apply", says="'--max-requests'"),
    case("max-requests-word", "lock", "--max-requests", "many", help_for="lock", says="'--max-requests'"),
    case("retries-too-many", "plan", "--retries", "99", help_for="plan", says="'--retries'"),
    case("timeout-zero", "lock", "--timeout", "0", help_for="lock", says="'--timeout'"),
    case("upload-chunk-zero", "apply", "--upload-chunk-mib", "0", help_for="apply", says="'--upload-chunk-mib'"),
    case("dry-run-maybe", "--images-file=images.yaml", "--dry-run=maybe", help_for="sync", says="'--dry-run'"),
    case("dry-run-long", "sync", "-i", "images.yaml", f"--dry-run={LONG_ARGUMENT}", help_for="sync", says="'--dry-run'"),
    case("extra-argument-long", "sync", "-i", "images.yaml", "-d", LONG_ARGUMENT, help_for="sync",
         says="unexpected extra argument"),
    case("format-long", "plan", "--format", LONG_ARGUMENT, help_for="plan", says="'--format'"),

    # --- environment -------------------------------------------------------------------------------------------------
    case("env-dry-run", "--images-file=images.yaml", env={"SYNCER_DRY_RUN": "perhaps"}, help_for="sync", says="'--dry-run'"),
    case("env-images-file-missing", env={"SYNCER_IMAGES_FILE": "absent.yaml"}, says="absent.yaml: file not found"),
    case("env-socks-proxy", "plan", env={"HTTPS_PROXY": "socks5://127.0.0.1:1080"}, says="HTTPS_PROXY"),
    case("env-empty-access-token", "lock", env={"SYNCER_ACCESS_TOKEN": " "}, says="access token given is empty"),
]


# ------------------------------------------------------------------------------------------------------- the test


def snapshot(root: Path) -> dict[str, tuple[int, str]]:
    """Every entry under ``root``: its mode and, for a readable file, a hash of its bytes."""
    entries = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        content = ""
        if stat.S_ISREG(info.st_mode) and os.access(path, os.R_OK):
            content = hashlib.sha256(path.read_bytes()).hexdigest()
        elif stat.S_ISLNK(info.st_mode):
            content = os.readlink(path)
        entries[str(path.relative_to(root))] = (info.st_mode, content)
    return entries


def assert_one_line(result: CliResult, case_: Case) -> None:
    """Bad input: one error line, exit 1; a usage error: that line and where help is, exit 2."""
    assert "Traceback" not in result.stdout + result.stderr, str(result)
    assert result.stdout == "", str(result)
    line, *rest = result.stderr_lines or [""]
    assert line.startswith("error: ") and case_.says in line, str(result)
    assert len(line) <= len("error: ") + MAX_MESSAGE, str(result)[:2000]
    if case_.help_for is None:
        assert (result.code, rest) == (1, []), str(result)
    else:
        command = " ".join(["image-syncer", case_.help_for]).strip()
        assert (result.code, rest) == (2, [f"Try '{command} -h' for help."]), str(result)


@pytest.mark.parametrize("case_", CASES)
def test_bad_input_is_one_line_and_changes_nothing(case_: Case, baseline: Baseline, tmp_path: Path) -> None:
    if case_.needs_non_root and IS_ROOT:
        pytest.skip("root reads a file whatever its mode")
    workdir = tmp_path / "work"
    shutil.copytree(baseline.directory, workdir, symlinks=True)
    for setup in case_.setups:
        setup(workdir, baseline)
    before = snapshot(workdir)

    result = run_cli(workdir, *case_.args, env=case_.env)

    assert_one_line(result, case_)
    assert snapshot(workdir) == before


def test_the_corpus_is_large_and_every_case_is_distinct() -> None:
    ids = [param.id for param in CASES]
    assert len(ids) >= 60 and len(set(ids)) == len(ids)


def test_a_quoted_value_is_cut_short(baseline: Baseline, tmp_path: Path) -> None:
    """A 1 MiB source names its entry in under a line's worth of characters, with the cut marked."""
    workdir = tmp_path / "work"
    shutil.copytree(baseline.directory, workdir)
    images(f'images:\n- source: "{HUGE}"\n')(workdir, baseline)

    result = run_cli(workdir, "lock")

    assert result.code == 1, str(result)[:2000]
    [line] = result.stderr_lines
    assert line.startswith('error: images.yaml:3: images[1] (source "xxxxxxxx'), line[:200]
    assert "…" in line and len(line) < 400, line[:2000]
