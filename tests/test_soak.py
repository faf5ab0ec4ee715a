"""Fault soak: the real CLI applies through fault-injecting proxies in front of real registries.

The promise under test: a target ends up holding exactly what the lock pins, or
nothing, and every run ends with its report, never a traceback. The fault rules
are drawn from a seeded ``random.Random`` (the same seed, the same rules; which
try of a request meets which rule follows the order requests arrive). Each rule
matches one request of one image (a path with its digest) for its next 1 to 3
requests, and the rules that can hit the requests of one retry budget (a request
and its retries; a blob's whole transfer: source GET, upload POST and PUT) leave
that budget one try to succeed, except on the few operations doomed on purpose,
whose images must then be the ones reported failed. Run with ``-s`` to see the
faults injected.
"""

from __future__ import annotations

import collections
import random
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import attrs
import httpx
import pytest

from tests.harness import images as harness_images
from tests.harness.fault_proxy import FaultProxy, Rule
from tests.harness.images import Image, sha256_digest
from tests.harness.pull import assert_serves, has_tag
from tests.helpers_cli import CliResult, run_cli, write_images

SEED = 20261127
RETRIES = 4
ATTEMPTS = RETRIES + 1
TIMEOUT = 2  # --timeout: a LONG_STALL outlasts it and costs a try, a SHORT_STALL does not
SHORT_STALL = (0.1, 0.6)
LONG_STALL = 3.5
LONG_STALLS = 5  # each costs TIMEOUT seconds of one operation, so only a few
DOOMED_IMAGES = 2
MIN_FAULTS = 200
CRASH_MARKERS = ("Traceback", "Task exception was never retrieved")
TAG = "v1"
MiB = harness_images.MiB


# -- the images ----------------------------------------------------------------------------


@attrs.frozen
class Entry:
    """One images.yaml entry: the image we built, at the same path in source and target registry."""

    image: Image = attrs.field(eq=False)  # the path names it
    path: str

    def source(self, host: str) -> str:
        return f"{host}/{self.path}:{TAG}"

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[1]


def soak_images() -> list[tuple[str, Image]]:
    """Twenty entries: single images, indexes, multi-MiB layers, and two that share every blob with another."""
    built = [(f"oci-{i}", harness_images.build_oci_image(f"soak-oci-{i}")) for i in range(4)]
    built += [(f"docker-{i}", harness_images.build_docker_image(f"soak-docker-{i}")) for i in range(3)]
    built += [(f"index-{i}", harness_images.build_oci_index(f"soak-index-{i}")) for i in range(3)]
    built += [(f"list-{i}", harness_images.build_docker_manifest_list(f"soak-list-{i}")) for i in range(3)]
    built += [(f"large-{i}", harness_images.build_large_image(f"soak-large-{i}", size=(2 + i % 3) * MiB,
                                                              docker=i % 2 == 1)) for i in range(5)]
    by_name = dict(built)
    return built + [("oci-0-again", by_name["oci-0"]), ("large-0-again", by_name["large-0"])]


def push_entries(push_image, base: str, named: list[tuple[str, Image]]) -> list[Entry]:
    entries = [Entry(image, f"{base}/{name}") for name, image in named]
    for entry in entries:
        push_image(entry.image, repo=entry.path, tag=TAG, verify=False)
    return entries


def write_config(workdir: Path, entries: list[Entry], source_host: str, target_host: str, base: str) -> None:
    write_images(workdir, f"{target_host}/{base}",
                 [{"source": entry.source(source_host), "target": entry.name} for entry in entries])


# -- the requests an apply sends, and the budgets they share ----------------------------------


@attrs.frozen
class Request:
    """Requests of one kind on one object: what a fault rule matches."""

    side: str  # "source" or "target"
    method: str
    path: str  # a regex on path and query
    body_size: int | None = None  # what a truncation can cut (answers with a body)


@attrs.frozen
class Operation:
    """Requests that share one retry budget; if it runs out, ``entry`` is the image that fails."""

    entry: Entry
    what: str
    requests: tuple[Request, ...]
    doomable: bool = False  # a single request that a refusal of every try fails for good


