"""The hostile-registry corpus (issue 20): the real CLI, as a child process, against registries that lie.

Each case scripts a ``HostileRegistry`` (tests/harness/hostile.py) on loopback, writes an
images.yaml naming it and a bystander image on a real docker-registry (``plain_registry``),
runs ``python -m reconciler lock|plan|apply|verify`` and checks, besides what the case itself
asks:

- the exit code;
- one line per failure (``error: …`` on stderr, or a report's ``  x|!|? <target>`` line on
  stdout), each naming the hostile image (a bounded read: its registry, host:port, and the
  cap), none the bystander;
- no ``Traceback``, no ``internal error``;
- images.lock byte for byte as it was when the run fails (lock cases start from an existing
  lock that pins the bystander);
- no request to another origin (``other``, a second recording server, or the hostile
  server under another name) carried an Authorization header: the hostile registry wants
  docker-config Basic credentials, given for its own host only;
- the child's peak RSS (``ru_maxrss`` from ``os.wait4``) at most 150 MiB, and no answer read
  much past the largest cap (an endless one goes on to 320 MiB unless the reader stops);
- where a finding is per-image, the bystander is still pinned (lock), planned (plan) or
  copied (apply).

Cases are labelled by the issue's finding (1-8): each fails at e357994, the main the issue
was filed against. ``held`` cases are the issue's "what held" list and the other side of a
finding (a lock at the referrer cap is readable; Ctrl-C while verify or lock reads stall):
they pass there and must keep passing.

Every generated body is produced lazily; endless ones stop by themselves (bytes or time)
and as soon as the client hangs up. ``HOSTILE_SEED`` changes the seeded image contents
(printed with every failure); ``HOSTILE_PRODUCT_ROOT`` runs the cases against another
checkout of the product (e.g. an older commit, to see them fail there).
"""

from __future__ import annotations

import base64
import dataclasses
import itertools
import json
import os
import re
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from tests.harness import cosign as cosign_keys
from tests.harness import images
from tests.harness.hostile import (MiB, Answer, HostileRegistry, Launched, Measured, body_size, digest_of, endless,
                                   pieces, repeated, run_measured)
from tests.harness.images import OCI_INDEX, OCI_MANIFEST, canonical_json
from tests.harness.rawhttp import RawRegistry
from tests.helpers_cli import cli_env, write_images

SEED = os.environ.get("HOSTILE_SEED", "20")
USER, PASSWORD = "alice", "s3cr3t-hostile-Pa55"
PEAK_RSS_KIB = 150 * 1024
FAST = ("--retries", "0", "--timeout", "5")
"""Most cases want one answer, not the retry policy's patience."""
FAILURE_LINE = re.compile(r"^(error: |  [x!?] )")
LONG_NUMBER = re.compile(r"\d{10,}")
LINE_CHARACTERS = 1500
"""A failure line's length at most: a target, and a message of at most 1,000 characters (errors.MAX_MESSAGE),
however much a registry sent."""
STALL = 15.0
READ_PAST_CAP = 32 * MiB
"""No answer is taken further than this: the largest cap (8 MiB) plus what socket buffers hold.
An endless body goes on to 320 MiB unless the reader stops."""
"""How long a stalled read is held: far longer than a prompt stop needs."""

JSON = {"Content-Type": "application/json"}
_PREFIXES = itertools.count(1)


# ------------------------------------------------------------------------------------------ the world of a case

@dataclass
class Expect:
    """What a case runs and what it must see, beyond the checks every case gets."""

    args: tuple[str, ...]
    code: int
    failures: int = 0
    says: tuple[str, ...] = ()
    """Regexes (case-insensitive) every failure line matches: the substance of the message."""
    output: tuple[str, ...] = ()
    """Regexes found somewhere in stdout or stderr."""
    bystander: bool = True
    """Whether the bystander is in the run (and so must be pinned, planned or copied)."""
    names_image: bool = True
    """Whether each failure line names the hostile image (False: the line is about a file)."""
    names_registry: bool = False
    """Whether each failure line names the hostile registry as host:port (each names its image anyway)."""
    then: Callable[[World, Measured], None] | None = None
    on_start: Callable[[World, Launched], None] | None = None
    timeout: float = 90.0


@dataclass
class World:
    tmp: Path
    hostile: HostileRegistry
    other: HostileRegistry
    target: object  # the real registry images are mirrored to (second_plain_registry)
    bystander: images.PushedImage
    prefix: str
    ca_file: Path
    env: dict[str, str] = field(default_factory=dict)

    def image(self, repo: str = "app", tag: str | None = "1.0", server: HostileRegistry | None = None) -> images.Image:
        """An honest image on the hostile registry (or ``server``), seeded by its name and HOSTILE_SEED."""
        image = images.build_image("oci", seed=f"hostile-{SEED}-{repo}-{tag}")
        (server or self.hostile).put_image(repo, tag, image)
        return image

    def source(self, repo: str = "app", tag: str = "1.0") -> str:
        return f"{self.hostile.host}/{repo}:{tag}"

    def target_of(self, source: str) -> str:
        return self.prefix + source.replace(":", "_", 1)

    @property
    def bystander_source(self) -> str:
        return self.bystander.ref

    def write(self, *entries: dict | str, bystander: bool = True) -> None:
        """images.yaml: ``entries`` (a source, or a whole entry), then the bystander."""
        listed = [{"source": entry} if isinstance(entry, str) else entry for entry in entries]
        if bystander:
            listed.append({"source": self.bystander_source})
        write_images(self.tmp, self.prefix, listed)

    def fresh_target(self, name: str) -> None:
        """A prefix of its own on the target, for a case that copies."""
        self.prefix = f"{self.target.host}/hostile-{name}-{next(_PREFIXES)}/"

    def run(self, *args: str, **kwargs) -> Measured:
        return run_measured(self.tmp, *args, env=self.env, **kwargs)

    def locked_honestly(self, name: str) -> images.Image:
        """For a case that copies: an image on the hostile registry, images.yaml naming it, and the lock made
        while the registry is honest, all under a target prefix of the case's own."""
        self.fresh_target(name)
        image = self.image()
        self.write(self.source())
        self.lock_honestly()
        return image

    def lock_honestly(self) -> None:
        """The honest phase: lock what images.yaml names, before the registry turns."""
        result = self.run("lock")
        assert result.code == 0, str(result)

    def locked(self) -> dict:
        return yaml.safe_load((self.tmp / "images.lock").read_text())

    def pinned_targets(self) -> set[str]:
        return {image["target"] for image in self.locked()["images"]}



CASES: dict[str, tuple[str, Callable[[World], Expect]]] = {}


def case(finding: str, name: str):
    def register(function: Callable[[World], Expect]) -> Callable[[World], Expect]:
        assert name not in CASES, name
        CASES[name] = (finding, function)
        return function

    return register


# ------------------------------------------------------------------------------------------------ body makers

def tags_body(name: str, tags: list[str]) -> bytes:
    return json.dumps({"name": name, "tags": tags}).encode()


