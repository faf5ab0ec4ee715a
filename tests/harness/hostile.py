"""A scriptable hostile registry on loopback, and a way to run the CLI with its peak memory measured.

``HostileRegistry`` is a threaded raw-socket HTTP/1.1 server on 127.0.0.1:0 that answers
as an honest registry from what it holds (manifests by tag and digest, blobs, tags lists,
optionally a referrers API and Basic or Bearer auth; it takes pushes too, so it can be a
target), unless a script (``on``) takes a
route over: exact status, headers and a body that may be bytes or a generator (an endless
stream stops by itself at ``MAX_STREAM_BYTES`` or ``MAX_STREAM_SECONDS``, and as soon as
the client hangs up). Every request is recorded with its method, target and headers, and
whether (and when) it was answered, so a test can check which credentials went where and
that a run ended before a stalled answer.

``run_measured`` starts ``python -m reconciler ARGS`` (forked from a small launcher, see
``_LAUNCHER``) and reaps it with ``os.wait4``: its exit code, output and peak RSS
(``ru_maxrss``, KiB on Linux).
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import os
import re
import signal
import socket
import socketserver
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from tests.harness.images import OCI_INDEX, Image
from tests.harness.threaded import ThreadedServer
from tests.helpers_cli import CliResult

MiB = 1024 * 1024
MAX_STREAM_BYTES = 320 * MiB
"""An endless body ends here at the latest: past any cap of the product, and past the memory bound."""
MAX_STREAM_SECONDS = 20.0
"""... or after this long, whichever comes first."""
CONNECTION_IDLE_SECONDS = 30.0
MAX_KEPT_BODY = 16 * MiB

Body = bytes | Callable[[], Iterable[bytes]]


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


@dataclass
class Answer:
    """One scripted answer. ``body`` is bytes, or a callable returning an iterable of chunks (sent lazily).

    ``length``: the Content-Length to announce for a generated body (default: chunked encoding,
    or, with ``chunked=False``, none at all and the connection closed at the end).
    ``stall``: seconds before the answer is sent (cut short when the server stops).
    """

    status: int = 200
    headers: dict[str, str] | list[tuple[str, str]] = field(default_factory=dict)
    body: Body = b""
    length: int | None = None
    chunked: bool = True
    stall: float = 0.0
    close: bool = False


@dataclass
class Request:
    method: str
    target: str
    headers: dict[str, str]  # names lower-cased
    connection: int
    received: float = field(default_factory=time.monotonic)
    answered: float | None = None  # when the whole answer was sent; None if it never was
    status: int | None = None
    sent_bytes: int = 0
    body: bytes = field(default=b"", repr=False)  # kept up to MAX_KEPT_BODY (pushes of test images)

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.target).query)


Script = Callable[[Request, "HostileRegistry"], "Answer | None"]

_UPLOADS = re.compile(r"^/v2/(?P<name>.+)/blobs/uploads/(?P<session>[^/]*)$")
_MANIFEST = re.compile(r"^/v2/(?P<name>.+)/manifests/(?P<ref>[^/]+)$")
_BLOB = re.compile(r"^/v2/(?P<name>.+)/blobs/(?P<digest>[^/]+)$")
_TAGS = re.compile(r"^/v2/(?P<name>.+)/tags/list$")
_REFERRERS = re.compile(r"^/v2/(?P<name>.+)/referrers/(?P<digest>[^/]+)$")


@dataclass
class _Rule:
    method: str | None
    pattern: re.Pattern[str]
    script: Script
    times: int | None


def endless(chunk: bytes, prefix: bytes = b"", limit: int = MAX_STREAM_BYTES,
            seconds: float = MAX_STREAM_SECONDS) -> Callable[[], Iterator[bytes]]:
    """A body of ``prefix`` then ``chunk`` over and over, until ``limit`` bytes or ``seconds`` have passed."""

    def generate() -> Iterator[bytes]:
        deadline = time.monotonic() + seconds
        sent = len(prefix)
        if prefix:
            yield prefix
        while sent < limit and time.monotonic() < deadline:
            yield chunk
            sent += len(chunk)

    return generate


def pieces(*parts: bytes | Callable[[], Iterable[bytes]]) -> Callable[[], Iterator[bytes]]:
    """A generated body: bytes as they are, callables expanded lazily, in order."""

    def generate() -> Iterator[bytes]:
        for part in parts:
            if isinstance(part, bytes):
                yield part
            else:
                yield from part()

    return generate


def repeated(item: Callable[[int], bytes], count: int, batch: int = 4096) -> Callable[[], Iterator[bytes]]:
    """``item(0) + item(1) + ... + item(count - 1)``, produced ``batch`` items at a time."""

    def generate() -> Iterator[bytes]:
        for start in range(0, count, batch):
            yield b"".join(item(i) for i in range(start, min(count, start + batch)))

    return generate


def body_size(body: Body) -> int:
    return len(body) if isinstance(body, bytes) else sum(len(chunk) for chunk in body())


class HostileRegistry(ThreadedServer):
    """An honest little registry unless scripted otherwise; see the module's docstring.

    ``credentials``: (user, password) required as Basic on every ``/v2/`` request;
    ``bearer_realm``: a Bearer challenge naming that realm instead (any bearer token is taken);
    ``referrers_api``: answer ``/referrers/<digest>`` from the manifests held (else 404).
    ``page_size``: at most this many tags per tags/list answer, whatever ``n`` asks (Link to the next page).
    It takes pushes too (blob uploads, whole or in PATCH chunks, and manifest PUTs), so it can be a target.
    """

    thread_name = "hostile-registry"

    def __init__(self, *, credentials: tuple[str, str] | None = None, bearer_realm: str | None = None,
                 referrers_api: bool = False, page_size: int | None = None,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.credentials = credentials
        self.bearer_realm = bearer_realm
        self.referrers_api = referrers_api
        self.page_size = page_size
        self.ssl_context = ssl_context
        self.manifests: dict[str, dict[str, tuple[str, bytes]]] = {}
        self.tags: dict[str, list[str]] = {}
        self.blobs: dict[str, bytes] = {}
        self.requests: list[Request] = []
        self._uploads: dict[str, bytearray] = {}
        self._sessions = itertools.count(1)
        self._rules: list[_Rule] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._connections = 0

    # -- what it holds -------------------------------------------------------------------

    def put_manifest(self, repo: str, raw: bytes, media_type: str, tag: str | None = None) -> str:
        digest = digest_of(raw)
        held = self.manifests.setdefault(repo, {})
        held[digest] = (media_type, raw)
        if tag is not None:
            held[tag] = (media_type, raw)
            if tag not in self.tags.setdefault(repo, []):
                self.tags[repo].append(tag)
        return digest

    def put_image(self, repo: str, tag: str | None, image: Image) -> str:
        """An image built by tests/harness/images.py: its manifests (children too) and blobs."""
        for manifest in image.manifests:
            self.put_manifest(repo, manifest.raw, manifest.media_type)
            for blob in manifest.blobs:
                self.blobs[blob.digest] = blob.data
        return self.put_manifest(repo, image.raw, image.media_type, tag)

    def put_blob(self, data: bytes) -> str:
        self.blobs[digest_of(data)] = data
        return digest_of(data)

    # -- scripts -------------------------------------------------------------------------

    def on(self, method: str | None, pattern: str, answer: Answer | Script, times: int | None = None) -> None:
        """Requests whose method is ``method`` (None: any) and whose target matches ``pattern`` (re.search)
        get ``answer`` (or what the script returns; None falls through to the honest answer)."""
        script = answer if callable(answer) else (lambda request, server, fixed=answer: fixed)
        with self._lock:
            self._rules.insert(0, _Rule(method, re.compile(pattern), script, times))

    def clear_scripts(self) -> None:
        with self._lock:
            self._rules.clear()

    def matching(self, method: str | None = None, pattern: str = "") -> list[Request]:
        with self._lock:
            return [r for r in self.requests
                    if (method is None or r.method == method) and re.search(pattern, r.target)]

    def wait_for(self, method: str | None, pattern: str, timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.matching(method, pattern):
                return True
            time.sleep(0.02)
        return False

    @property
    def scheme(self) -> str:
        return "https" if self.ssl_context else "http"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}"

    # -- serving ---------------------------------------------------------------------------

    def _bind(self) -> socketserver.BaseServer:
        owner = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                owner._serve_connection(self.request)

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True
            request_queue_size = 128

        self._stopping.clear()
        return Server(("127.0.0.1", 0), Handler)

    def _after_shutdown(self) -> None:
        self._stopping.set()

    def _serve_connection(self, sock: socket.socket) -> None:
        with self._lock:
            self._connections += 1
            number = self._connections
        sock.settimeout(CONNECTION_IDLE_SECONDS)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            if self.ssl_context is not None:
                sock = self.ssl_context.wrap_socket(sock, server_side=True)
            elif sock.recv(1, socket.MSG_PEEK) == b"\x16":  # a TLS handshake: answered as Go's HTTP server does
                sock.sendall(b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n")
                return
            reader = sock.makefile("rb")
            while not self._stopping.is_set():
                request = self._read_request(reader, number)
                if request is None:
                    return
                if not self._answer(sock, request):
                    return
        except (OSError, ValueError, ssl.SSLError):
            return  # the client left (or sent what is not HTTP): nothing more to say
        finally:
            try:
                sock.close()
            except OSError:
                pass

    def _read_request(self, reader, number: int) -> Request | None:
        line = reader.readline(65536)
        if not line or not line.strip():
            return None
        method, target, _ = line.decode("latin-1").split(" ", 2)
        headers: dict[str, str] = {}
        while True:
            header = reader.readline(1 << 20)
            if header in (b"\r\n", b"\n", b""):
                break
            name, _, value = header.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        body = bytearray()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size = int(reader.readline().split(b";")[0], 16)
                chunk = reader.read(size + 2)
                if len(body) < MAX_KEPT_BODY:
                    body += chunk[:size]
                if size == 0:
                    break
        elif headers.get("content-length", "").isdigit():
            remaining = int(headers["content-length"])
            while remaining > 0:
                got = reader.read(min(remaining, MiB))
                if not got:
                    return None
                if len(body) < MAX_KEPT_BODY:
                    body += got
                remaining -= len(got)
        request = Request(method, target, headers, number, body=bytes(body))
        with self._lock:
            self.requests.append(request)
        return request

    def _script_for(self, request: Request) -> Answer | None:
        with self._lock:
            rules = list(self._rules)
        for rule in rules:
            if (rule.method is None or rule.method == request.method) and rule.pattern.search(request.target):
                with self._lock:
                    if rule.times is not None:
                        if rule.times <= 0:
                            continue
                        rule.times -= 1
                answer = rule.script(request, self)
                if answer is not None:
                    return answer
        return None

    def _answer(self, sock: socket.socket, request: Request) -> bool:
        """Send the answer; False when the connection is to be closed."""
        answer = self._script_for(request) or self.honest(request)
        if answer.stall and self._stopping.wait(answer.stall):
            return False
        headers = list(answer.headers.items()) if isinstance(answer.headers, dict) else list(answer.headers)
        names = {name.lower() for name, _ in headers}
        body = answer.body
        head_only = request.method == "HEAD"
        generated = not isinstance(body, bytes)
        close = answer.close
        if "content-length" not in names and "transfer-encoding" not in names:
            if not generated:
                headers.append(("Content-Length", str(len(body))))
            elif answer.length is not None:
                headers.append(("Content-Length", str(answer.length)))
            elif answer.chunked:
                headers.append(("Transfer-Encoding", "chunked"))
            else:
                close = True
        chunked = generated and ("transfer-encoding", "chunked") in {(n.lower(), v.lower()) for n, v in headers}
        if close:
            headers.append(("Connection", "close"))
        head = f"HTTP/1.1 {answer.status} {_REASONS.get(answer.status, 'Whatever')}\r\n"
        head += "".join(f"{name}: {value}\r\n" for name, value in headers) + "\r\n"
        request.status = answer.status
        if not generated or head_only:  # one write: a head alone would wait for the client's delayed ACK
            sock.sendall(head.encode("latin-1") + (b"" if head_only else body))
            request.sent_bytes = 0 if head_only else len(body)
            request.answered = time.monotonic()
            return not close
        sock.sendall(head.encode("latin-1"))
        for chunk in body():
            if self._stopping.is_set():
                return False
            if chunk:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
                request.sent_bytes += len(chunk)
        if chunked:
            sock.sendall(b"0\r\n\r\n")
        request.answered = time.monotonic()
        return not close

    # -- the honest registry -----------------------------------------------------------------

    def _challenge(self, request: Request) -> Answer | None:
        authorization = request.headers.get("authorization", "")
        if self.credentials is not None and authorization != basic(*self.credentials):
            return Answer(401, {"WWW-Authenticate": 'Basic realm="hostile"', "Content-Type": "application/json"},
                          b'{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}')
        if self.bearer_realm is not None and not authorization.startswith("Bearer "):
            return Answer(401, {"WWW-Authenticate": f'Bearer realm="{self.bearer_realm}",service="hostile"',
                                "Content-Type": "application/json"},
                          b'{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}')
        return None

    def honest(self, request: Request) -> Answer:
        """What an honest registry holding this content answers (scripts may start from it)."""
        path = request.path
        if not path.startswith("/v2/"):
            return Answer(404, body=b"not found")
        refused = self._challenge(request)
        if refused is not None:
            return refused
        if path == "/v2/":
            return Answer(200, {"Content-Type": "application/json"}, b"{}")
        if request.method in ("POST", "PATCH", "PUT") and (match := _UPLOADS.match(path)):
            return self._upload(request, match["name"], match["session"])
        if request.method == "PUT" and (match := _MANIFEST.match(path)):
            media_type = request.headers.get("content-type", "")
            digest = self.put_manifest(match["name"], request.body, media_type,
                                       None if match["ref"].startswith("sha256:") else match["ref"])
            return Answer(201, {"Docker-Content-Digest": digest, "Location": f"/v2/{match['name']}/manifests/{digest}"})
        if match := _TAGS.match(path):
            return self._tags_page(request, match["name"])
        if match := _REFERRERS.match(path):
            return self._referrers(match["name"], match["digest"])
        if match := _MANIFEST.match(path):
            held = self.manifests.get(match["name"], {}).get(match["ref"])
            if held is None:
                return _unknown("MANIFEST_UNKNOWN", "manifest unknown")
            media_type, raw = held
            return Answer(200, {"Content-Type": media_type, "Docker-Content-Digest": digest_of(raw)}, raw)
        if match := _BLOB.match(path):
            data = self.blobs.get(match["digest"])
            if data is None:
                return _unknown("BLOB_UNKNOWN", "blob unknown")
            return Answer(200, {"Content-Type": "application/octet-stream", "Docker-Content-Digest": match["digest"]},
                          data)
        return Answer(405, body=b"")

    def _upload(self, request: Request, name: str, session: str) -> Answer:
        """Blob uploads as the distribution spec has them: POST opens a session, PATCH adds, PUT ?digest= ends."""
        if request.method == "POST":
            with self._lock:  # a number never given before: a finished session's may not come back
                session = str(next(self._sessions))
                self._uploads[session] = bytearray()
            return Answer(202, {"Location": f"/v2/{name}/blobs/uploads/{session}", "Range": "0-0",
                                "Docker-Upload-UUID": session})
        if session not in self._uploads:
            return _unknown("BLOB_UPLOAD_UNKNOWN", "blob upload unknown")
        self._uploads[session] += request.body
        location = {"Location": f"/v2/{name}/blobs/uploads/{session}"}
        if request.method == "PATCH":
            return Answer(202, {**location, "Range": f"0-{len(self._uploads[session]) - 1}"})
        data = bytes(self._uploads.pop(session))
        digest = request.query.get("digest", [""])[0]
        if digest != digest_of(data):
            return Answer(400, {"Content-Type": "application/json"},
                          b'{"errors":[{"code":"DIGEST_INVALID","message":"digest does not match"}]}')
        self.blobs[digest] = data
        return Answer(201, {"Location": f"/v2/{name}/blobs/{digest}", "Docker-Content-Digest": digest})

    def _tags_page(self, request: Request, name: str) -> Answer:
        if name not in self.tags:
            return _unknown("NAME_UNKNOWN", "repository name not known to registry")
        tags = sorted(self.tags[name])
        last = request.query.get("last", [None])[0]
        if last is not None:
            tags = [tag for tag in tags if tag > last]
        size = self.page_size or len(tags)
        page, rest = tags[:size], tags[size:]
        headers = {"Content-Type": "application/json"}
        if rest:
            headers["Link"] = f'</v2/{name}/tags/list?n={size}&last={page[-1]}>; rel="next"'
        return Answer(200, headers, json.dumps({"name": name, "tags": page}).encode())

    def _referrers(self, name: str, subject: str) -> Answer:
        if not self.referrers_api:
            return _unknown("NAME_UNKNOWN", "no referrers API here")
        entries = []
        for ref, (media_type, raw) in self.manifests.get(name, {}).items():
            if not ref.startswith("sha256:"):
                continue
            try:
                document = json.loads(raw)
            except ValueError:
                continue
            if isinstance(document, dict) and (document.get("subject") or {}).get("digest") == subject:
                entry = {"mediaType": media_type, "digest": ref, "size": len(raw)}
                if document.get("artifactType"):
                    entry["artifactType"] = document["artifactType"]
                entries.append(entry)
        return Answer(200, {"Content-Type": OCI_INDEX},
                      json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}).encode())


def _unknown(code: str, message: str) -> Answer:
    return Answer(404, {"Content-Type": "application/json"},
                  json.dumps({"errors": [{"code": code, "message": message}]}).encode())


_REASONS = {200: "OK", 201: "Created", 202: "Accepted", 307: "Temporary Redirect", 401: "Unauthorized",
            404: "Not Found", 405: "Method Not Allowed", 429: "Too Many Requests",
            500: "Internal Server Error", 503: "Service Unavailable"}


# -- the measured child -----------------------------------------------------------------------------

PRODUCT_ROOT = Path(os.environ.get("HOSTILE_PRODUCT_ROOT") or Path(__file__).resolve().parents[2])
"""Where ``reconciler`` is imported from: this checkout, or (to see a case fail on an older commit)
the tree HOSTILE_PRODUCT_ROOT names."""


@dataclass(frozen=True)
class Measured(CliResult):
    """A CLI run, and the child's peak resident memory."""

    peak_rss_kib: int = 0

    @property
    def peak_rss_mib(self) -> float:
        return self.peak_rss_kib / 1024

    def __str__(self) -> str:
        return f"peak RSS {self.peak_rss_mib:.1f} MiB; {super().__str__()}"