def _hex(digest: str) -> str:
    return digest.split(":", 1)[1]


def operations(entry: Entry) -> list[Operation]:
    """What apply does for one image: HEAD the tag (plan, then again before pushing it), GET each manifest
    from the source, HEAD and PUT each child, transfer each blob, PUT the tag.

    A transfer first asks the target to mount the blob (from the repository that placed it, or from this
    one, where it may already be), else opens a plain upload (also after a refused mount), then streams
    the source's GET into the PUT that commits it.
    """
    path = re.escape(f"/v2/{entry.path}/")
    image = entry.image
    plain_post = Request("target", "POST", f"{path}blobs/uploads/$")
    ops = [
        Operation(entry, "HEAD tag", (Request("target", "HEAD", f"{path}manifests/{TAG}$"),)),
        Operation(entry, "GET manifest", (Request("source", "GET", f"{path}manifests/{image.digest}$", image.size),),
                  doomable=True),
        Operation(entry, "PUT tag", (Request("target", "PUT", f"{path}manifests/{TAG}$"),), doomable=True),
    ]
    for child in image.manifests if image.is_index else ():
        ops += [
            Operation(entry, f"GET child {child.digest}",
                      (Request("source", "GET", f"{path}manifests/{child.digest}$", child.size),), doomable=True),
            Operation(entry, f"HEAD child {child.digest}",
                      (Request("target", "HEAD", f"{path}manifests/{child.digest}$"),)),
            Operation(entry, f"PUT child {child.digest}",
                      (Request("target", "PUT", f"{path}manifests/{child.digest}$"),), doomable=True),
        ]
    for blob in image.blobs.values():
        ops.append(Operation(entry, f"transfer blob {blob.digest}", (
            Request("target", "POST", f"{path}blobs/uploads/\\?mount=sha256%3A{_hex(blob.digest)}&"),
            plain_post,
            Request("source", "GET", f"{path}blobs/{blob.digest}$", blob.size),
            Request("target", "PUT", f"{path}blobs/uploads/[^?]*\\?.*digest=sha256%3A{_hex(blob.digest)}"),
        )))
    return ops


# -- the faults -----------------------------------------------------------------------------------

Add = Callable[[FaultProxy, Request, int, random.Random], Rule]


@attrs.frozen
class FaultKind:
    name: str
    add: Add
    methods: frozenset[str]
    needs_body: bool = False
    most_times: int = 3


def _status(status: int, retry_after: str | None = None) -> Add:
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    body = '{"errors":[{"code":"UNAVAILABLE","message":"soak"}]}'
    return lambda proxy, request, times, rng: proxy.fail(request.method, request.path, status, times=times,
                                                          headers=headers, body=body)


ALL = frozenset({"GET", "HEAD", "PUT", "POST"})
WRITES = frozenset({"PUT", "POST"})
STATUS_KINDS = (
    FaultKind("HTTP 500", _status(500), ALL),
    FaultKind("HTTP 502", _status(502), ALL),
    FaultKind("HTTP 503", _status(503), ALL),
    FaultKind("HTTP 429", _status(429), ALL),
    FaultKind("HTTP 429 Retry-After: 0", _status(429, "0"), ALL),
)
KINDS = (
    *STATUS_KINDS,
    FaultKind("HTTP 429 Retry-After: 1", _status(429, "1"), ALL, most_times=1),
    FaultKind("reset before the answer",
              lambda proxy, request, times, rng: proxy.drop(request.method, request.path, times=times, reset=True),
              ALL),
    FaultKind("closed before the answer",
              lambda proxy, request, times, rng: proxy.drop(request.method, request.path, times=times), ALL),
    FaultKind("carried out, answer lost (reset)",
              lambda proxy, request, times, rng: proxy.drop_answer(request.method, request.path, times=times,
                                                                   reset=True), WRITES),
    FaultKind("carried out, answer lost (closed)",
              lambda proxy, request, times, rng: proxy.drop_answer(request.method, request.path, times=times),
              WRITES),
    FaultKind("body cut short (reset)",
              lambda proxy, request, times, rng: proxy.truncate(
                  request.method, request.path, rng.randrange(request.body_size), times=times, reset=True),
              frozenset({"GET"}), needs_body=True, most_times=1),
    FaultKind("body cut short (closed)",
              lambda proxy, request, times, rng: proxy.truncate(
                  request.method, request.path, rng.randrange(request.body_size), times=times),
              frozenset({"GET"}), needs_body=True, most_times=1),
    FaultKind("stall within the timeout",
              lambda proxy, request, times, rng: proxy.delay(request.method, request.path,
                                                             rng.uniform(*SHORT_STALL), times=times), ALL),
)
LONG_STALL_KIND = FaultKind(
    "stall past the timeout",
    lambda proxy, request, times, rng: proxy.delay(request.method, request.path, LONG_STALL, times=times),
    ALL, most_times=1,
)


