"""Only a manifest type the lock reads is pinned (issue 21, finding 6): `lock` against a small registry
(tests/harness/hostile.py) whose answers name a manifest's type wrongly, generically or not at all.

A HEAD naming a single image's type is taken at its word (no GET); any other answer (none, a generic
type, an unknown or a huge one, an index type) is settled by the manifest's own bytes, one GET. Schema 1
(by its Content-Type or by ``schemaVersion: 1`` in the body) and a body at odds with its Content-Type
refuse that image with one line at `lock`, and nothing is written. A lock that `lock` writes is one
`lock --check` accepts, and a second `lock` leaves it byte for byte. Cases marked held passed before
this rule too; every other one failed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tests.harness import images
from tests.harness.hostile import Answer, HostileRegistry, Request, digest_of
from tests.harness.images import DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST, canonical_json
from tests.helpers_cli import CliResult, run_cli, write_images

PREFIX = "mirror.example/m/"
FAST = ("--retries", "0", "--timeout", "5")
SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json"
SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"
HUGE = "application/" + "x" * 8_000
"""Within the 8 KiB an answer's header line may take; a longer one is refused as a malformed answer."""
GARBAGE = "\xff\xfe/;;,\"'; charset=\xff"


@pytest.fixture
def registry():
    server = HostileRegistry().start()
    yield server
    server.stop()


def answering(content_type: str | None, method: str | None = None) -> Callable:
    """A script: the honest answer, its Content-Type replaced (None: left out)."""

    def script(request: Request, server: HostileRegistry) -> Answer | None:
        if method is not None and request.method != method:
            return None
        answer = server.honest(request)
        headers = {name: value for name, value in answer.headers.items() if name.lower() != "content-type"}
        answer.headers = headers | ({"Content-Type": content_type} if content_type is not None else {})
        return answer

    return script


def schema1_body(signed: bool = True) -> bytes:
    body = {"schemaVersion": 1, "name": "app", "tag": "1.0", "architecture": "amd64",
            "fsLayers": [{"blobSum": digest_of(b"layer")}], "history": [{"v1Compatibility": "{}"}]}
    if signed:
        body["signatures"] = [{"header": {"alg": "ES256"}, "signature": "c2ln", "protected": "cHJvdGVjdGVk"}]
    return json.dumps(body, indent=3).encode()


def lock(tmp_path: Path, registry: HostileRegistry, *repos: str, args: tuple[str, ...] = ()) -> CliResult:
    write_images(tmp_path, PREFIX, [{"source": f"{registry.host}/{repo}:1.0"} for repo in repos])
    result = run_cli(tmp_path, "lock", *FAST, *args)
    assert "Traceback" not in result.stdout + result.stderr and "internal error" not in result.stderr, str(result)
    return result


def pinned(tmp_path: Path) -> dict[str, dict]:
    """The lock's pins by source repository."""
    locked = yaml.safe_load((tmp_path / "images.lock").read_text())
    return {image["source"].split("/", 1)[1].split(":")[0]: image for image in locked["images"]}


def manifest_gets(registry: HostileRegistry) -> int:
    return len(registry.matching("GET", r"/manifests/"))


def assert_readable_and_settled(tmp_path: Path, registry: HostileRegistry) -> None:
    """`lock --check` accepts what `lock` wrote, and `lock` again changes nothing."""
    written = (tmp_path / "images.lock").read_bytes()
    check = run_cli(tmp_path, "lock", "--check", *FAST)
    assert check.code == 0, str(check)
    again = run_cli(tmp_path, "lock", *FAST)
    assert again.code == 0, str(again)
    assert (tmp_path / "images.lock").read_bytes() == written


# -- types read from the bytes ----------------------------------------------------------------------------------

HEAD_ANSWERS = {
    "none": None,
    "application/json": "application/json",
    "octet-stream": "application/octet-stream",
    "text/plain with a charset": "text/plain; charset=utf-8",
    "huge": HUGE,
    "garbage": GARBAGE,
}


@pytest.mark.parametrize("content_type", list(HEAD_ANSWERS.values()), ids=list(HEAD_ANSWERS))
def test_an_index_whose_head_names_no_manifest_type_is_pinned_as_the_index_its_bytes_say(
    tmp_path, registry, content_type
):
    index = images.build_image("oci-index", seed="types-index")
    registry.put_image("app", "1.0", index)
    registry.on("HEAD", r"/manifests/", answering(content_type))

    result = lock(tmp_path, registry, "app")

    assert result.code == 0, str(result)
    app = pinned(tmp_path)["app"]
    assert (app["mediaType"], app["digest"]) == (OCI_INDEX, index.digest)
    assert app["platforms"] == ["linux/amd64", "linux/arm64/v8"]
    assert manifest_gets(registry) == 1
    assert_readable_and_settled(tmp_path, registry)


@pytest.mark.parametrize("content_type", [None, "application/json", HUGE], ids=["none", "application/json", "huge"])
def test_a_single_image_whose_head_and_get_name_no_type_is_typed_by_its_body(tmp_path, registry, content_type):
    """Both answers generic (a registry that does not know the types): the body's mediaType, else its shape."""
    image = images.build_image("oci", seed="types-image")
    untyped = {key: value for key, value in json.loads(image.raw).items() if key != "mediaType"}
    registry.put_image("app", None, image)
    registry.put_manifest("app", canonical_json(untyped), OCI_MANIFEST, tag="1.0")
    registry.on(None, r"/manifests/", answering(content_type))

    result = lock(tmp_path, registry, "app")

    assert result.code == 0, str(result)
    app = pinned(tmp_path)["app"]
    assert (app["mediaType"], app["digest"], app["platforms"]) == (OCI_MANIFEST, digest_of(canonical_json(untyped)), [])
    assert_readable_and_settled(tmp_path, registry)