def deep(levels: int = 10_000, inner: bytes = b"1") -> bytes:
    """A JSON value nested ``levels`` deep: ``{"a":{"a":…1…}}``."""
    return b'{"a":' * levels + inner + b"}" * levels


def deep_manifest(levels: int = 10_000) -> bytes:
    """An image manifest (valid in every field) whose annotations nest ``levels`` deep."""
    config = b'{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"' + \
        digest_of(b"{}").encode() + b'","size":2}'
    return (b'{"schemaVersion":2,"mediaType":"' + OCI_MANIFEST.encode() + b'","config":' + config
            + b',"layers":[],"annotations":{"x":' + deep(levels, b'"y"') + b"}}")


def fixed_width_tags(count: int, prefix: str = "t", digits: int = 9) -> tuple[Callable, int]:
    """A tags/list body of ``count`` tags ``<prefix><i with digits digits>``, generated lazily; and its length."""
    head, tail = b'{"name":"app","tags":[', b"]}"

    def item(i: int) -> bytes:
        return (b"," if i else b"") + f'"{prefix}{i:0{digits}d}"'.encode()

    length = len(head) + count * (len(prefix) + digits + 2) + max(count - 1, 0) + len(tail)
    return pieces(head, repeated(item, count), tail), length


def referrer_entry(digest: str, artifact_type: str = "application/vnd.example.sbom") -> dict:
    return {"mediaType": OCI_MANIFEST, "digest": digest, "size": 100, "artifactType": artifact_type}


def referrer_manifest(subject: images.Image | str | None, note: str,
                      artifact_type: str = "application/vnd.example.sbom") -> bytes:
    """A small OCI artifact manifest naming ``subject`` (None: naming none)."""
    document = {
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": artifact_type,
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": digest_of(b"{}"), "size": 2},
        "layers": [{"mediaType": "application/vnd.oci.empty.v1+json", "digest": digest_of(b"{}"), "size": 2}],
        "annotations": {"note": note},
    }
    if subject is not None:
        digest = subject if isinstance(subject, str) else subject.digest
        document["subject"] = {"mediaType": OCI_MANIFEST, "digest": digest, "size": 100}
    return canonical_json(document)


def index_page(entries: list[dict]) -> bytes:
    return canonical_json({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries})


def with_headers(extra: dict[str, str]) -> Callable:
    """A script: the honest answer, plus ``extra`` headers."""

    def script(request, server: HostileRegistry) -> Answer:
        answer = server.honest(request)
        answer.headers = {**answer.headers, **extra}
        return answer

    return script


def link_to(url: str) -> dict[str, str]:
    return {**JSON, "Link": f'<{url}>; rel="next"'}


def rule(w: World, tags: dict, repo: str = "app") -> dict:
    return {"source": f"{w.hostile.host}/{repo}", "tags": tags}


def bearer(w: World, token_answer: Answer) -> None:
    """The hostile registry asks for a bearer token from its own ``/token``, which answers ``token_answer``."""
    w.hostile.credentials = None
    w.hostile.bearer_realm = f"{w.hostile.url}/token"
    w.hostile.on("GET", r"^/token", token_answer)


TAGS = r"/v2/app/tags/list"


def refused(w: World, route: str, answer: Answer, *says: str, registry: bool = False) -> Expect:
    """lock, the hostile image's GET ``route`` answered with ``answer``: that image fails with one line."""
    w.image()
    w.hostile.on("GET", route, answer)
    w.write(w.source())
    return Expect(("lock", *FAST), 1, failures=1, says=says, names_registry=registry)


# ================================================================================== 1. credentials, one origin

@case("1", "tags-list-link-to-another-origin")
def _(w: World) -> Expect:
    image = w.image()
    w.other.put_image("app", "1.0", image)
    w.hostile.on("GET", r"/v2/app/tags/list", Answer(
        200, link_to(f"{w.other.url}/v2/app/tags/list?n=1000&last=1.0"), tags_body("app", ["1.0"])))
    w.write(w.source())
    return Expect(("lock", *FAST), 1, failures=1, says=(r"link|origin|another|refus",))


@case("1", "referrers-link-to-another-origin")
def _(w: World) -> Expect:
    image = w.image()
    w.hostile.referrers_api = True
    w.other.referrers_api = True
    w.other.put_image("app", "1.0", image)
    w.hostile.on("GET", r"/v2/app/referrers/", Answer(
        200, {**link_to(f"{w.other.url}/v2/app/referrers/{image.digest}?page=2"), "Content-Type": OCI_INDEX},
        index_page([])))
    w.write(w.source())
    return Expect(("lock", *FAST), 1, failures=1, says=(r"link|origin|another|refus",))


@case("1", "tag-rule-link-to-another-origin")
def _(w: World) -> Expect:
    for tag in ("1.0.0", "1.1.0"):
        w.image(tag=tag)
    w.other.put_image("app", "1.2.0", w.image(tag=None))
    w.hostile.on("GET", r"/v2/app/tags/list", Answer(
        200, link_to(f"{w.other.url}/v2/app/tags/list?n=1000&last=1.1.0"), tags_body("app", ["1.0.0", "1.1.0"])))
    w.write(rule(w, {"semver": ">=1.0"}))
    return Expect(("lock", *FAST), 1, failures=1, says=(r"link|origin|another|refus",))


@case("1", "link-to-the-same-port-under-another-name")
def _(w: World) -> Expect:
    """``localhost:PORT`` is another origin than ``127.0.0.1:PORT``, though the same server answers."""
    w.image()
    w.hostile.on("GET", r"/v2/app/tags/list\?n=1000$", Answer(
        200, link_to(f"http://localhost:{w.hostile.port}/v2/app/tags/list?n=1000&last=0"),
        tags_body("app", ["0"])))
    w.write(w.source())
    return Expect(("lock", *FAST), 1, failures=1, says=(r"link|origin|another|refus",))


@case("held", "manifest-redirect-to-another-origin-carries-no-credentials")
def _(w: World) -> Expect:
    image = w.image()
    w.other.put_image("app", "1.0", image)
    w.hostile.on(None, r"/v2/app/manifests/", lambda request, server: Answer(
        307, {"Location": f"{w.other.url}{request.target}"}))
    w.write(w.source())
    return Expect(("lock", *FAST), 0, then=lambda w, result: _pinned(w, w.source(), image.digest))


@case("1", "upload-location-at-another-origin-that-asks-for-credentials")
def _(w: World) -> Expect:
    """The hostile registry is the target: its upload session lives elsewhere, and that origin answers 401."""
    w.prefix = f"{w.hostile.host}/mirror/"
    w.write()
    w.lock_honestly()
    w.hostile.on("POST", r"/blobs/uploads/", lambda request, server: Answer(
        202, {"Location": f"{w.other.url}/v2/upload/{len(server.requests)}", "Content-Length": "0"}))
    w.other.on(None, r"^/v2/upload/", lambda request, server: Answer(
        401, {"WWW-Authenticate": 'Basic realm="elsewhere"', **JSON}, b'{"errors":[]}')
        if "authorization" not in request.headers else Answer(201))
    return Expect(("apply", *FAST), 1, failures=1, bystander=False)