class FaultPlan:
    """Rules drawn from ``rng``, each counted against every budget its request belongs to."""

    def __init__(self, rng: random.Random, proxies: dict[str, FaultProxy], ops: list[Operation]) -> None:
        self.rng = rng
        self.proxies = proxies
        self.ops = ops
        self.load: collections.Counter[Request] = collections.Counter()
        self.ops_of: dict[Request, list[Operation]] = collections.defaultdict(list)
        for op in ops:
            for request in op.requests:
                self.ops_of[request].append(op)
        self.long_stalls = 0
        self.doomed: dict[Operation, Rule] = {}

    def room(self, request: Request) -> int:
        """How many more faults every budget this request belongs to can take and still succeed."""
        return min(RETRIES - sum(self.load[r] for r in op.requests) for op in self.ops_of[request])

    def add(self, kind: FaultKind, request: Request, times: int) -> Rule:
        rule = kind.add(self.proxies[request.side], request, times, self.rng)
        rule.name = kind.name
        self.load[request] += times
        return rule

    def doom(self, entry: Entry) -> None:
        """Refuse every try of one of ``entry``'s operations: that image, and only it, must fail."""
        op = self.rng.choice([op for op in self.ops if op.entry == entry and op.doomable])
        (request,) = op.requests
        self.doomed[op] = self.add(self.rng.choice(STATUS_KINDS), request, ATTEMPTS)

    def spread(self, first: float, more: float) -> None:
        """Each operation gets faults with probability ``first``, then one more rule with probability ``more``."""
        ops = list(self.ops)
        self.rng.shuffle(ops)
        for op in ops:
            chance = first
            while self.rng.random() < chance:
                chance = more
                open_requests = [r for r in op.requests if self.room(r) > 0]
                if not open_requests:
                    break
                request = self.rng.choice(open_requests)
                kind = self.rng.choice([k for k in self._kinds() if request.method in k.methods
                                        and (request.body_size or not k.needs_body)])
                if kind is LONG_STALL_KIND:
                    self.long_stalls += 1
                self.add(kind, request, self.rng.randint(1, min(kind.most_times, self.room(request))))

    def _kinds(self) -> tuple[FaultKind, ...]:
        return KINDS + (LONG_STALL_KIND,) if self.long_stalls < LONG_STALLS else KINDS


def injected(proxies: dict[str, FaultProxy]) -> list[str]:
    return [f"{side:6} {record.method:4} {record.path} -> {record.rule.name}"
            for side, proxy in proxies.items() for record in proxy.requests if record.rule is not None]


def print_faults(lines: list[str], base: str) -> None:
    print(f"\n{len(lines)} faults injected (seed {SEED}):")
    for line in lines:
        line = re.sub(r"_state=[^&]*&", "", line.replace(base + "/", ""))
        print("  " + re.sub(r"([0-9a-f]{12})[0-9a-f]{52}", r"\1…", line))
    for kind, count in sorted(collections.Counter(line.rsplit(" -> ", 1)[1] for line in lines).items()):
        print(f"  {count:4}  {kind}")


# -- checks -----------------------------------------------------------------------------------------


