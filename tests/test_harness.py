"""The harness itself, against real registries (no mocks)."""

from __future__ import annotations

import gzip
import http.client
import io
import json
import re
import ssl
import tarfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
import pytest

from tests.harness import images
from tests.harness.fault_proxy import FaultProxy
from tests.harness.images import (DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX,
                                  OCI_MANIFEST, sha256_digest)
from tests.harness.rawhttp import RawRegistry, get_blob, get_manifest, parse_challenge
from tests.harness.registry import RegistryStartError, start_registry
from tests.harness.skopeo import SkopeoError, skopeo_copy, skopeo_inspect_raw
from tests.harness.token_issuer import deny_all_policy, parse_scope, pull_only_policy


# ------------------------------------------------------------------ variants
def test_plain_registry_answers_v2(plain_registry):
    r = httpx.get(plain_registry.url + "/v2/")
    assert r.status_code == 200
    assert r.headers["docker-distribution-api-version"] == "registry/2.0"
    assert plain_registry.host.startswith("127.0.0.1:")
    assert plain_registry.url == f"http://{plain_registry.host}"
    assert plain_registry.ca_file is None and plain_registry.credentials is None
    assert plain_registry.data_dir.is_dir()


def test_htpasswd_registry_challenges_basic(htpasswd_registry):
    url = htpasswd_registry.url + "/v2/"
    r = httpx.get(url)
    assert r.status_code == 401
    assert parse_challenge(r.headers["www-authenticate"]) == ("basic", {"realm": "harness-realm"})
    assert httpx.get(url, auth=htpasswd_registry.credentials).status_code == 200
    assert httpx.get(url, auth=("other", "other-pw")).status_code == 200
    assert httpx.get(url, auth=("tester", "wrong")).status_code == 401


def test_token_registry_challenges_bearer(token_registry):
    issuer = token_registry.issuer
    r = httpx.get(token_registry.url + "/v2/")
    assert r.status_code == 401
    scheme, params = parse_challenge(r.headers["www-authenticate"])
    assert scheme == "bearer"
    assert params == {"realm": issuer.realm, "service": issuer.service}
    r = httpx.get(token_registry.url + "/v2/some/repo/tags/list")
    assert parse_challenge(r.headers["www-authenticate"])[1]["scope"] == "repository:some/repo:pull"


def test_tls_registry_needs_its_ca(tls_registry):
    assert tls_registry.url.startswith("https://127.0.0.1:")
    assert (tls_registry.cert_dir / "ca.crt").read_bytes() == tls_registry.ca_file.read_bytes()
    ctx = ssl.create_default_context(cafile=str(tls_registry.ca_file))
    assert httpx.get(tls_registry.url + "/v2/", verify=ctx).status_code == 200
    localhost = tls_registry.url.replace("127.0.0.1", "localhost")
    assert httpx.get(localhost + "/v2/", verify=ctx).status_code == 200
    with pytest.raises(httpx.ConnectError):
        httpx.get(tls_registry.url + "/v2/")


def test_start_failure_reports_log_tail(tmp_path):
    with pytest.raises(RegistryStartError) as exc:
        start_registry("broken", extra_config={"storage": {"nosuchdriver": {}}},
                       workdir=tmp_path)
    assert "nosuchdriver" in str(exc.value)


def test_restart_keeps_storage(registry_factory, unique_repo):
    reg = registry_factory("restartable")
    pushed = images.push_image(images.build_oci_image("restart"), reg, unique_repo(), "v1")
    old = reg.host
    reg.restart()
    assert reg.host == old
    assert get_manifest(reg, pushed.repo, "v1").content == pushed.manifest
    reg.stop()
    assert not reg.running


# -------------------------------------------------------------------- images
def test_images_are_deterministic():
    for kind in images.BUILDERS:
        a, b = images.build_image(kind), images.build_image(kind)
        assert a.raw == b.raw and a.digest == b.digest
        assert a.blob_sizes == b.blob_sizes
    assert images.build_oci_image("x").digest != images.build_oci_image("y").digest