def test_a_head_naming_a_single_image_type_is_taken_without_a_get(tmp_path, registry):
    """Held: the one-HEAD promise for the common case."""
    registry.put_image("app", "1.0", images.build_image("docker", seed="types-docker"))

    result = lock(tmp_path, registry, "app")

    assert result.code == 0, str(result)
    assert pinned(tmp_path)["app"]["mediaType"] == images.DOCKER_MANIFEST
    assert manifest_gets(registry) == 0


# -- refused, one line each ------------------------------------------------------------------------------------

REFUSALS: dict[str, Callable[[HostileRegistry], tuple[str, ...]]] = {}
"""Each case sets the registry up and returns what its one line says; a bystander image locks beside it."""


def refusal(name: str):
    def register(setup: Callable[[HostileRegistry], tuple[str, ...]]) -> Callable:
        REFUSALS[name] = setup
        return setup

    return register


SCHEMA1_REFUSED = ("schema 1 manifests are not supported",)


@refusal("schema 1 by its Content-Type, prettyjws")
def _(registry: HostileRegistry) -> tuple[str, ...]:
    registry.put_manifest("app", schema1_body(), SCHEMA1_SIGNED, tag="1.0")
    return SCHEMA1_REFUSED


@refusal("schema 1 by its Content-Type, unsigned")
def _(registry: HostileRegistry) -> tuple[str, ...]:
    registry.put_manifest("app", schema1_body(signed=False), SCHEMA1, tag="1.0")
    return SCHEMA1_REFUSED


@refusal("schema 1 signed, its digest not of its bytes")
def _(registry: HostileRegistry) -> tuple[str, ...]:
    """A signed schema 1 manifest's digest is its payload's without the signatures: the line names
    schema 1, not a digest mismatch."""
    headers = {"Content-Type": SCHEMA1_SIGNED, "Docker-Content-Digest": digest_of(schema1_body(signed=False))}
    registry.on(None, r"/v2/app/manifests/", Answer(200, headers, schema1_body()))
    return SCHEMA1_REFUSED


def schema1_served_as(content_type: str | None) -> Callable[[HostileRegistry], tuple[str, ...]]:
    """A schema 1 body, the HEAD generic, the GET answering ``content_type`` (a HEAD naming an image
    type is taken at its word: apply's GET refuses the body then)."""

    def setup(registry: HostileRegistry) -> tuple[str, ...]:
        registry.put_manifest("app", schema1_body(signed=False), "application/json", tag="1.0")
        registry.on("GET", r"/v2/app/manifests/", answering(content_type))
        return SCHEMA1_REFUSED

    return setup


for served in ("application/json", None, OCI_MANIFEST):
    refusal(f"schema 1 body served as {served}")(schema1_served_as(served))


@refusal("body an index, GET an image type, HEAD generic")
def _(registry: HostileRegistry) -> tuple[str, ...]:
    registry.put_image("app", "1.0", images.build_image("oci-index", seed="types-disagree"))
    registry.on("HEAD", r"/v2/app/manifests/", answering("application/json"))
    registry.on("GET", r"/v2/app/manifests/", answering(OCI_MANIFEST))
    return (f"served as {OCI_MANIFEST} but its body says '{OCI_INDEX}'",)


def declaring(declared: str) -> Callable[[HostileRegistry], tuple[str, ...]]:
    """An index in shape whose body names a type the lock does not read: not guessed into an index."""

    def setup(registry: HostileRegistry) -> tuple[str, ...]:
        index = images.build_image("oci-index", seed="types-unknown")
        registry.put_image("app", None, index)
        body = json.loads(index.raw) | {"mediaType": declared}
        registry.put_manifest("app", canonical_json(body), "application/json", tag="1.0")
        return ("unsupported media type",)

    return setup


refusal("body naming an unknown type")(declaring("application/vnd.example.thing+json"))
refusal("body naming a huge type")(declaring("application/" + "y" * 100_000))


@refusal("held: a Content-Type past the header cap")
def _(registry: HostileRegistry) -> tuple[str, ...]:
    """The transport refuses a header line over 8 KiB before anyone reads the type."""
    registry.put_image("app", "1.0", images.build_image("oci", seed="types-header"))
    registry.on("HEAD", r"/v2/app/manifests/", answering("application/" + "z" * 100_000))
    return ("malformed answer",)


@refusal("held: a Docker list served as an OCI index")
def _(registry: HostileRegistry) -> tuple[str, ...]:
    """Both known index types, at odds: neither word overrules the other."""
    registry.put_image("app", "1.0", images.build_image("docker-list", seed="types-list"))
    registry.on(None, r"/v2/app/manifests/", answering(OCI_INDEX))
    return (f"served as {OCI_INDEX} but its body says", DOCKER_MANIFEST_LIST)


@pytest.mark.parametrize("name", list(REFUSALS))
def test_refused_at_lock_with_one_line_and_nothing_written(tmp_path, registry, name):
    registry.put_image("bystander", "1.0", images.build_image("oci", seed="types-bystander"))
    says = REFUSALS[name](registry)

    result = lock(tmp_path, registry, "app", "bystander")

    assert result.code == 1, str(result)
    assert len(result.error_lines) == 1, str(result)
    line = result.error_lines[0]
    assert "/app" in line and "/bystander" not in line, line
    assert len(line) < 1200, line
    for text in says:
        assert text in line, line
    assert not (tmp_path / "images.lock").exists(), str(result)