def assert_no_crash(result: CliResult) -> None:
    for marker in CRASH_MARKERS:
        assert marker not in result.stdout and marker not in result.stderr, str(result)


def finished(result: CliResult, code: int) -> CliResult:
    """Every run exits as expected, and never with a crash."""
    assert_no_crash(result)
    assert result.code == code, str(result)
    return result


def reported(result: CliResult, outcome: str) -> set[str]:
    """The targets the apply report lists with ``outcome``."""
    found = (re.match(r"  [x!] (\S+)  (\w+)", line) for line in result.stdout_lines)
    return {match[1] for match in found if match and match[2] == outcome}


def assert_all_served(registry, entries: list[Entry], workdir: Path) -> None:
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda entry: assert_serves(registry, entry.path, TAG, entry.image, workdir), entries))


# -- 1. the soak --------------------------------------------------------------------------------------


def test_apply_through_two_hundred_faults_copies_exactly_the_lock_or_reports(
    tmp_path, push_image, plain_registry, second_plain_registry, fault_proxy, unique_repo
):
    base = unique_repo()
    entries = push_entries(push_image, base, soak_images())
    proxies = {"source": fault_proxy(plain_registry, name="source"),
               "target": fault_proxy(second_plain_registry, name="target")}
    write_config(tmp_path, entries, proxies["source"].host, proxies["target"].host, base)
    finished(run_cli(tmp_path, "lock"), 0)
    for proxy in proxies.values():
        proxy.clear()  # lock reads indexes: count only what apply sends

    shared = {digest for digest, count in collections.Counter(entry.image.digest for entry in entries).items()
              if count > 1}
    rng = random.Random(SEED)
    plan = FaultPlan(rng, proxies, [op for entry in entries for op in operations(entry)])
    doomed = rng.sample([entry for entry in entries if entry.image.digest not in shared], DOOMED_IMAGES)
    for entry in doomed:
        plan.doom(entry)
    plan.spread(first=0.75, more=0.6)

    applied = run_cli(tmp_path, "apply", "--retries", str(RETRIES), "--timeout", str(TIMEOUT), timeout=180)
    print_faults(injected(proxies), base)
    print(applied)
    finished(applied, 1)
    assert len(injected(proxies)) >= MIN_FAULTS
    for op, rule in plan.doomed.items():  # refused once per try of the budget, and not asked again
        (request,) = op.requests
        assert (rule.hits, proxies[request.side].count(request.method, request.path)) == (ATTEMPTS, ATTEMPTS), (
            f"{op.entry.name}: {op.what}")
    target_of = {entry.path: f"{proxies['target'].host}/{entry.path}:{TAG}" for entry in entries}
    assert reported(applied, "failed") == {target_of[entry.path] for entry in doomed}, str(applied)
    assert applied.stdout_lines[-1].startswith(
        f"Apply: {len(entries) - len(doomed)} copied, 0 unchanged, 0 refused, {len(doomed)} failed")
    assert not any(has_tag(second_plain_registry, entry.path, TAG) for entry in doomed)
    assert_all_served(second_plain_registry, [entry for entry in entries if entry not in doomed], tmp_path)

    proxies["source"].clear_rules()
    proxies["target"].clear_rules()
    again = finished(run_cli(tmp_path, "apply", "--retries", str(RETRIES), "--timeout", str(TIMEOUT)), 0)
    assert again.stdout_lines[-1].startswith(
        f"Apply: {len(doomed)} copied, {len(entries) - len(doomed)} unchanged, 0 refused, 0 failed"), str(again)
    assert_all_served(second_plain_registry, entries, tmp_path)


# -- 2. every source body cut short once -----------------------------------------------------------