def test_image_contents_are_consistent():
    img = images.build_oci_index()
    index = json.loads(img.raw)
    assert index["mediaType"] == OCI_INDEX
    assert [m["platform"]["architecture"] for m in index["manifests"]] == ["amd64", "arm64"]
    for child in img.manifests:
        m = json.loads(child.raw)
        config = json.loads(child.config.data)
        assert config["architecture"] == child.platform["architecture"]
        diff_ids = []
        for layer, desc in zip(child.layers, m["layers"]):
            assert desc["digest"] == sha256_digest(layer.data) and desc["size"] == len(layer.data)
            tar = gzip.decompress(layer.data)
            assert tarfile.open(fileobj=io.BytesIO(tar)).getnames()
            diff_ids.append(sha256_digest(tar))
        assert config["rootfs"] == {"type": "layers", "diff_ids": diff_ids}
    large = images.build_large_image()
    assert max(b.size for b in large.blobs.values()) > 8 * images.MiB


EXPECTED_TYPES = {
    "oci": OCI_MANIFEST, "docker": DOCKER_MANIFEST, "oci-index": OCI_INDEX,
    "docker-list": DOCKER_MANIFEST_LIST, "large": OCI_MANIFEST,
}


@pytest.mark.parametrize("kind", list(images.BUILDERS))
def test_skopeo_copies_fixture_images_byte_identical(kind, seeded_images, plain_registry,
                                                     second_plain_registry, unique_repo):
    src = seeded_images[kind]
    assert src.media_type == EXPECTED_TYPES[kind]
    assert src.digest == sha256_digest(src.manifest)
    assert len(src.child_digests) == (2 if kind in ("oci-index", "docker-list") else 0)

    dest_repo = unique_repo()
    skopeo_copy(f"docker://{src.ref}", f"docker://{second_plain_registry.host}/{dest_repo}:v1")
    raw = skopeo_inspect_raw(f"docker://{second_plain_registry.host}/{dest_repo}:v1")
    assert raw == src.manifest
    assert sha256_digest(raw) == src.digest
    for child in src.children:
        got = skopeo_inspect_raw(f"{second_plain_registry.host}/{dest_repo}@{child.digest}")
        assert got == child.raw and sha256_digest(got) == child.digest

    with RawRegistry(second_plain_registry) as reg:
        r = reg.get_manifest(dest_repo, "v1")
        assert r.status_code == 200
        assert r.headers["docker-content-digest"] == src.digest
        assert r.headers["content-type"] == src.media_type
        assert r.content == src.manifest
        for digest, size in src.blobs.items():
            h = reg.head_blob(dest_repo, digest)
            assert h.status_code == 200, digest
            assert int(h.headers["content-length"]) == size
    if kind == "large":
        big = max(src.blobs, key=src.blobs.get)
        body = get_blob(second_plain_registry, dest_repo, big).content
        assert sha256_digest(body) == big and len(body) == src.blobs[big]


def test_push_to_htpasswd_and_tls_registries(htpasswd_registry, tls_registry, push_image,
                                             unique_repo):
    a = push_image("oci-index", registry=htpasswd_registry)
    with pytest.raises(SkopeoError):
        skopeo_inspect_raw(a.ref)  # anonymous is refused
    assert skopeo_inspect_raw(a.ref, creds=htpasswd_registry.credentials) == a.manifest

    b = push_image("docker", registry=tls_registry)
    assert skopeo_inspect_raw(b.ref, tls_verify=True, cert_dir=tls_registry.cert_dir) == b.manifest
    assert get_manifest(tls_registry, b.repo, b.tag).content == b.manifest

    # registry -> registry across auth and TLS
    dest = f"docker://{tls_registry.host}/{unique_repo()}:copied"
    skopeo_copy(f"docker://{a.ref}", dest, src_creds=htpasswd_registry.credentials,
                dest_tls_verify=True, dest_cert_dir=tls_registry.cert_dir)
    assert skopeo_inspect_raw(dest, tls_verify=True, cert_dir=tls_registry.cert_dir) == a.manifest


# --------------------------------------------------------------------- token
def test_token_issuer_records_and_grants(token_registry, push_image):
    issuer = token_registry.issuer
    pushed = push_image("oci", registry=token_registry)
    asked = [s for r in issuer.requests for s in r.requested]
    assert f"repository:{pushed.repo}:pull,push" in asked
    assert any(r.username == "tester" and r.granted_actions.get(pushed.repo) == ["pull", "push"]
               for r in issuer.requests)

    issuer.clear()
    # anonymous: default policy grants pull only
    assert skopeo_inspect_raw(pushed.ref) == pushed.manifest
    assert issuer.requests and all(r.username is None for r in issuer.requests)
    assert all(r.granted == [f"repository:{pushed.repo}:pull"] for r in issuer.requests)

    r = httpx.get(issuer.realm, params={"service": issuer.service,
                                         "scope": f"repository:{pushed.repo}:pull"},
                  auth=("tester", "wrong"))
    assert r.status_code == 401
    assert issuer.requests[-1].status == 401