@case("held", "blob-redirect-to-another-origin-carries-no-credentials")
def _(w: World) -> Expect:
    w.fresh_target("blob-redirect")
    image = w.image()
    w.image(server=w.other)
    w.write(w.source())
    w.lock_honestly()
    w.hostile.on("GET", r"/v2/app/blobs/", lambda request, server: Answer(
        307, {"Location": f"{w.other.url}{request.target}"}))
    return Expect(("apply", *FAST), 0, then=lambda w, result: _copied(w, w.source(), image.digest))


@case("held", "link-loop-capped-at-1000-pages")
def _(w: World) -> Expect:
    w.image()
    w.hostile.on("GET", TAGS, Answer(200, link_to("/v2/app/tags/list?n=1000"), tags_body("app", ["1.0"])))
    w.write(w.source())

    def then(w: World, result: Measured) -> None:
        assert len(w.hostile.matching("GET", "/tags/list")) <= 1001

    return Expect(("lock", *FAST), 1, failures=1, says=(r"1,?000 pages",), then=then)


# ==================================================================================== 2. every read bounded

ENDLESS_ERROR = endless(b"x" * 65536, prefix=b'{"errors":[{"code":"UNKNOWN","message":"')
ENDLESS_TAGS = endless(b'"1.0.0-aaaaaaaaaaaaaaaaaaaaaaaa",' * 2048, prefix=b'{"name":"app","tags":[')


@case("2", "endless-chunked-tags-page")
def _(w: World) -> Expect:
    return refused(w, TAGS, Answer(200, JSON, ENDLESS_TAGS), r"8 MiB", registry=True)


@case("2", "endless-tags-page-ended-by-close")
def _(w: World) -> Expect:
    return refused(w, TAGS, Answer(200, JSON, ENDLESS_TAGS, chunked=False), r"8 MiB", registry=True)