def test_every_manifest_and_blob_cut_short_once_is_fetched_again_whole(
    tmp_path, push_image, plain_registry, second_plain_registry, fault_proxy, unique_repo
):
    base = unique_repo()
    entries = push_entries(push_image, base, [
        ("oci", harness_images.build_oci_image("cut-oci")),
        ("list", harness_images.build_docker_manifest_list("cut-list")),
        ("index", harness_images.build_oci_index("cut-index")),
        ("large", harness_images.build_large_image("cut-large", size=3 * MiB)),
    ])
    source = fault_proxy(plain_registry, name="source")
    write_config(tmp_path, entries, source.host, second_plain_registry.host, base)
    finished(run_cli(tmp_path, "lock"), 0)
    source.clear()  # lock reads indexes: count only what apply sends

    rng = random.Random(SEED)
    cuts: dict[str, Rule] = {}
    for entry in entries:
        bodies = [(f"manifests/{digest}", len(raw)) for digest, raw in entry.image.manifest_bytes().items()]
        bodies += [(f"blobs/{blob.digest}", blob.size) for blob in entry.image.blobs.values()]
        for what, size in bodies:
            path = re.escape(f"/v2/{entry.path}/{what}") + "$"
            cuts[path] = source.truncate("GET", path, rng.randrange(size), reset=rng.random() < 0.5)

    applied = finished(run_cli(tmp_path, "apply", timeout=120), 0)
    assert applied.stdout_lines[-1].startswith(f"Apply: {len(entries)} copied, 0 unchanged, 0 refused, 0 failed")
    assert {path: (rule.hits, source.count("GET", path)) for path, rule in cuts.items()} == {
        path: (1, 2) for path in cuts}
    assert_all_served(second_plain_registry, entries, tmp_path)


# -- 3. a blob commit whose answer is lost ---------------------------------------------------------------


@pytest.mark.parametrize("upload", [
    pytest.param((), id="whole"),
    # the chunked commit PUT has no body: once it was replayed (by aiohttp) into the
    # session the registry had already closed, and failed with BLOB_UPLOAD_UNKNOWN
    pytest.param(("--upload-chunk-mib", "1"), id="chunked"),
])
@pytest.mark.parametrize("reset", [True, False], ids=["reset", "closed"])
def test_a_blob_commit_whose_answer_is_lost_is_not_a_failure(
    tmp_path, push_image, plain_registry, second_plain_registry, fault_proxy, unique_repo, upload, reset
):
    base = unique_repo()
    entries = push_entries(push_image, base, [("app", harness_images.build_oci_image("lost-commit"))])
    target = fault_proxy(second_plain_registry, name="target")
    write_config(tmp_path, entries, plain_registry.host, target.host, base)
    finished(run_cli(tmp_path, "lock"), 0)
    layer = _hex(entries[0].image.manifests[0].layers[0].digest)
    rule = target.drop_answer("PUT", f"/blobs/uploads/[^?]*\\?.*digest=sha256%3A{layer}", reset=reset)

    applied = run_cli(tmp_path, "apply", *upload)
    assert rule.hits == 1
    assert_no_crash(applied)
    assert "BLOB_UPLOAD_UNKNOWN" not in applied.stdout, str(applied)
    finished(applied, 0)
    assert_all_served(second_plain_registry, entries, tmp_path)


# -- the fault kinds the soak adds to the proxy ------------------------------------------------------


@pytest.mark.parametrize(("reset", "seen"), [(True, httpx.ReadError), (False, httpx.RemoteProtocolError)])
def test_a_lost_answer_is_carried_out_upstream(plain_registry, fault_proxy, unique_repo, reset, seen):
    proxy = fault_proxy(plain_registry)
    repo = unique_repo()
    data = harness_images.seeded_bytes(f"lost-answer-{reset}", 1000)
    digest = sha256_digest(data)
    rule = proxy.drop_answer("PUT", "/blobs/uploads/", reset=reset)
    with httpx.Client(timeout=30) as client:
        started = client.post(f"{proxy.url}/v2/{repo}/blobs/uploads/")
        with pytest.raises(seen):
            client.put(f"{started.headers['location']}&digest={digest}", content=data)
        stored = client.get(f"{plain_registry.url}/v2/{repo}/blobs/{digest}")
    assert (stored.status_code, stored.content) == (200, data)
    assert rule.hits == 1 and proxy.requests[-1].status is None