def test_registry_enforces_granted_scopes(token_registry, push_image, unique_repo):
    issuer = token_registry.issuer
    pushed = push_image("oci", registry=token_registry)
    with issuer.use_policy(pull_only_policy):
        # skopeo with valid credentials but a pull-only grant cannot push
        with pytest.raises(SkopeoError):
            images.push_image(images.build_oci_image("denied"), token_registry, unique_repo())
        # a pull-only token pulls fine but cannot start an upload
        r = httpx.get(issuer.realm, params={"service": issuer.service,
                                             "scope": f"repository:{pushed.repo}:pull,push"},
                      auth=token_registry.credentials)
        assert r.status_code == 200
        assert issuer.requests[-1].granted == [f"repository:{pushed.repo}:pull"]
        auth = {"Authorization": "Bearer " + r.json()["token"]}
        m = httpx.get(f"{token_registry.url}/v2/{pushed.repo}/manifests/v1",
                      headers={**auth, "Accept": OCI_MANIFEST})
        assert m.status_code == 200 and m.content == pushed.manifest
        up = httpx.post(f"{token_registry.url}/v2/{pushed.repo}/blobs/uploads/", headers=auth)
        assert up.status_code == 401
        challenge = parse_challenge(up.headers["www-authenticate"])[1]
        assert challenge["error"] == "insufficient_scope"
        typ, name, actions = parse_scope(challenge["scope"])
        assert (typ, name, sorted(actions)) == ("repository", pushed.repo, ["pull", "push"])
    assert issuer.policy is not pull_only_policy  # restored

    issuer.policy = deny_all_policy
    r = httpx.get(f"{token_registry.url}/v2/{pushed.repo}/manifests/v1",
                  headers={"Authorization": "Bearer " + issuer.issue("tester", [])})
    assert r.status_code == 401
    with pytest.raises(SkopeoError):
        skopeo_inspect_raw(pushed.ref, creds=token_registry.credentials)


def test_token_issuer_fail_next(token_registry):
    issuer = token_registry.issuer
    issuer.fail_next(1, status=503)
    params = {"service": issuer.service, "scope": "repository:x:pull"}
    assert httpx.get(issuer.realm, params=params).status_code == 503
    assert httpx.get(issuer.realm, params=params).status_code == 200
    # OAuth2 POST form
    r = httpx.post(issuer.realm, data={"grant_type": "password", "username": "tester",
                                       "password": "tester-pw", "service": issuer.service,
                                       "scope": "repository:x:pull", "client_id": "t"})
    assert r.status_code == 200 and r.json()["access_token"]


# --------------------------------------------------------------- fault proxy
def test_fault_proxy_injects_503_then_passes(plain_registry, fault_proxy, seeded_images):
    proxy = fault_proxy(plain_registry)
    src = seeded_images["oci"]
    rule = proxy.fail("GET", r"/manifests/", 503, headers={"Retry-After": "1"}, times=2)
    path = f"/v2/{src.repo}/manifests/{src.tag}"
    with httpx.Client() as c:
        r1 = c.get(proxy.url + path, headers={"Accept": OCI_MANIFEST})
        r2 = c.get(proxy.url + path, headers={"Accept": OCI_MANIFEST})
        r3 = c.get(proxy.url + path, headers={"Accept": OCI_MANIFEST})
    assert (r1.status_code, r2.status_code, r3.status_code) == (503, 503, 200)
    assert r1.headers["retry-after"] == "1"
    assert r3.content == src.manifest and r3.headers["docker-content-digest"] == src.digest
    assert rule.hits == 2 and rule.exhausted
    assert proxy.count("GET", r"/manifests/") == 3
    assert [r.action for r in proxy.requests] == ["respond", "respond", "pass"]
    assert proxy.requests[0].headers["accept"] == OCI_MANIFEST