_LAUNCHER = """
import os, signal, sys
report = os.fdopen(int(sys.argv[1]), "w", buffering=1)
pid = os.fork()
if pid == 0:
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # as a terminal's foreground job has it
    os.execv(sys.argv[2], sys.argv[2:])
report.write(f"{pid}\\n")
_, status, usage = os.wait4(pid, 0)
report.write(f"{os.waitstatus_to_exitcode(status)} {usage.ru_maxrss}\\n")
"""
"""Forks the CLI from a small, fresh process and reaps it with ``os.wait4``.

Linux records, at exec, the peak RSS of the memory the process had before it (for a
``subprocess`` child: a copy of pytest's, or pytest's own under vfork), so a child started
straight from pytest would report pytest's peak, not the CLI's. From this launcher (a
bare interpreter of a few MiB) the child's ``ru_maxrss`` is the CLI's own."""


@dataclass
class Launched:
    """The running CLI: ``pid`` is the CLI's own process (signal it there)."""

    pid: int


def run_measured(workdir: Path, *args: str, env: dict[str, str], timeout: float = 90.0,
                 on_start: Callable[[Launched], None] | None = None) -> Measured:
    """``python -m reconciler ARGS`` in ``workdir`` with exactly ``env`` (plus PYTHONPATH to the product),
    reaped with ``os.wait4`` for its peak RSS. ``on_start(launched)`` runs while it does (e.g. to signal it);
    past ``timeout`` it is killed (and the result says so: exit -9)."""
    env = {**env, "PYTHONPATH": str(PRODUCT_ROOT)}
    started = time.monotonic()
    read_end, write_end = os.pipe()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, os.fdopen(read_end) as reports:
        try:
            launcher = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", _LAUNCHER, str(write_end), sys.executable, "-m", "reconciler",
                 *args], cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                pass_fds=(write_end,))
        finally:
            os.close(write_end)
        with launcher:
            pid = int(reports.readline())
            killer = threading.Timer(timeout, _kill, (pid,))
            killer.start()
            try:
                if on_start is not None:
                    try:
                        on_start(Launched(pid))
                    except BaseException:
                        _kill(pid)  # not the run the test expected: no waiting for it
                        raise
                code, peak = map(int, reports.readline().split())
            finally:
                killer.cancel()
        out.seek(0)
        err.seek(0)
        return Measured(tuple(args), code, out.read().decode(errors="replace"), err.read().decode(errors="replace"),
                        time.monotonic() - started, peak)
def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