@case("2", "50-MB-tags-page")
def _(w: World) -> Expect:
    w.image()
    body, length = fixed_width_tags(50_000_000 // 13)
    w.hostile.on("GET", r"/v2/app/tags/list", Answer(200, JSON, body, length=length))
    w.write(w.source())
    return Expect(("lock", *FAST), 1, failures=1, says=(r"8 MiB",), names_registry=True)


@case("2", "12-MB-page-of-1000000-version-tags")
def _(w: World) -> Expect:
    w.image(tag="1.2.3")
    body, length = fixed_width_tags(1_000_000, "1.2.", 6)
    w.hostile.on("GET", r"/v2/app/tags/list", Answer(200, JSON, body, length=length))
    w.write(rule(w, {"semver": ">=1.0", "latest": 1}))
    return Expect(("lock", *FAST), 1, failures=1, says=(r"8 MiB|100,?000",), names_registry=True)


@case("2", "1000000-tags-in-pages-of-50000")
def _(w: World) -> Expect:
    """Each page within the page cap; the repository's listing is past the cap on tags."""
    w.image(tag="1.2.3")
    body, length = fixed_width_tags(50_000, "1.2.", 6)

    def page(request, server) -> Answer:
        number = int(request.query.get("page", ["0"])[0])
        headers = link_to(f"/v2/app/tags/list?n=1000&page={number + 1}") if number < 19 else JSON
        return Answer(200, headers, body, length=length)

    w.hostile.on("GET", r"/v2/app/tags/list", page)
    w.write(rule(w, {"semver": ">=1.0", "latest": 1}))

    def then(w: World, result: Measured) -> None:
        assert len(w.hostile.matching("GET", "/tags/list")) <= 3  # 100,000 tags are 2 pages: refused at the 3rd

    return Expect(("lock", *FAST), 1, failures=1, says=(r"100,?000",), then=then, names_registry=True)


@case("2", "endless-token-answer")
def _(w: World) -> Expect:
    w.image()
    bearer(w, Answer(200, JSON, endless(b"a" * 65536, prefix=b'{"token":"')))
    w.write(w.source())
    return Expect(("lock", *FAST), 1, failures=1, says=(r"1 MiB",), names_registry=True)


@case("2", "endless-500-error-body")
def _(w: World) -> Expect:
    return refused(w, TAGS, Answer(500, JSON, ENDLESS_ERROR), r"500", registry=True)


@case("2", "endless-401-body-on-a-listing")
def _(w: World) -> Expect:
    return refused(w, TAGS, Answer(401, {**JSON, "WWW-Authenticate": 'Basic realm="hostile"'}, ENDLESS_ERROR),
                   r"401", registry=True)


@case("2", "endless-404-body-on-a-listing")
def _(w: World) -> Expect:
    """A repository without a tags list has no cosign tags: the image is pinned, whatever the 404 carried."""
    image = w.image()
    w.hostile.on("GET", TAGS, Answer(404, JSON, ENDLESS_ERROR))
    w.write(w.source())
    return Expect(("lock", *FAST), 0, then=lambda w, result: _pinned(w, w.source(), image.digest))


@case("2", "endless-500-body-from-the-token-service")
def _(w: World) -> Expect:
    w.image()
    bearer(w, Answer(500, JSON, ENDLESS_ERROR))
    w.write(w.source())
    return Expect(("lock", *FAST), 1, failures=1, says=(r"token.*500|500.*token",), names_registry=True)


@case("2", "endless-500-error-body-while-copying")
def _(w: World) -> Expect:
    """apply: the hostile image fails on its endless error answer, the bystander is copied."""
    w.locked_honestly("error-body")
    w.hostile.on("GET", r"/v2/app/(manifests|blobs)/", Answer(500, JSON, ENDLESS_ERROR))
    return Expect(("apply", *FAST), 1, failures=1, says=(r"500",), names_registry=True)


@case("2", "endless-body-on-the-answers-to-pushes")
def _(w: World) -> Expect:
    """The hostile registry is the target: it stores what is pushed, and says so with endless bodies."""
    w.prefix = f"{w.hostile.host}/mirror/"
    w.write()
    w.lock_honestly()
    w.hostile.on("PUT", r"/(manifests|blobs/uploads)/", lambda request, server: dataclasses.replace(
        server.honest(request), body=ENDLESS_ERROR))

    def then(w: World, result: Measured) -> None:
        repo = w.target_of(w.bystander_source).split("/", 1)[1].rsplit(":", 1)[0]
        assert digest_of(w.hostile.manifests[repo]["v1"][1]) == w.bystander.digest

    return Expect(("apply", *FAST), 0, bystander=False, then=then)


@case("2", "endless-referrers-page")
def _(w: World) -> Expect:
    w.image()
    w.hostile.referrers_api = True
    entry = json.dumps(referrer_entry("sha256:" + "ab" * 32)).encode() + b","
    w.hostile.on("GET", r"/v2/app/referrers/", Answer(200, {"Content-Type": OCI_INDEX}, endless(
        entry * 512, prefix=b'{"schemaVersion":2,"mediaType":"' + OCI_INDEX.encode() + b'","manifests":[')))
    w.write(w.source())
    return Expect(("lock", *FAST), 1, failures=1, says=(r"4 MiB",), names_registry=True)


@case("held", "endless-manifest")
def _(w: World) -> Expect:
    image = w.image()
    w.hostile.on("HEAD", r"/v2/app/manifests/1.0", Answer(200, {"Content-Type": images.OCI_INDEX}))
    w.hostile.on("GET", r"/v2/app/manifests/", Answer(200, {"Content-Type": images.OCI_INDEX}, endless(
        b" " * 65536, prefix=b'{"schemaVersion":2,"mediaType":"' + OCI_INDEX.encode() + b'","manifests":[')))
    del image
    w.write(w.source())
    return Expect(("lock", *FAST), 1, failures=1, says=(r"4 MiB",), names_registry=True)


@case("held", "20-MB-sig-manifest")
def _(w: World) -> Expect:
    image = w.image()
    tag = cosign_keys.signature_tag(image.digest)
    w.hostile.put_manifest("app", b"{}", OCI_MANIFEST, tag=tag)
    size = 20 * 1000 * 1000
    w.hostile.on("GET", rf"/v2/app/manifests/{tag}", Answer(
        200, {"Content-Type": OCI_MANIFEST}, endless(b" " * 65536, prefix=b"{", limit=size), length=size))
    w.write(w.source())
    return Expect(("lock", *FAST), 1, failures=1, says=(r"4 MiB",), names_registry=True)


@case("held", "10-MB-token-answer")
def _(w: World) -> Expect:
    w.image()
    size = 10 * 1000 * 1000
    bearer(w, Answer(200, JSON, pieces(b'{"padding":"', endless(b"p" * 65536, limit=size - 16), b'"}')))
    w.write(w.source())
    return Expect(("lock", *FAST), 1, failures=1, says=(r"token",))


@case("held", "token-service-that-never-answers")
def _(w: World) -> Expect:
    w.image()
    bearer(w, Answer(200, JSON, b'{"token":"late"}', stall=STALL))
    w.write(w.source())
    return Expect(("lock", "--retries", "0", "--timeout", "2"), 1, failures=1, says=(r"token|time",))


@case("held", "1-MB-WWW-Authenticate")
def _(w: World) -> Expect:
    w.image()
    w.hostile.credentials = None
    w.hostile.on(None, r"^/v2/", Answer(401, {"WWW-Authenticate": 'Bearer realm="' + "r" * MiB + '"'}))
    w.write(w.source())
    return Expect(("lock", *FAST), 1, failures=1)


@case("held", "unterminated-quote-in-WWW-Authenticate")
def _(w: World) -> Expect:
    w.image()
    w.hostile.credentials = None
    w.hostile.on(None, r"^/v2/", lambda request, server: None if request.headers.get("authorization") else Answer(
        401, {"WWW-Authenticate": f'Bearer realm="{server.url}/token,service="hostile'}))
    w.hostile.on("GET", r"^/token", Answer(200, JSON, b'{"token":"t"}'))
    w.write(w.source())
    return Expect(("lock", *FAST), 1, failures=1)


@case("held", "plain-http-realm-on-another-host-from-a-TLS-registry")
def _(w: World) -> Expect:
    import ssl

    import trustme

    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    ca.cert_pem.write_to_path(str(w.ca_file))
    tls = HostileRegistry(ssl_context=context, bearer_realm="http://token.hostile.test/token").start()
    image = w.image(server=tls)
    w.hostile = tls
    w.write(f"{tls.host}/app:1.0")
    del image
    return Expect(("lock", *FAST, "--ca-file", str(w.ca_file)), 1, failures=1, says=(r"refus.*token|not https",))


@case("held", "non-JSON-tags-list")
def _(w: World) -> Expect:
    return refused(w, TAGS, Answer(200, JSON, b"<html>oops</html>"), r"tags")


@case("held", "null-tags-list-for-a-rule")
def _(w: World) -> Expect:
    w.image(tag="1.0.0")
    w.hostile.on("GET", r"/v2/app/tags/list", Answer(200, JSON, b'{"name":"app","tags":null}'))
    w.write(rule(w, {"semver": ">=1.0"}))
    return Expect(("lock", *FAST), 1, failures=1, says=(r"selects none",))


@case("held", "10-KB-tag-names")
def _(w: World) -> Expect:
    for tag in ("1.0.0", "1.1.0"):
        w.image(tag=tag)
    w.hostile.tags["app"] += ["1.2.0-" + "x" * 10_240, "v" * 10_240]
    w.write(rule(w, {"semver": ">=1.0"}))
    return Expect(("lock", *FAST), 0, then=lambda w, result: _pinned_tags(w, ["1.0.0", "1.1.0"]))


# ============================================================================ 3. a lock its reader can read

def _referrers_listing(w: World, subject: images.Image, entries: list[dict], per_page: int) -> None:
    """The referrers API of ``subject`` answers ``entries``, ``per_page`` at a time (relative Links)."""
    w.hostile.referrers_api = True

    def page(request, server) -> Answer:
        number = int(request.query.get("page", ["0"])[0])
        chunk = entries[number * per_page:(number + 1) * per_page]
        headers = {"Content-Type": OCI_INDEX}
        if (number + 1) * per_page < len(entries):
            headers["Link"] = f'</v2/app/referrers/{subject.digest}?page={number + 1}>; rel="next"'
        return Answer(200, headers, index_page(chunk))

    w.hostile.on("GET", rf"/v2/app/referrers/{subject.digest}", page)


@case("3", "referrers-index-of-100000-entries")
def _(w: World) -> Expect:
    image = w.image()
    w.hostile.referrers_api = True

    def entry(i: int) -> bytes:
        return (b"," if i else b"") + json.dumps(referrer_entry(f"sha256:{i:064x}")).encode()

    head, tail = b'{"schemaVersion":2,"mediaType":"' + OCI_INDEX.encode() + b'","manifests":[', b"]}"
    body = pieces(head, repeated(entry, 100_000), tail)
    w.hostile.on("GET", rf"/v2/app/referrers/{image.digest}",
                 Answer(200, {"Content-Type": OCI_INDEX}, body, length=body_size(body)))
    w.write(w.source())
    return Expect(("lock", *FAST), 1, failures=1, says=(r"4 MiB|1,?000",))


@case("3", "100000-referrers-in-pages-of-1000")
def _(w: World) -> Expect:
    image = w.image()
    _referrers_listing(w, image, [referrer_entry(f"sha256:{i:064x}") for i in range(100_000)], 1000)
    w.write(w.source())

    def then(w: World, result: Measured) -> None:  # the listing's bytes are counted page by page: not all 100 read
        assert len(w.hostile.matching("GET", "/referrers/")) < 40, str(result)

    return Expect(("lock", *FAST), 1, failures=1, says=(r"4 MiB",), then=then)


@case("3", "1001-referrers-of-one-digest")
def _(w: World) -> Expect:
    image = w.image()
    digests = [w.hostile.put_manifest("app", referrer_manifest(image, f"r{i}"), OCI_MANIFEST) for i in range(1001)]
    _referrers_listing(w, image, [referrer_entry(digest) for digest in digests], 400)
    w.write(w.source())
    return Expect(("lock", *FAST), 1, failures=1, says=(r"1,?000",))


@case("held", "1000-referrers-of-one-digest-make-a-readable-lock")
def _(w: World) -> Expect:
    image = w.image()
    digests = [w.hostile.put_manifest("app", referrer_manifest(image, f"r{i}"), OCI_MANIFEST) for i in range(1000)]
    _referrers_listing(w, image, [referrer_entry(digest) for digest in digests], 400)
    w.write(w.source())

    def then(w: World, result: Measured) -> None:
        pinned = {image_["target"]: image_ for image_ in w.locked()["images"]}
        assert len(pinned[w.target_of(w.source())]["referrers"]) == 1000
        check = w.run("lock", "--check")
        assert check.code == 0, str(check)
        assert check.peak_rss_kib <= PEAK_RSS_KIB, str(check)

    return Expect(("lock", *FAST), 0, then=then)


@case("3", "a-lock-past-its-reader-cap-is-not-written")
def _(w: World) -> Expect:
    """Four indexes (each within the 4 MiB manifest cap) of 3,000 children whose platforms are named in
    1,000 characters each: a lock of some 12 MB, past the 10 MiB its own reader takes."""
    sources = []
    for number in range(4):
        children = [{"mediaType": OCI_MANIFEST, "digest": f"sha256:{number:08x}{child:056x}", "size": 500,
                     "platform": {"architecture": "amd64", "os": "linux", "variant": f"v{child}-" + "x" * 1000}}
                    for child in range(3000)]
        w.hostile.put_manifest("app", canonical_json({"schemaVersion": 2, "mediaType": OCI_INDEX,
                                                      "manifests": children}), OCI_INDEX, tag=f"{number}.0")
        sources.append(w.source(tag=f"{number}.0"))
    w.write(*sources)
    return Expect(("lock", *FAST), 1, failures=1, says=(r"10 MiB",), names_image=False)


# =============================================================================== 4. a referrer's own subject

def _pinned_referrers(w: World, source: str) -> set[str]:
    pinned = {image["target"]: image for image in w.locked()["images"]}
    return {referrer["digest"] for referrer in pinned[w.target_of(source)]["referrers"]}


def _subject_case(w: World, listed: Callable[[images.Image, images.Image], tuple[str, str]], api: bool) -> Expect:
    """Image 1.0 lists a good referrer and a bad one (``listed`` makes it: its digest and what the warning names)."""
    one = w.image(tag="1.0")
    eleven = w.image(tag="1.1")
    good = w.hostile.put_manifest("app", referrer_manifest(one, "good"), OCI_MANIFEST)
    bad, named = listed(one, eleven)
    entries = [referrer_entry(good), referrer_entry(bad)]
    if api:
        _referrers_listing(w, one, entries, 10)
    else:
        w.hostile.put_manifest("app", index_page(entries), OCI_INDEX, tag=one.digest.replace(":", "-"))
    w.write(w.source())

    def then(w: World, result: Measured) -> None:
        assert _pinned_referrers(w, w.source()) == {good}
        warned = [line for line in result.stderr.splitlines() if bad in line]
        assert len(warned) == 1 and one.digest in warned[0] and named in warned[0], result.stderr

    return Expect(("lock", *FAST), 0, then=then)


@case("4", "referrer-of-another-image-in-the-referrers-API")
def _(w: World) -> Expect:
    return _subject_case(w, lambda one, eleven: (
        w.hostile.put_manifest("app", referrer_manifest(eleven, "bad"), OCI_MANIFEST), eleven.digest), api=True)


@case("4", "referrer-of-another-image-in-the-fallback-index")
def _(w: World) -> Expect:
    return _subject_case(w, lambda one, eleven: (
        w.hostile.put_manifest("app", referrer_manifest(eleven, "bad"), OCI_MANIFEST), eleven.digest), api=False)


@case("4", "referrer-naming-no-subject")
def _(w: World) -> Expect:
    return _subject_case(w, lambda one, eleven: (
        w.hostile.put_manifest("app", referrer_manifest(None, "bad"), OCI_MANIFEST), "none"), api=True)


@case("4", "referrer-listed-but-missing")
def _(w: World) -> Expect:
    return _subject_case(w, lambda one, eleven: ("sha256:" + "0f" * 32, "not found"), api=True)


@case("4", "a-pinned-referrer-of-another-image-is-not-written-into-this-one-s-index")
def _(w: World) -> Expect:
    """A lock made before the fix pinned R (whose subject is 1.1) under 1.0: apply copies 1.0 and refuses R,
    and the target's fallback index of 1.0 is never written."""
    w.fresh_target("pinned-other-subject")
    one = w.image(tag="1.0")
    eleven = w.image(tag="1.1")
    w.write(w.source())
    w.lock_honestly()
    bad = w.hostile.put_manifest("app", referrer_manifest(eleven, "bad"), OCI_MANIFEST)
    w.hostile.put_blob(b"{}")
    text = (w.tmp / "images.lock").read_text()
    document = yaml.safe_load(text)
    for image in document["images"]:
        if image["target"] == w.target_of(w.source()):
            image["referrers"] = [{"subject": one.digest, "digest": bad, "mediaType": OCI_MANIFEST,
                                   "artifactType": "application/vnd.example.sbom", "foundBy": "referrers-api"}]
    header = "".join(line + "\n" for line in text.splitlines() if line.startswith("#"))
    (w.tmp / "images.lock").write_text(header + yaml.safe_dump(document, sort_keys=False))

    def then(w: World, result: Measured) -> None:
        _copied(w, w.source(), one.digest)
        repo = w.target_of(w.source()).split("/", 1)[1].rsplit(":", 1)[0]
        with RawRegistry(w.target) as raw:
            assert raw.head_manifest(repo, one.digest.replace(":", "-")).status_code == 404

    return Expect(("apply", *FAST), 1, failures=1, says=(r"subject",), then=then)


# ======================================================================================= 5. numbers, headers

@case("5", "arabic-indic-digit-tags")
def _(w: World) -> Expect:
    for tag in ("1.0.0", "1.2.0"):
        w.image(tag=tag)
    w.hostile.tags["app"] += ["٩٩.٠.٠", "v١٠.٠"]
    w.write(rule(w, {"semver": ">=1.0", "latest": 1}))
    return Expect(("lock", *FAST), 0, then=lambda w, result: _pinned_tags(w, ["1.2.0"]))


@case("5", "a-version-of-10240-zeros-for-semver")
def _(w: World) -> Expect:
    for tag in ("1.0.0", "1.1.0"):
        w.image(tag=tag)
    w.hostile.tags["app"] += ["1.0." + "0" * 10_240, "1." + "9" * 5000 + ".0"]
    w.write(rule(w, {"semver": ">=1.0"}))
    return Expect(("lock", *FAST), 0, then=lambda w, result: _pinned_tags(w, ["1.0.0", "1.1.0"]))


@case("5", "a-version-of-10240-zeros-for-regex-latest")
def _(w: World) -> Expect:
    for tag in ("1.0.0", "1.1.0"):
        w.image(tag=tag)
    w.hostile.tags["app"] += ["1.0." + "0" * 10_240]
    w.write(rule(w, {"regex": r"^1\.", "latest": 1}))
    return Expect(("lock", *FAST), 0, then=lambda w, result: _pinned_tags(w, ["1.1.0"]))


RATELIMIT_SUPERSCRIPT = {"ratelimit-limit": "100;w=21600", "ratelimit-remaining": "¹²;w=21600"}


@case("5", "ratelimit-remaining-in-superscript-digits-plan")
def _(w: World) -> Expect:
    w.locked_honestly("superscript-plan")
    w.hostile.on(None, r"^/v2/", with_headers(RATELIMIT_SUPERSCRIPT))

    def then(w: World, result: Measured) -> None:
        assert f"+ {w.target_of(w.source())}" in result.stdout, str(result)

    return Expect(("plan", *FAST), 0, then=then)


@case("5", "ratelimit-remaining-in-superscript-digits-apply")
def _(w: World) -> Expect:
    image = w.locked_honestly("superscript-apply")
    w.hostile.on(None, r"^/v2/", with_headers(RATELIMIT_SUPERSCRIPT))
    return Expect(("apply", *FAST), 0, then=lambda w, result: _copied(w, w.source(), image.digest))


@case("5", "ratelimit-window-in-superscript-digits-and-40-digit-counts-apply")
def _(w: World) -> Expect:
    image = w.locked_honestly("long-remaining")
    w.hostile.on(None, r"^/v2/", with_headers({"ratelimit-limit": "9" * 40 + ";w=21600",
                                              "ratelimit-remaining": "10;w=¹²"}))
    return Expect(("apply", *FAST), 0, then=lambda w, result: _copied(w, w.source(), image.digest))


@case("5", "ratelimit-remaining-in-superscript-digits-verify")
def _(w: World) -> Expect:
    """The hostile registry is the target, holding what apply copied there; verify reads its HEADs' headers."""
    w.prefix = f"{w.hostile.host}/mirror/"
    w.write()
    w.lock_honestly()
    copied = w.run("apply", *FAST)
    assert copied.code == 0, str(copied)
    w.hostile.on(None, r"^/v2/", with_headers(RATELIMIT_SUPERSCRIPT))
    return Expect(("verify", *FAST), 0, bystander=False, output=(r"^Verify: 1 intact",))


def _retry_after(w: World, status: int, value: str, command: str, route: str = r"/v2/app/manifests/") -> Expect:
    if command == "lock":
        w.image()
        w.write(w.source())
    else:
        w.locked_honestly(f"retry-after-{command}")
    w.hostile.on(None, route, Answer(status, {**JSON, "Retry-After": value},
                                     b'{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}'))
    return Expect((command, "--retries", "1", "--timeout", "5"), 1, failures=1, says=(str(status),))


@case("5", "retry-after-inf-on-429-lock")
def _(w: World) -> Expect:
    return _retry_after(w, 429, "inf", "lock")


@case("5", "retry-after-inf-on-503-apply")
def _(w: World) -> Expect:
    return _retry_after(w, 503, "inf", "apply")


@case("5", "retry-after-1e30-on-503-plan")
def _(w: World) -> Expect:
    return _retry_after(w, 503, "1e30", "plan")


@case("5", "retry-after-1e400-on-429-apply-blob")
def _(w: World) -> Expect:
    return _retry_after(w, 429, "1e400", "apply", route=r"/v2/app/blobs/")


@case("held", "retry-after-nan-on-429-lock")
def _(w: World) -> Expect:
    """nan never waited (it was read as 0 s before the fix too); now it is no number at all."""
    return _retry_after(w, 429, "nan", "lock")


@case("5", "retry-after-of-18-digits-is-not-waited-for-in-sane-units")
def _(w: World) -> Expect:
    expect = _retry_after(w, 429, "9" * 18, "lock")
    expect.says += (r"not waiting",)
    return expect


@case("5", "retry-after-inf-is-absent-then-the-retry-succeeds")
def _(w: World) -> Expect:
    image = w.locked_honestly("inf-retry-after")
    w.hostile.on("GET", r"/v2/app/manifests/", Answer(503, {**JSON, "Retry-After": "inf"}, b"{}"), times=1)
    return Expect(("apply", "--retries", "1", "--timeout", "5"), 0,
                  then=lambda w, result: _copied(w, w.source(), image.digest))


@case("held", "an-8000-character-Docker-Content-Digest")
def _(w: World) -> Expect:
    w.image()
    w.hostile.on("HEAD", r"/v2/app/manifests/1.0", Answer(
        200, {"Content-Type": OCI_MANIFEST, "Docker-Content-Digest": "sha256:" + "z" * 8000}))
    w.write(w.source())
    return Expect(("lock", *FAST), 1, failures=1, says=(r"Docker-Content-Digest",))


@case("2", "an-8000-character-error-message-and-content-type-while-copying")
def _(w: World) -> Expect:
    w.locked_honestly("long-content-type")
    w.hostile.on("GET", r"/v2/app/manifests/", Answer(
        400, {"Content-Type": "application/" + "x" * 8000},
        json.dumps({"errors": [{"code": "DENIED" * 1000, "message": "no " * 2500}]}).encode()))
    return Expect(("apply", *FAST), 1, failures=1, says=(r"400",))


# ======================================================================================= 6. deep JSON

@case("6", "sig-manifest-nested-10000-levels")
def _(w: World) -> Expect:
    image = w.image()
    w.hostile.put_manifest("app", deep_manifest(), OCI_MANIFEST, tag=cosign_keys.signature_tag(image.digest))
    w.write(w.source())
    return Expect(("lock", *FAST), 1, failures=1, says=(r"nest|deep|64",))


@case("6", "signed-payload-nested-10000-levels")
def _(w: World) -> Expect:
    image = w.image()
    key = cosign_keys.new_key()
    cosign_keys.write_public_key(key, w.tmp / "cosign.pub")
    payload = b'{"critical":' + deep() + b',"optional":null}'
    signature = cosign_keys.Signature(payload, cosign_keys.sign(key, payload))
    config = b"{}"
    w.hostile.put_blob(config)
    w.hostile.put_blob(payload)
    manifest = canonical_json({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": images.OCI_CONFIG, "digest": digest_of(config), "size": len(config)},
        "layers": [signature.layer()],
    })
    w.hostile.put_manifest("app", manifest, OCI_MANIFEST, tag=cosign_keys.signature_tag(image.digest))
    w.write({"source": w.source(), "verify": {"cosignKey": "cosign.pub"}})
    return Expect(("lock", *FAST), 1, failures=1, says=(r"signature",))


@case("6", "referrers-listing-nested-10000-levels")
def _(w: World) -> Expect:
    image = w.image()
    w.hostile.referrers_api = True
    w.hostile.on("GET", rf"/v2/app/referrers/{image.digest}", Answer(200, {"Content-Type": OCI_INDEX}, deep()))
    w.write(w.source())
    return Expect(("lock", *FAST), 1, failures=1)


@case("6", "image-index-nested-10000-levels")
def _(w: World) -> Expect:
    raw = b'{"schemaVersion":2,"mediaType":"' + OCI_INDEX.encode() + b'","manifests":[],"annotations":{"x":' + \
        deep(inner=b'"y"') + b"}}"
    w.hostile.put_manifest("app", raw, OCI_INDEX, tag="1.0")
    w.write(w.source())
    return Expect(("lock", *FAST), 1, failures=1, says=(r"nest|deep|64",))


@case("6", "image-config-nested-10000-levels")
def _(w: World) -> Expect:
    """An entry that requires platforms reads a single image's config: nested 10,000 deep, it names none."""
    config = b'{"architecture":"amd64","os":"linux","x":' + deep() + b"}"
    w.hostile.put_blob(config)
    manifest = canonical_json({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": images.OCI_CONFIG, "digest": digest_of(config), "size": len(config)},
        "layers": [],
    })
    w.hostile.put_manifest("app", manifest, OCI_MANIFEST, tag="1.0")
    w.write({"source": w.source(), "platforms": ["linux/amd64"]})
    return Expect(("lock", *FAST), 1, failures=1, says=(r"config|nest|deep|64",))


@case("6", "tags-list-nested-10000-levels")
def _(w: World) -> Expect:
    return refused(w, TAGS, Answer(200, JSON, b'{"name":"app","tags":' + deep() + b"}"), r"tags")


@case("6", "error-body-nested-10000-levels")
def _(w: World) -> Expect:
    return refused(w, TAGS, Answer(500, JSON, b'{"errors":' + deep() + b"}"), r"500", registry=True)


@case("6", "token-answer-nested-10000-levels")
def _(w: World) -> Expect:
    w.image()
    bearer(w, Answer(200, JSON, b'{"token":"t","x":' + deep() + b"}"))
    w.write(w.source())
    return Expect(("lock", *FAST), 1, failures=1, says=(r"token",))


@case("held", "10000-signature-layers")
def _(w: World) -> Expect:
    image = w.image()
    cosign_keys.write_public_key(cosign_keys.new_key(), w.tmp / "cosign.pub")
    layer = {"mediaType": cosign_keys.SIMPLE_SIGNING, "digest": "sha256:" + "5" * 64, "size": 10}
    w.hostile.put_blob(b"{}")
    manifest = canonical_json({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": images.OCI_CONFIG, "digest": digest_of(b"{}"), "size": 2},
        "layers": [layer] * 10_000,
    })
    w.hostile.put_manifest("app", manifest, OCI_MANIFEST, tag=cosign_keys.signature_tag(image.digest))
    w.write({"source": w.source(), "verify": {"cosignKey": "cosign.pub"}})
    return Expect(("lock", *FAST), 1, failures=1, says=(r"10,?000 checked",))


def _bad_signature(w: World, annotation: str) -> Expect:
    image = w.image()
    key = cosign_keys.new_key()
    cosign_keys.write_public_key(key, w.tmp / "cosign.pub")
    payload = cosign_keys.payload(image.digest)
    w.hostile.put_blob(b"{}")
    w.hostile.put_blob(payload)
    manifest = canonical_json({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": images.OCI_CONFIG, "digest": digest_of(b"{}"), "size": 2},
        "layers": [cosign_keys.Signature(payload, annotation).layer()],
    })
    w.hostile.put_manifest("app", manifest, OCI_MANIFEST, tag=cosign_keys.signature_tag(image.digest))
    w.write({"source": w.source(), "verify": {"cosignKey": "cosign.pub"}})
    return Expect(("lock", *FAST), 1, failures=1, says=(r"signature",))


@case("held", "malformed-DER-signature")
def _(w: World) -> Expect:
    return _bad_signature(w, base64.b64encode(b"\x30\x82\xff\xff" + b"\x02" * 70).decode())


@case("held", "malformed-base64-signature")
def _(w: World) -> Expect:
    return _bad_signature(w, "MEUCIQ!!not*base64==")


# ======================================================================================= 7. a prompt stop

def _interrupt_when_stalled(method: str, pattern: str) -> Callable[[World, Launched], None]:
    def on_start(w: World, process: Launched) -> None:
        assert w.hostile.wait_for(method, pattern, timeout=30), "the stalled read never came"
        os.kill(process.pid, signal.SIGINT)

    return on_start


def _stalled_ordering(method: str, pattern: str) -> Callable[[World, Measured], None]:
    def then(w: World, result: Measured) -> None:
        stalled = w.hostile.matching(method, pattern)
        assert stalled and all(request.answered is None for request in stalled), \
            "the run waited for a stalled read to be answered"
        assert result.stderr.splitlines()[-1] == "interrupted", str(result)

    return then


def _stalled_target(w: World, command: str) -> Expect:
    """The target's HEADs stall; Ctrl-C once the first is asked: nothing is being written, so nothing is waited for."""
    w.prefix = f"{w.hostile.host}/mirror/"
    w.write(bystander=True)
    w.lock_honestly()
    w.hostile.on("HEAD", r"/manifests/", Answer(404, JSON, b"", stall=STALL))
    return Expect((command,), 130, bystander=False, on_start=_interrupt_when_stalled("HEAD", "/manifests/"),
                  then=_stalled_ordering("HEAD", "/manifests/"))


@case("7", "ctrl-c-while-target-reads-stall-apply")
def _(w: World) -> Expect:
    return _stalled_target(w, "apply")


@case("held", "ctrl-c-while-target-reads-stall-plan")
def _(w: World) -> Expect:
    return _stalled_target(w, "plan")


@case("held", "ctrl-c-while-target-reads-stall-verify")
def _(w: World) -> Expect:
    return _stalled_target(w, "verify")


@case("held", "ctrl-c-while-source-reads-stall-lock")
def _(w: World) -> Expect:
    w.image()
    w.write(w.source())
    w.hostile.on("HEAD", r"/v2/app/manifests/", Answer(200, JSON, b"", stall=STALL))
    return Expect(("lock",), 130, bystander=False, on_start=_interrupt_when_stalled("HEAD", "/v2/app/manifests/"),
                  then=_stalled_ordering("HEAD", "/v2/app/manifests/"))


# =================================================================================================== 8. smaller

@case("8", "a-rule-lists-its-repository-once")
def _(w: World) -> Expect:
    tags = ["1.0.0", "1.1.0", "1.2.0", "1.3.0", "1.4.0", "1.5.0"]
    for tag in tags:
        w.image(tag=tag)
    w.hostile.page_size = 2
    w.write(rule(w, {"semver": ">=1.0", "latest": 3}))

    def then(w: World, result: Measured) -> None:
        _pinned_tags(w, tags[-3:])
        listed = [request for request in w.hostile.matching("GET", r"/v2/app/tags/list") if request.status == 200]
        assert len(listed) == 3, [request.target for request in listed]  # 6 tags, 2 a page: one listing

    return Expect(("lock", *FAST), 0, then=then)


@case("8", "lock-check-says-what-to-do")
def _(w: World) -> Expect:
    w.image()
    w.write(w.source())
    return Expect(("lock", "--check"), 1, failures=1, says=(r"image-syncer lock",), names_image=False,
                  output=(rf"^  \+ {re.escape(w.target_of(w.source()))}",))


# ============================================================================================== the checks

def _pinned(w: World, source: str, digest: str) -> None:
    pinned = {image["target"]: image for image in w.locked()["images"]}
    assert pinned[w.target_of(source)]["digest"] == digest


def _pinned_tags(w: World, tags: list[str]) -> None:
    rule_targets = {target for target in w.pinned_targets() if w.hostile.host.replace(":", "_") in target}
    assert rule_targets == {w.target_of(f"{w.hostile.host}/app:{tag}") for tag in tags}


def _copied(w: World, source: str, digest: str) -> None:
    repo, tag = w.target_of(source).split("/", 1)[1].rsplit(":", 1)
    with RawRegistry(w.target) as raw:
        answer = raw.head_manifest(repo, tag)
    assert answer.status_code == 200 and answer.headers["docker-content-digest"] == digest, (repo, tag, answer)


def _bystander_through(w: World, expect: Expect, result: Measured) -> None:
    """The bystander came through a run in which the hostile image failed, or the whole run succeeded."""
    command = expect.args[0]
    target = w.target_of(w.bystander_source)
    if command == "lock" and "--check" not in expect.args:
        if result.code == 0:
            _pinned(w, w.bystander_source, w.bystander.digest)
    elif command == "plan":
        assert re.search(rf"^  \+ {re.escape(target)}  copy ", result.stdout, re.M), str(result)
    elif command == "apply":
        _copied(w, w.bystander_source, w.bystander.digest)


def check(w: World, expect: Expect, result: Measured, lock_before: bytes | None) -> None:
    output = result.stdout + result.stderr
    assert result.code == expect.code, str(result)
    assert "Traceback" not in output, str(result)
    assert "internal error" not in output, str(result)
    failures = [line for line in result.stderr.splitlines() + result.stdout.splitlines() if FAILURE_LINE.match(line)]
    assert len(failures) == expect.failures, str(result)
    for line in failures:
        if expect.bystander:
            assert w.bystander.repo not in line, line
        if expect.names_image:
            assert str(w.hostile.port) in line, line
        if expect.names_registry:
            assert w.hostile.host in line, line
        for pattern in expect.says:
            assert re.search(pattern, line, re.I), (pattern, line)
        assert len(line) <= LINE_CHARACTERS, f"a line of {len(line):,} characters"
        assert not LONG_NUMBER.search(re.sub(r"sha256[:-][0-9a-f]{64}|127\.0\.0\.1[:_]\d+", "", line)), line
    for pattern in expect.output:
        assert re.search(pattern, output, re.I | re.M), (pattern, str(result))
    lock_path = w.tmp / "images.lock"
    if result.code != 0:
        assert (lock_path.read_bytes() if lock_path.exists() else None) == lock_before, "images.lock changed"
    leaked = [request for request in w.other.requests if "authorization" in request.headers]
    leaked += [request for request in w.hostile.requests
               if request.headers.get("host") != w.hostile.host and "authorization" in request.headers]
    assert not leaked, [(request.method, request.target, request.headers.get("host")) for request in leaked]
    assert result.peak_rss_kib <= PEAK_RSS_KIB, f"peak RSS {result.peak_rss_mib:.1f} MiB\n{result}"
    sent = max((request.sent_bytes for request in w.hostile.requests + w.other.requests), default=0)
    assert sent <= READ_PAST_CAP, f"an answer was read to {sent:,} bytes"
    if expect.bystander:
        _bystander_through(w, expect, result)


# =========================================================================================== the fixtures

@pytest.fixture(scope="module")
def bystander(plain_registry) -> images.PushedImage:
    """An honest image on a real docker-registry: whatever the hostile one does, this one comes through."""
    return images.push_image(images.build_image("docker", seed=f"hostile-bystander-{SEED}"), plain_registry,
                             "hostile/bystander", "v1")


@pytest.fixture(scope="module")
def lock_prefix(second_plain_registry) -> str:
    return f"{second_plain_registry.host}/hostile-lock/"


@pytest.fixture(scope="module")
def bystander_lock(bystander, lock_prefix, tmp_path_factory) -> str:
    """images.lock pinning the bystander alone: where every lock case starts."""
    workdir = tmp_path_factory.mktemp("bystander-lock")
    write_images(workdir, lock_prefix, [{"source": bystander.ref}])
    result = run_measured(workdir, "lock", env=cli_env(workdir))
    assert result.code == 0, str(result)
    return (workdir / "images.lock").read_text()


@pytest.fixture
def world(tmp_path, bystander, bystander_lock, lock_prefix, second_plain_registry):
    hostile = HostileRegistry(credentials=(USER, PASSWORD)).start()
    other = HostileRegistry().start()
    config = tmp_path / "docker-config"
    config.mkdir()
    (config / "config.json").write_text(json.dumps(
        {"auths": {hostile.host: {"auth": base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()}}}))
    w = World(tmp_path, hostile, other, second_plain_registry, bystander, lock_prefix, tmp_path / "ca.pem")
    w.env = {**cli_env(tmp_path), "DOCKER_CONFIG": str(config)}
    (tmp_path / "images.lock").write_text(bystander_lock)
    yield w
    for server in {hostile, other, w.hostile}:  # a case may put another hostile registry in its place
        server.stop()


@pytest.mark.parametrize("name", list(CASES), ids=[f"{finding}:{name}" for name, (finding, _) in CASES.items()])
def test_hostile_registry(name, world, request):
    """One hostile answer, the real CLI, and every check of the corpus (see the module's docstring)."""
    _, setup = CASES[name]
    expect = setup(world)
    lock_path = world.tmp / "images.lock"
    lock_before = lock_path.read_bytes() if lock_path.exists() else None
    on_start = (lambda process: expect.on_start(world, process)) if expect.on_start else None
    result = world.run(*expect.args, timeout=expect.timeout, on_start=on_start)
    request.node.user_properties.append(("peak_rss_mib", round(result.peak_rss_mib, 1)))  # for --junitxml
    print(result)  # shown with -rP
    try:
        check(world, expect, result, lock_before)
        if expect.then is not None:
            expect.then(world, result)
    except AssertionError as failure:
        raise AssertionError(f"{failure}\n(HOSTILE_SEED={SEED}; {result})") from None


def test_the_corpus_covers_every_finding_and_the_held_list():
    findings = {finding for finding, _ in CASES.values()}
    assert findings == {"1", "2", "3", "4", "5", "6", "7", "8", "held"}
    assert len(CASES) >= 40