def test_fault_proxy_streams_large_uploads_and_keeps_locations(plain_registry, fault_proxy, push_image):
    proxy = fault_proxy(plain_registry)
    pushed = push_image("large", host=proxy.host)
    assert pushed.host == proxy.host
    assert skopeo_inspect_raw(pushed.ref) == pushed.manifest
    assert proxy.count("PUT", r"/manifests/v1$") == 1
    big = max(pushed.blobs, key=pushed.blobs.get)
    assert sum(r.request_bytes for r in proxy.requests_matching(path="/blobs/uploads/")) >= pushed.blobs[big]

    # chunked request body; the upload Location points back at the proxy
    data = images.seeded_bytes("chunked", 3 * images.MiB + 17)
    digest = sha256_digest(data)
    with httpx.Client(timeout=60) as c:
        start = c.post(f"{proxy.url}/v2/{pushed.repo}/blobs/uploads/")
        assert start.status_code == 202
        loc = start.headers["location"]
        assert loc.startswith(proxy.url + "/")

        def body():
            for i in range(0, len(data), 100_000):
                yield data[i:i + 100_000]

        put = c.put(f"{loc}&digest={digest}", content=body())
        assert put.status_code == 201
        assert "chunked" in proxy.requests[-1].headers.get("transfer-encoding", "")
        head = c.head(f"{proxy.url}/v2/{pushed.repo}/blobs/{digest}")
        assert head.status_code == 200 and int(head.headers["content-length"]) == len(data)
        got = c.get(f"{proxy.url}/v2/{pushed.repo}/blobs/{digest}")
        assert got.content == data


def test_fault_proxy_drop_truncate_and_cross_host_redirect(plain_registry, fault_proxy,
                                                          seeded_images):
    src = seeded_images["large"]
    big = max(src.blobs, key=src.blobs.get)
    path = f"/v2/{src.repo}/blobs/{big}"
    proxy = fault_proxy(plain_registry)
    other = fault_proxy(plain_registry, host="127.0.0.2")
    assert other.host.startswith("127.0.0.2:")
    proxy.drop("GET", "/blobs/")
    proxy.truncate("GET", "/blobs/", 1000)
    proxy.redirect("GET", "/blobs/", other.url)
    with httpx.Client(timeout=60) as c:
        with pytest.raises(httpx.RemoteProtocolError):
            c.get(proxy.url + path)
        with pytest.raises(httpx.RemoteProtocolError):
            c.get(proxy.url + path)
        r = c.get(proxy.url + path, headers={"Authorization": "Bearer secret"})
        assert r.status_code == 307 and r.headers["location"] == other.url + path
        r2 = c.get(r.headers["location"])
        assert r2.status_code == 200 and sha256_digest(r2.content) == big
    assert [r.action for r in proxy.requests] == ["drop", "truncate", "redirect"]
    assert proxy.requests[1].response_bytes == 1000
    assert proxy.requests[2].headers["authorization"] == "Bearer secret"
    assert other.requests[0].headers.get("authorization") is None
    assert other.requests[0].headers["host"] == other.host


def test_fault_proxy_in_front_of_token_registry(token_registry, fault_proxy, push_image):
    pushed = push_image("docker", registry=token_registry)
    proxy = fault_proxy(token_registry)
    # containers/image retries a 429 by itself
    proxy.fail("GET", r"/manifests/", 429, headers={"Retry-After": "0"})
    ref = f"{proxy.host}/{pushed.repo}:{pushed.tag}"
    assert skopeo_inspect_raw(ref, creds=token_registry.credentials) == pushed.manifest
    gets = proxy.requests_matching("GET", "/manifests/")
    assert [r.status for r in gets] == [429, 200]
    assert all(r.headers.get("authorization", "").startswith("Bearer ") for r in gets)
    # a 500 is not retried
    proxy.fail("GET", r"/manifests/", 500, body='{"errors":[{"code":"UNKNOWN"}]}')
    with pytest.raises(SkopeoError):
        skopeo_inspect_raw(ref, creds=token_registry.credentials)


# ------------------------------------------------- overload and pull limit
IN_FLIGHT_ERROR = {"errors": [{"code": "TOOMANYREQUESTS", "message": "too many requests in flight"}]}
PULL_LIMIT_ERROR = {"errors": [{"code": "TOOMANYREQUESTS", "message": (
    "You have reached your pull rate limit. You may increase the limit by authenticating and "
    "upgrading: https://www.docker.com/increase-rate-limits")}]}


def _wait_until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.01)


def test_fault_proxy_overload_sheds_what_exceeds_the_limit(plain_registry, fault_proxy):
    proxy = fault_proxy(plain_registry)
    proxy.delay("GET", r"^/v2/$", 2.0, times=4)
    proxy.overload(4)
    together = threading.Barrier(12)
    keep_alive = http.client.HTTPConnection(proxy.bind_host, proxy.port, timeout=30)
    upload = images.seeded_bytes("shed", 200_000)
    with httpx.Client(timeout=30) as client, ThreadPoolExecutor(12) as pool:

        def slow_get(_: int) -> httpx.Response:
            together.wait()
            return client.get(proxy.url + "/v2/")

        pending = pool.map(slow_get, range(12))
        _wait_until(lambda: len(proxy.in_flight_samples) == 12)
        keep_alive.request("POST", "/v2/shed/blobs/uploads/", body=upload)
        shed_post = keep_alive.getresponse()
        shed_body = shed_post.read()
        sock = keep_alive.sock
        answers = list(pending)
    assert sorted(r.status_code for r in answers) == [200] * 4 + [429] * 8
    for r in answers:
        if r.status_code == 429:
            assert r.json() == IN_FLIGHT_ERROR
            assert r.headers["content-type"] == "application/json"
            assert "retry-after" not in r.headers
    assert shed_post.status == 429 and json.loads(shed_body) == IN_FLIGHT_ERROR
    assert proxy.requests[12].request_bytes == len(upload)

    # the shed upload's body was read off the connection: the next request on it works
    _wait_until(lambda: proxy.in_flight == 0)
    keep_alive.request("GET", "/v2/")
    after = keep_alive.getresponse()
    after.read()
    assert after.status == 200 and keep_alive.sock is sock
    keep_alive.close()

    assert proxy.in_flight_peak == 4 and proxy.shed == 9
    assert proxy.in_flight_samples == [1, 2, 3, 4] + [5] * 9 + [1]
    assert [r.action for r in proxy.requests] == ["delay"] * 4 + ["shed"] * 9 + ["pass"]

    _wait_until(lambda: proxy.in_flight == 0)
    proxy.clear()
    assert (proxy.in_flight_peak, proxy.shed, proxy.in_flight_samples) == (0, 0, [])
    with httpx.Client() as one_connection:  # each answer is counted out before the next request
        proxy.overload(0, status=503, retry_after="7")
        r = one_connection.get(proxy.url + "/v2/")
        assert r.status_code == 503 and r.headers["retry-after"] == "7"
        assert r.json() == IN_FLIGHT_ERROR
        proxy.overload(None)
        assert one_connection.get(proxy.url + "/v2/").status_code == 200
        proxy.overload(0)
        proxy.clear_rules()
        assert one_connection.get(proxy.url + "/v2/").status_code == 200
    assert (proxy.shed, proxy.in_flight_samples, proxy.in_flight_peak) == (1, [1, 1, 1], 1)


def _rate_limit(r: httpx.Response) -> tuple[str | None, str | None, str | None]:
    return (r.headers.get("ratelimit-limit"), r.headers.get("ratelimit-remaining"),
            r.headers.get("docker-ratelimit-source"))


def test_fault_proxy_pull_limit_counts_manifest_gets_like_docker_hub(plain_registry, fault_proxy,
                                                                    push_image):
    pushed = push_image("oci")
    proxy = fault_proxy(plain_registry)
    proxy.pull_limit(100, 2)
    manifests = f"{proxy.url}/v2/{pushed.repo}/manifests"
    accept = {"Accept": OCI_MANIFEST}
    with httpx.Client(timeout=30) as c:
        head = c.head(f"{manifests}/{pushed.tag}", headers=accept)
        assert head.status_code == 200
        assert _rate_limit(head) == ("100;w=21600", "2;w=21600", "127.0.0.1")
        assert head.headers["docker-content-digest"] == pushed.digest
        assert int(head.headers["content-length"]) == len(pushed.manifest)
        assert proxy.pulls_remaining == 2

        first = c.get(f"{manifests}/{pushed.tag}", headers=accept)
        assert first.status_code == 200 and first.content == pushed.manifest
        assert first.headers["docker-content-digest"] == pushed.digest
        assert _rate_limit(first) == ("100;w=21600", "1;w=21600", "127.0.0.1")
        second = c.get(f"{manifests}/{pushed.digest}?ignored=1", headers=accept)
        assert second.status_code == 200 and second.content == pushed.manifest
        assert _rate_limit(second) == ("100;w=21600", "0;w=21600", "127.0.0.1")

        refused = c.get(f"{manifests}/{pushed.tag}", headers=accept)
        assert refused.status_code == 429 and refused.json() == PULL_LIMIT_ERROR
        assert refused.headers["content-type"] == "application/json"
        assert _rate_limit(refused) == ("100;w=21600", "0;w=21600", "127.0.0.1")
        assert "retry-after" not in refused.headers

        again = c.head(f"{manifests}/{pushed.tag}", headers=accept)
        assert again.status_code == 200 and _rate_limit(again)[1] == "0;w=21600"
        config = pushed.image.manifests[0].config
        blob = c.get(f"{proxy.url}/v2/{pushed.repo}/blobs/{config.digest}")
        assert blob.status_code == 200 and blob.content == config.data
        assert _rate_limit(blob) == (None, None, None)
    assert proxy.pulls_remaining == 0 and proxy.pulls_refused == 1
    assert ([r.action for r in proxy.requests_matching(path="/manifests/")]
            == ["pass", "pass", "pass", "refuse_pull", "pass"])

    proxy.pull_limit(100, 0, window=3600, retry_after="3600")
    r = httpx.get(f"{manifests}/{pushed.tag}", headers=accept)
    assert r.status_code == 429 and r.headers["retry-after"] == "3600"
    assert _rate_limit(r)[:2] == ("100;w=3600", "0;w=3600")

    # only a 200 costs a pull
    proxy.pull_limit(100, 1)
    missing = httpx.get(f"{manifests}/no-such-tag", headers=accept)
    assert missing.status_code == 404 and _rate_limit(missing)[1] == "1;w=21600"
    assert proxy.pulls_remaining == 1

    # overlapping GETs never overdraw
    proxy.pull_limit(100, 3)
    proxy.delay("GET", r"/manifests/", 0.3, times=6)
    with ThreadPoolExecutor(6) as pool:
        statuses = list(pool.map(lambda _: httpx.get(f"{manifests}/{pushed.tag}", headers=accept)
                                 .status_code, range(6)))
    assert sorted(statuses) == [200] * 3 + [429] * 3
    assert proxy.pulls_remaining == 0 and proxy.pulls_refused == 5

    proxy.clear_rules()
    r = httpx.get(f"{manifests}/{pushed.tag}", headers=accept)
    assert r.status_code == 200 and _rate_limit(r) == (None, None, None)
    assert proxy.pulls_remaining is None


# ------------------------------------------------------------- referrers API
EMPTY_CONFIG = "application/vnd.oci.empty.v1+json"
SBOM = "application/vnd.example.sbom.v1"
SIGNATURE = "application/vnd.example.signature.v1+json"
TAGGED_CONFIG = "application/vnd.example.tagged.config.v1+json"
LINK_NEXT = re.compile(r'<(/v2/[^>]+)>; rel="next"')


def _push_referrer(reg: RawRegistry, repo: str, subject: dict, seed: str, *,
                   reference: str | None = None, artifact_type: str | None = None,
                   config_media_type: str = EMPTY_CONFIG, annotations: dict | None = None) -> dict:
    """Push an OCI artifact manifest (the image spec's empty config, one payload
    layer) by digest or ``reference``; return the descriptor the spec wants listed."""
    payload = images.seeded_bytes(seed, 64)
    manifest = {
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": config_media_type, "digest": reg.push_blob(repo, b"{}"), "size": 2},
        "layers": [{"mediaType": "application/octet-stream", "digest": reg.push_blob(repo, payload),
                    "size": len(payload)}],
        "subject": subject,
    }
    if artifact_type is not None:
        manifest["artifactType"] = artifact_type
    if annotations is not None:
        manifest["annotations"] = annotations
    raw = images.canonical_json(manifest)
    put = reg.put_manifest(repo, reference or sha256_digest(raw), raw, OCI_MANIFEST)
    assert put.status_code == 201 and put.headers["docker-content-digest"] == sha256_digest(raw)
    listed = {"mediaType": OCI_MANIFEST, "digest": sha256_digest(raw), "size": len(raw),
              "artifactType": artifact_type or config_media_type}
    if annotations is not None:
        listed["annotations"] = annotations
    return listed


@dataclass
class Referred:
    """A subject image in ``repo`` with four referrers, and one that refers to ``other``."""

    proxy: FaultProxy
    repo: str
    subject: str
    sboms: list[dict]       # two, pushed by digest through the proxy
    signature: dict         # pushed by digest through the proxy
    tagged: dict            # pushed straight to the registry under a tag, no artifactType
    other: str              # a digest nothing is stored under
    other_referrer: dict

    @property
    def all(self) -> list[dict]:
        return sorted([*self.sboms, self.signature, self.tagged], key=lambda d: d["digest"])

    def url(self, digest: str) -> str:
        return f"{self.proxy.url}/v2/{self.repo}/referrers/{digest}"


@pytest.fixture
def referred(plain_registry, fault_proxy, push_image) -> Referred:
    pushed = push_image("oci")
    proxy = fault_proxy(plain_registry)
    subject = {"mediaType": pushed.media_type, "digest": pushed.digest, "size": pushed.size}
    other = sha256_digest(b"a manifest never pushed")
    with RawRegistry(url=proxy.url) as through_proxy, RawRegistry(plain_registry) as direct:
        sboms = [_push_referrer(through_proxy, pushed.repo, subject, "sbom-1", artifact_type=SBOM,
                                annotations={"org.opencontainers.image.created": "2024-05-01T00:00:00Z"}),
                 _push_referrer(through_proxy, pushed.repo, subject, "sbom-2", artifact_type=SBOM)]
        signature = _push_referrer(through_proxy, pushed.repo, subject, "sig", artifact_type=SIGNATURE,
                                   annotations={"org.example.signer": "harness"})
        tagged = _push_referrer(direct, pushed.repo, subject, "tagged", reference="tagged-referrer",
                                config_media_type=TAGGED_CONFIG, annotations={"org.example.via": "tag"})
        other_referrer = _push_referrer(through_proxy, pushed.repo,
                                        {"mediaType": OCI_MANIFEST, "digest": other, "size": 10},
                                        "other", artifact_type=SBOM)
    proxy.clear()
    return Referred(proxy, pushed.repo, pushed.digest, sboms, signature, tagged, other, other_referrer)


def _index(r: httpx.Response) -> list[dict]:
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == OCI_INDEX
    body = r.json()
    assert (body["schemaVersion"], body["mediaType"]) == (2, OCI_INDEX)
    return body["manifests"]


def _all_pages(client: httpx.Client, referred: Referred, first_url: str) -> list[list[dict]]:
    """Every page, following ``Link: <...>; rel="next"`` from ``first_url``."""
    pages, url = [], first_url
    while url is not None:
        assert len(pages) < 8, "the Link chain never ends"
        r = client.get(url)
        pages.append(_index(r))
        link = r.headers.get("link")
        url = None if link is None else referred.proxy.url + LINK_NEXT.fullmatch(link)[1]
    return pages


def test_referrers_api_lists_the_manifests_whose_subject_is_the_digest(referred, plain_registry):
    proxy = referred.proxy
    proxy.referrers_api()
    with httpx.Client(timeout=30) as c:
        listed = c.get(referred.url(referred.subject))
        assert _index(listed) == referred.all
        assert "oci-filters-applied" not in listed.headers and "link" not in listed.headers
        # a subject nothing is stored under still has its referrers; a referrer has none
        assert _index(c.get(referred.url(referred.other))) == [referred.other_referrer]
        assert _index(c.get(referred.url(referred.signature["digest"]))) == []
        assert c.get(referred.url("sha256:not-hex")).status_code == 400

        # computed from what the registry holds now: a deleted referrer is gone
        gone = referred.sboms[1]
        with RawRegistry(plain_registry) as direct:
            assert direct.delete_manifest(referred.repo, gone["digest"]).status_code == 202
        assert _index(c.get(referred.url(referred.subject))) == [d for d in referred.all if d != gone]
    assert [(r.action, r.status) for r in proxy.requests] == [("referrers", 200)] * 3 + [
        ("referrers", 400), ("referrers", 200)]


def test_referrers_api_filters_by_artifact_type_and_pages_by_link(referred):
    proxy = referred.proxy
    with httpx.Client(timeout=30) as c:
        proxy.referrers_api()
        sboms = c.get(referred.url(referred.subject), params={"artifactType": SBOM})
        assert _index(sboms) == sorted(referred.sboms, key=lambda d: d["digest"])
        assert sboms.headers["oci-filters-applied"] == "artifactType"
        signatures = c.get(referred.url(referred.subject), params={"artifactType": SIGNATURE})
        assert _index(signatures) == [referred.signature]
        assert _index(c.get(referred.url(referred.subject), params={"artifactType": "x/none"})) == []

        proxy.referrers_api(page_size=2)
        pages = _all_pages(c, referred, referred.url(referred.subject))
        assert [len(p) for p in pages] == [2, 2]
        assert [d for p in pages for d in p] == referred.all

        proxy.referrers_api(page_size=1)
        first = c.get(referred.url(referred.subject), params={"artifactType": SBOM})
        assert first.headers["oci-filters-applied"] == "artifactType"
        assert "artifactType=application%2Fvnd.example.sbom.v1" in first.headers["link"]
        pages = _all_pages(c, referred, f"{referred.url(referred.subject)}?artifactType={SBOM}")
        assert pages == [[d] for d in sorted(referred.sboms, key=lambda d: d["digest"])]
        assert len(_all_pages(c, referred, referred.url(referred.subject))) == 4
    assert {r.action for r in proxy.requests} == {"referrers"}


def test_referrers_api_off_leaves_the_registry_as_it_is(referred, plain_registry):
    proxy = referred.proxy
    subject_referrers = f"/v2/{referred.repo}/referrers/{referred.subject}"
    with httpx.Client(timeout=30) as c:
        registry_404 = httpx.get(plain_registry.url + subject_referrers)
        assert registry_404.status_code == 404
        assert c.get(proxy.url + subject_referrers).content == registry_404.content
        proxy.referrers_api()
        assert _index(c.get(proxy.url + subject_referrers)) == referred.all
        proxy.referrers_api(False)
        assert c.get(proxy.url + subject_referrers).status_code == 404
        proxy.referrers_api(page_size=1)
        proxy.clear_rules()
        assert c.get(proxy.url + subject_referrers).status_code == 404
    assert [(r.action, r.status) for r in proxy.requests] == [
        ("pass", 404), ("referrers", 200), ("pass", 404), ("pass", 404)]


def test_referrers_api_passes_everything_else_through(referred, plain_registry):
    proxy = referred.proxy
    proxy.referrers_api()
    tagged = referred.tagged
    paths = [("HEAD", f"/v2/{referred.repo}/referrers/{referred.subject}"),
             ("GET", f"/v2/{referred.repo}/referrers/{referred.subject}/extra"),
             ("GET", f"/v2/{referred.repo}/manifests/{tagged['digest']}"),
             ("GET", f"/v2/{referred.repo}/manifests/tagged-referrer"),
             ("GET", f"/v2/{referred.repo}/tags/list"),
             ("GET", f"/v2/{referred.repo}/blobs/{sha256_digest(b'{}')}"),
             ("GET", "/v2/")]
    accept = {"Accept": OCI_MANIFEST}
    with httpx.Client(timeout=30) as c:
        for method, path in paths:
            via_proxy = c.request(method, proxy.url + path, headers=accept)
            direct = c.request(method, plain_registry.url + path, headers=accept)
            assert via_proxy.status_code == direct.status_code, path
            assert via_proxy.content == direct.content, path
            for name in ("content-type", "docker-content-digest", "content-length"):
                assert via_proxy.headers.get(name) == direct.headers.get(name), (path, name)
    assert [r.action for r in proxy.requests] == ["pass"] * len(paths)


def test_referrers_api_answers_obey_fault_rules(referred):
    proxy = referred.proxy
    proxy.referrers_api()
    url = referred.url(referred.subject)
    proxy.fail("GET", "/referrers/", 503, headers={"Retry-After": "0"})
    proxy.truncate("GET", "/referrers/", 10)
    proxy.drop_answer("GET", "/referrers/")
    proxy.delay("GET", "/referrers/", 0.2)
    with httpx.Client(timeout=30) as c:
        assert c.get(url).status_code == 503
        with pytest.raises(httpx.RemoteProtocolError):
            c.get(url)
        with pytest.raises(httpx.RemoteProtocolError):
            c.get(url)
        assert _index(c.get(url)) == referred.all
    assert [(r.action, r.response_bytes) for r in proxy.requests][:2] == [("respond", 0), ("truncate", 10)]
    assert [r.action for r in proxy.requests][2:] == ["drop_answer", "referrers"]


def test_referrers_api_behind_token_auth_relays_the_challenge(token_registry, fault_proxy, push_image):
    pushed = push_image("oci", registry=token_registry)
    proxy = fault_proxy(token_registry)
    subject = {"mediaType": pushed.media_type, "digest": pushed.digest, "size": pushed.size}
    with RawRegistry(url=proxy.url, credentials=token_registry.credentials) as reg:
        referrer = _push_referrer(reg, pushed.repo, subject, "signed", artifact_type=SIGNATURE)
        proxy.referrers_api()
        path = f"/v2/{pushed.repo}/referrers/{pushed.digest}"
        anonymous = httpx.get(proxy.url + path)
        assert anonymous.status_code == 401
        scheme, params = parse_challenge(anonymous.headers["www-authenticate"])
        assert (scheme, params["scope"]) == ("bearer", f"repository:{pushed.repo}:pull")
        assert _index(reg.request("GET", path)) == [referrer]
    assert [(r.action, r.status) for r in proxy.requests_matching("GET", "/referrers/")] == [
        ("referrers", 401), ("referrers", 401), ("referrers", 200)]
