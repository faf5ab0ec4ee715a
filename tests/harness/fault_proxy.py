"""An HTTP/1.1 reverse proxy that injects faults in front of a real registry.

Threaded (``http.server``) on a loopback address; every request is
forwarded on a fresh upstream connection with its body streamed both ways
(Content-Length or chunked), the ``Host`` header passed through unchanged
(so the registry's ``Location`` headers point back at the proxy) and
hop-by-hop headers dropped.  Rules, tried in insertion order, match
method + path regex (``re.search`` on path+query), and a request header
regex where given, and apply to the next ``times`` matching requests
(``None`` = forever).  A rule that hangs up (drop, drop_answer, truncate)
ends the connection with a FIN, or with a TCP RST when ``reset`` is set;
cut_request resets both connections, the client's and the registry's, after
forwarding part of the request body (the registry keeps what it got).

Three modes change what the registry looks like rather than inject network
faults; all are turned off by ``clear_rules()``/``reset()``:

* ``overload(max_in_flight)`` sheds load: a request arriving while
  ``max_in_flight`` others are in flight (headers read, answer not yet fully
  written back) is answered at once with 429 (or the status given) and not
  forwarded.  Sheds come before rules, so a shed request never uses one up.
* ``pull_limit(limit, remaining)`` is Docker Hub's pull rate limit: forwarded
  manifest HEADs and GETs carry the ``ratelimit-*`` headers, a manifest GET the
  registry answers 200 costs a pull, and once none remain a manifest GET is
  answered 429 in place of the registry (after any delay rule, and like an
  upstream error untouched by drop_answer/truncate rules).
* ``referrers_api(page_size=None)`` makes the registry an OCI 1.1 one: the proxy
  itself answers ``GET /v2/<name>/referrers/<digest>[?artifactType=T]`` (and
  nothing else), recorded as action ``referrers``, from what the registry holds
  now: every manifest PUT through the proxy (remembered whether the mode is on
  or not, and never forgotten) and every tagged one of the repository, those
  whose ``subject`` is the digest, sorted by digest, ``page_size`` a page with
  a ``Link`` to the next (``?last=<digest>``).  Sub-requests carry the client's
  ``Authorization``; an answer other than 200 or 404 (a 401 challenge) is
  passed back as it is.  Rules apply to these answers as to forwarded ones.

Whatever the modes, the proxy counts requests in flight: ``in_flight_peak``,
``in_flight_samples`` (the count, newcomer included, at each arrival), ``shed``
and ``pulls_refused`` are statistics that ``clear()`` restarts, like the
recorded requests.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import ssl
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable
from urllib.parse import parse_qs, urlencode, urlsplit

from .images import OCI_INDEX, sha256_digest
from .rawhttp import ALL_MANIFEST_TYPES
from .threaded import ThreadedServer

HOP_BY_HOP = {
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
    "te", "trailer", "trailers", "transfer-encoding", "upgrade", "proxy-connection",
}
CHUNK = 64 * 1024
_LINGER_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST
MANIFEST_PATH = re.compile(r"^/v2/(?P<name>.+)/manifests/[^/]+$")
REFERRERS_PATH = re.compile(r"^/v2/(?P<name>.+)/referrers/(?P<digest>[^/]+)$")
DIGEST = re.compile(r"^(?:sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$")  # the registered algorithms
DIGEST_INVALID = b'{"errors":[{"code":"DIGEST_INVALID","message":"invalid digest"}]}'
TOO_MANY_IN_FLIGHT = b'{"errors":[{"code":"TOOMANYREQUESTS","message":"too many requests in flight"}]}'
PULL_LIMIT_REACHED = (b'{"errors":[{"code":"TOOMANYREQUESTS","message":"You have reached your pull rate '
                      b'limit. You may increase the limit by authenticating and upgrading: '
                      b'https://www.docker.com/increase-rate-limits"}]}')


def _resets_on_close(sock: socket.socket) -> bool:
    try:
        return sock.getsockopt(socket.SOL_SOCKET, socket.SO_LINGER, len(_LINGER_RESET)) == _LINGER_RESET
    except OSError:
        return False


class Headers:
    """Case-insensitive, order-preserving view of recorded headers."""

    def __init__(self, items: list[tuple[str, str]]):
        self.items_ = list(items)

    def get(self, name: str, default: str | None = None) -> str | None:
        name = name.lower()
        for k, v in self.items_:
            if k.lower() == name:
                return v
        return default

    def get_all(self, name: str) -> list[str]:
        name = name.lower()
        return [v for k, v in self.items_ if k.lower() == name]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __getitem__(self, name: str) -> str:
        v = self.get(name)
        if v is None:
            raise KeyError(name)
        return v

    def items(self) -> list[tuple[str, str]]:
        return list(self.items_)

    def __repr__(self) -> str:
        return f"Headers({self.items_!r})"


@dataclass
class Rule:
    """A fault rule; ``action`` is respond | drop | drop_answer | redirect | delay | truncate
    | cut_request | strip (forward without the request headers named in ``strip``)."""

    method: str | None
    path: str
    action: str
    times: int | None = 1
    status: int = 503
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    location: str | Callable[[str], str] | None = None
    seconds: float = 0.0
    after_bytes: int = 0
    read_body: bool = True
    reset: bool = False
    hits: int = 0
    name: str = ""
    header: tuple[str, str] | None = None  # (name, regex): matches only requests whose header matches
    strip: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self._re = re.compile(self.path)

    def matches(self, method: str, path: str, headers: "Headers | None" = None) -> bool:
        if self.times is not None and self.times <= 0:
            return False
        if self.method not in (None, "*") and self.method.upper() != method.upper():
            return False
        if self.header is not None:
            value = headers.get(self.header[0]) if headers is not None else None
            if value is None or re.search(self.header[1], value) is None:
                return False
        return self._re.search(path) is not None

    @property
    def exhausted(self) -> bool:
        return self.times is not None and self.times <= 0


@dataclass
class Overload:
    max_in_flight: int
    status: int
    retry_after: str | None


@dataclass
class PullLimit:
    """Docker Hub's pull allowance; ``remaining`` changes under the proxy's lock."""

    limit: int
    remaining: int
    window: int
    retry_after: str | None

    def headers(self, source: str) -> dict[str, str]:
        """Docker Hub's spelling: lower-case names, ``N;w=SECONDS``."""
        return {"ratelimit-limit": f"{self.limit};w={self.window}",
                "ratelimit-remaining": f"{self.remaining};w={self.window}",
                "docker-ratelimit-source": source}


@dataclass
class ReferrersApi:
    page_size: int | None  # None: every descriptor in one answer


@dataclass
class UpstreamAnswer:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


class _Relay(Exception):
    """An upstream answer the referrers API passes back as it is (a 401 challenge, a 500)."""

    def __init__(self, answer: UpstreamAnswer) -> None:
        super().__init__(answer.status)
        self.answer = answer


def _referrer_descriptor(manifest: dict, raw: bytes) -> dict:
    """The spec's descriptor: ``artifactType`` falls back to the config's media type."""
    descriptor = {"mediaType": manifest.get("mediaType"), "digest": sha256_digest(raw), "size": len(raw)}
    artifact_type = manifest.get("artifactType") or manifest.get("config", {}).get("mediaType")
    if artifact_type:
        descriptor["artifactType"] = artifact_type
    if manifest.get("annotations"):
        descriptor["annotations"] = manifest["annotations"]
    return descriptor


@dataclass
class RecordedRequest:
    method: str
    path: str                  # path + query as received
    headers: Headers
    action: str = "pass"       # pass | respond | drop | drop_answer | redirect | delay | truncate
                               # | shed (overload) | refuse_pull (pull limit)
                               # | referrers (answered by the referrers API)
    rule: Rule | None = field(default=None, repr=False)
    status: int | None = None  # status sent to the client (None if dropped)
    request_bytes: int = 0     # request body bytes received
    response_bytes: int = 0    # response body bytes sent
    time: float = field(default_factory=time.time)

    @property
    def url_path(self) -> str:
        return self.path.split("?", 1)[0]


class FaultProxy(ThreadedServer):
    """``FaultProxy(upstream_url, host="127.0.0.1").start()``.

    ``upstream_url``: "http(s)://127.0.0.1:PORT" (a Registry's ``url``);
    ``upstream_ca_file`` to trust an HTTPS upstream.
    """

    def __init__(self, upstream_url: str, *, host: str = "127.0.0.1", port: int = 0,
                 upstream_ca_file: str | None = None, name: str = "proxy",
                 timeout: float = 120.0) -> None:
        u = urlsplit(upstream_url)
        self.upstream_url = upstream_url.rstrip("/")
        self.upstream_scheme = u.scheme
        self.upstream_host = u.hostname or "127.0.0.1"
        self.upstream_port = u.port or (443 if u.scheme == "https" else 80)
        self.upstream_ssl = (ssl.create_default_context(cafile=str(upstream_ca_file))
                             if u.scheme == "https" and upstream_ca_file
                             else ssl.create_default_context() if u.scheme == "https" else None)
        self.bind_host = host
        self.bind_port = port
        self.name = name
        self.timeout = timeout
        self.rules: list[Rule] = []
        self.requests: list[RecordedRequest] = []
        self.thread_name = f"fault-proxy-{name}"
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._overload: Overload | None = None
        self._pull_limit: PullLimit | None = None
        self._referrers_api: ReferrersApi | None = None
        self._pushed_manifests: dict[str, set[str]] = {}  # repository -> digests
        self._in_flight = 0
        self._in_flight_peak = 0
        self._in_flight_samples: list[int] = []
        self._shed = 0
        self._pulls_refused = 0

    # ---------------------------------------------------------------- rules
    def add_rule(self, rule: Rule) -> Rule:
        with self._lock:
            self.rules.append(rule)
        return rule

    def fail(self, method: str | None, path: str, status: int = 503, *, times: int | None = 1,
             headers: dict[str, str] | None = None, body: bytes | str = b"") -> Rule:
        """Answer ``status`` (with headers/body) instead of forwarding."""
        if isinstance(body, str):
            body = body.encode()
        return self.add_rule(Rule(method, path, "respond", times, status, dict(headers or {}), body))

    def drop(self, method: str | None, path: str, *, times: int | None = 1,
             read_body: bool = True, reset: bool = False) -> Rule:
        """Close the connection without answering (after reading the request
        body if ``read_body``, else immediately)."""
        return self.add_rule(Rule(method, path, "drop", times, read_body=read_body, reset=reset))

    def drop_answer(self, method: str | None, path: str, *, times: int | None = 1,
                    reset: bool = False) -> Rule:
        """Forward the request, so the registry carries it out, then close the
        connection without passing its answer on (the answer is lost)."""
        return self.add_rule(Rule(method, path, "drop_answer", times, reset=reset))

    def redirect(self, method: str | None, path: str, to: str | Callable[[str], str], *,
                 status: int = 307, times: int | None = 1,
                 headers: dict[str, str] | None = None) -> Rule:
        """Answer a redirect.  ``to`` is a base URL (the request's path+query is
        appended) or a function ``path_with_query -> absolute URL``."""
        return self.add_rule(Rule(method, path, "redirect", times, status, dict(headers or {}),
                                  location=to))

    def delay(self, method: str | None, path: str, seconds: float, *,
              times: int | None = 1) -> Rule:
        """Sleep, then forward normally."""
        return self.add_rule(Rule(method, path, "delay", times, seconds=seconds))

    def truncate(self, method: str | None, path: str, after_bytes: int, *,
                 times: int | None = 1, reset: bool = False) -> Rule:
        """Forward, but cut the response body after ``after_bytes`` and close."""
        return self.add_rule(Rule(method, path, "truncate", times, after_bytes=after_bytes, reset=reset))

    def cut_request(self, method: str | None, path: str, after_bytes: int, *,
                    times: int | None = 1, header: tuple[str, str] | None = None) -> Rule:
        """Forward the request's head and the first ``after_bytes`` of its body,
        then reset both connections: the registry keeps a partial upload, the
        client gets no answer.  ``header``: (name, regex) the request must carry."""
        return self.add_rule(Rule(method, path, "cut_request", times, after_bytes=after_bytes,
                                  reset=True, header=header))

    def strip_headers(self, method: str | None, path: str, *names: str,
                      times: int | None = 1) -> Rule:
        """Forward without the request headers ``names`` (a registry that
        ignores ``Range`` answers the whole body, 200)."""
        return self.add_rule(Rule(method, path, "strip", times, strip=tuple(n.lower() for n in names)))

    def overload(self, max_in_flight: int | None, status: int = 429,
                 retry_after: str | None = None) -> None:
        """Shed every request that arrives while ``max_in_flight`` are in
        flight, with ``status`` and a TOOMANYREQUESTS body; None turns it off."""
        with self._lock:
            self._overload = (None if max_in_flight is None
                              else Overload(max_in_flight, status, retry_after))

    def pull_limit(self, limit: int | None, remaining: int | None = None, window: int = 21600,
                   retry_after: str | None = None) -> None:
        """Start a pull-limit window with ``remaining`` pulls left (default
        ``limit``); None turns it off."""
        with self._lock:
            self._pull_limit = (None if limit is None else PullLimit(
                limit, limit if remaining is None else remaining, window, retry_after))

    def referrers_api(self, enabled: bool = True, page_size: int | None = None) -> None:
        """Answer ``GET /v2/<name>/referrers/<digest>`` as an OCI 1.1 registry,
        ``page_size`` descriptors an answer (None: all); False turns it off."""
        with self._lock:
            self._referrers_api = ReferrersApi(page_size) if enabled else None

    def clear_rules(self) -> None:
        """Drop every rule and turn overload, pull limit and referrers API off."""
        with self._lock:
            self.rules.clear()
            self._overload = None
            self._pull_limit = None
            self._referrers_api = None

    def clear(self) -> None:
        """Forget recorded requests and restart the statistics (rules and modes
        are kept; requests still in flight stay counted)."""
        with self._lock:
            self.requests.clear()
            self._in_flight_samples.clear()
            self._in_flight_peak = self._in_flight
            self._shed = 0
            self._pulls_refused = 0

    def reset(self) -> None:
        self.clear_rules()
        self.clear()

    def _match(self, method: str, path: str, headers: Headers) -> Rule | None:
        with self._lock:
            for r in self.rules:
                if r.matches(method, path, headers):
                    if r.times is not None:
                        r.times -= 1
                    r.hits += 1
                    return r
        return None

    # ------------------------------------------------------------- queries
    def requests_matching(self, method: str | None = None, path: str | None = None
                          ) -> list[RecordedRequest]:
        rx = re.compile(path) if path else None
        with self._lock:
            reqs = list(self.requests)
        return [r for r in reqs
                if (method is None or r.method.upper() == method.upper())
                and (rx is None or rx.search(r.path))]

    def count(self, method: str | None = None, path: str | None = None) -> int:
        return len(self.requests_matching(method, path))

    @property
    def in_flight(self) -> int:
        """Requests in flight now; a client may see its answer a moment before
        the count drops, so wait for this before a count-sensitive request."""
        with self._lock:
            return self._in_flight

    @property
    def in_flight_peak(self) -> int:
        with self._lock:
            return self._in_flight_peak

    @property
    def in_flight_samples(self) -> list[int]:
        """How many requests were in flight as each arrived, itself included
        (a shed one shows ``max_in_flight + 1``), in arrival order."""
        with self._lock:
            return list(self._in_flight_samples)

    @property
    def shed(self) -> int:
        with self._lock:
            return self._shed

    @property
    def pulls_remaining(self) -> int | None:
        with self._lock:
            return None if self._pull_limit is None else self._pull_limit.remaining

    @property
    def pulls_refused(self) -> int:
        with self._lock:
            return self._pulls_refused

    # ------------------------------------------------------ load and limits
    def _arrive(self, rec: RecordedRequest) -> Overload | None:
        """Record ``rec`` and count it in flight, or return the overload that sheds it."""
        with self._lock:
            self.requests.append(rec)
            self._in_flight_samples.append(self._in_flight + 1)
            if self._overload is not None and self._in_flight >= self._overload.max_in_flight:
                self._shed += 1
                return self._overload
            self._in_flight += 1
            self._in_flight_peak = max(self._in_flight_peak, self._in_flight)
            return None

    def _depart(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def _pull_limit_for(self, rec: RecordedRequest) -> PullLimit | None:
        if rec.method not in ("GET", "HEAD") or not MANIFEST_PATH.search(rec.url_path):
            return None
        with self._lock:
            return self._pull_limit

    def _take_pull(self, limit: PullLimit) -> bool:
        """Reserve a pull before forwarding, so concurrent GETs never overdraw."""
        with self._lock:
            if limit.remaining <= 0:
                self._pulls_refused += 1
                return False
            limit.remaining -= 1
            return True

    def _give_back_pull(self, limit: PullLimit) -> None:
        with self._lock:
            limit.remaining += 1

    def _pull_headers(self, limit: PullLimit, source: str) -> dict[str, str]:
        with self._lock:
            return limit.headers(source)

    # ------------------------------------------------------ referrers API
    def _referrers_query(self, rec: RecordedRequest) -> tuple[ReferrersApi, re.Match] | None:
        """The mode and the path's name and digest, when the proxy answers ``rec`` itself."""
        found = REFERRERS_PATH.search(rec.url_path) if rec.method == "GET" else None
        with self._lock:
            api = self._referrers_api
        return None if api is None or found is None else (api, found)

    def _remember_manifest(self, url_path: str, digest: str | None) -> None:
        pushed = MANIFEST_PATH.search(url_path)
        if pushed is None or digest is None:
            return
        with self._lock:
            self._pushed_manifests.setdefault(pushed["name"], set()).add(digest)

    def _connect(self) -> http.client.HTTPConnection:
        if self.upstream_ssl is not None:
            return http.client.HTTPSConnection(self.upstream_host, self.upstream_port,
                                               timeout=self.timeout, context=self.upstream_ssl)
        return http.client.HTTPConnection(self.upstream_host, self.upstream_port, timeout=self.timeout)

    def _upstream_get(self, path: str, headers: dict[str, str]) -> UpstreamAnswer | None:
        """The registry's 200 answer, None for a 404; any other is relayed."""
        up = self._connect()
        try:
            up.request("GET", path, headers=headers)
            resp = up.getresponse()
            answer = UpstreamAnswer(resp.status, resp.getheaders(), resp.read())
        finally:
            up.close()
        if answer.status == 404:
            return None
        if answer.status != 200:
            raise _Relay(answer)
        return answer

    def _referrers(self, name: str, subject: str, authorization: str | None) -> list[dict]:
        """Descriptors, by digest, of the manifests in ``name`` whose subject is
        ``subject``: those pushed through the proxy and the tagged ones, as the
        registry holds them now (a deleted one is gone)."""
        headers = {"Accept": ALL_MANIFEST_TYPES}
        if authorization is not None:
            headers["Authorization"] = authorization
        tags = self._upstream_get(f"/v2/{name}/tags/list", headers)  # a 404: no tag yet
        references = set() if tags is None else set(json.loads(tags.body).get("tags") or ())
        with self._lock:
            references |= self._pushed_manifests.get(name, set())
        found: dict[str, dict] = {}
        for reference in sorted(references):
            stored = self._upstream_get(f"/v2/{name}/manifests/{reference}", headers)
            if stored is None:
                continue
            manifest = json.loads(stored.body)
            if (manifest.get("subject") or {}).get("digest") == subject:
                descriptor = _referrer_descriptor(manifest, stored.body)
                found[descriptor["digest"]] = descriptor
        return [found[digest] for digest in sorted(found)]

    # ----------------------------------------------------------- lifecycle
    def _bind(self) -> ThreadingHTTPServer:
        proxy = self

        class Handler(_ProxyHandler):
            pass

        Handler.proxy = proxy
        Handler.timeout = self.timeout

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            allow_reuse_address = True
            request_queue_size = 128

            def get_request(self):
                sock, addr = super().get_request()
                with proxy._lock:
                    proxy._conns.add(sock)
                return sock, addr

            def shutdown_request(self, request):
                with proxy._lock:
                    proxy._conns.discard(request)
                if _resets_on_close(request):
                    request.close()  # no FIN first: the client sees the RST
                else:
                    super().shutdown_request(request)

        return Server((self.bind_host, self.bind_port), Handler)

    def _after_shutdown(self) -> None:
        """Handlers blocked on a client's socket end when it shuts down."""
        with self._lock:
            conns = list(self._conns)
            self._conns.clear()
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _ClientGone(Exception):
    pass


class _ProxyHandler(BaseHTTPRequestHandler):
    proxy: FaultProxy
    protocol_version = "HTTP/1.1"
    server_version = "harness-fault-proxy"

    def log_message(self, format: str, *args) -> None:
        pass

    # every method goes through the same path
    def __getattr__(self, name: str):
        if name.startswith("do_"):
            return self._proxy
        raise AttributeError(name)

    # ------------------------------------------------------------ request body
    def _request_body(self):
        """Yield the request body in chunks (decoding chunked encoding)."""
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            while True:
                line = self.rfile.readline(65537)
                if not line:
                    raise _ClientGone()
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while True:  # trailers
                        t = self.rfile.readline(65537)
                        if t in (b"\r\n", b"\n", b""):
                            return
                while size:
                    data = self.rfile.read(min(size, CHUNK))
                    if not data:
                        raise _ClientGone()
                    size -= len(data)
                    yield data
                self.rfile.readline(3)
        else:
            remaining = int(self.headers.get("Content-Length") or 0)
            while remaining > 0:
                data = self.rfile.read(min(remaining, CHUNK))
                if not data:
                    raise _ClientGone()
                remaining -= len(data)
                yield data

    def _drain(self, rec: RecordedRequest) -> None:
        for data in self._request_body():
            rec.request_bytes += len(data)

    def _refuse(self, rec: RecordedRequest, action: str, status: int, headers: dict[str, str],
                retry_after: str | None, body: bytes) -> None:
        """Answer a JSON error in the registry's place, keeping the connection usable."""
        rec.action = action
        self._drain(rec)
        headers = {**headers, "Content-Type": "application/json"}
        if retry_after is not None:
            headers["Retry-After"] = retry_after
        self._reply(rec, status, headers, body)

    def _hang_up(self, reset: bool) -> None:
        """End the connection: FIN now, or RST when the server closes the socket."""
        self.close_connection = True
        if reset:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
            return
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _cut_both(self, up: http.client.HTTPConnection) -> None:
        """Reset the registry's connection mid-body, then the client's."""
        if up.sock is not None:
            up.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
        up.close()
        self._hang_up(reset=True)

    def _has_body(self) -> bool:
        return ("chunked" in (self.headers.get("Transfer-Encoding") or "").lower()
                or int(self.headers.get("Content-Length") or 0) > 0)

    # ----------------------------------------------------------------- reply
    def _reply(self, rec: RecordedRequest, status: int, headers: dict[str, str], body: bytes,
               cut: Rule | None = None) -> None:
        """Answer ``body`` whole, or with a truncate rule ``cut`` only its first bytes, then hang up."""
        if cut is not None:
            self.close_connection = True
            body_sent = body[:cut.after_bytes]
        else:
            body_sent = body
        self.send_response_only(status)
        names = {k.lower() for k in headers}
        for k, v in headers.items():
            self.send_header(k, v)
        if "content-length" not in names:
            self.send_header("Content-Length", str(len(body)))
        if "content-type" not in names and body:
            self.send_header("Content-Type", "application/json")
        if self.close_connection:
            self.send_header("Connection", "close")
        # Recorded before the answer leaves: a client that has it may look at the record at once.
        rec.status = status
        rec.response_bytes = 0 if self.command == "HEAD" else len(body_sent)
        self.end_headers()
        if self.command != "HEAD" and body_sent:
            self.wfile.write(body_sent)
        self.wfile.flush()
        if cut is not None:
            self._hang_up(cut.reset)

    def _upstream_failed(self, rec: RecordedRequest, error: Exception) -> None:
        self.close_connection = True
        self._reply(rec, 502, {"Content-Type": "text/plain"},
                    f"fault proxy: upstream error {error!r}".encode())

    def _proxy(self) -> None:
        proxy = self.proxy
        rec = RecordedRequest(self.command, self.path, Headers(list(self.headers.items())))
        conn_hdr = (self.headers.get("Connection") or "").lower()
        if "close" in conn_hdr or self.request_version != "HTTP/1.1":
            self.close_connection = True
        shed_by = proxy._arrive(rec)
        try:
            if shed_by is not None:
                self._refuse(rec, "shed", shed_by.status, {}, shed_by.retry_after, TOO_MANY_IN_FLIGHT)
            else:
                self._serve(rec)
        except (_ClientGone, ConnectionError, socket.timeout, BrokenPipeError):
            self.close_connection = True
        finally:
            if shed_by is None:
                proxy._depart()

    def _serve(self, rec: RecordedRequest) -> None:
        rule = self.proxy._match(self.command, self.path, Headers(list(self.headers.items())))
        if rule is not None:
            rec.rule = rule
            rec.action = rule.action
            if rule.action == "drop":
                if rule.read_body:
                    self._drain(rec)
                self._hang_up(rule.reset)
                return
            if rule.action == "respond":
                self._drain(rec)
                self._reply(rec, rule.status, rule.headers, rule.body)
                return
            if rule.action == "redirect":
                self._drain(rec)
                loc = rule.location
                target = loc(self.path) if callable(loc) else str(loc).rstrip("/") + self.path
                headers = {"Location": target, **rule.headers}
                self._reply(rec, rule.status, headers, b"")
                return
            if rule.action == "delay":
                time.sleep(rule.seconds)
        referrers = self.proxy._referrers_query(rec)
        if referrers is not None:
            self._answer_referrers(rec, rule, *referrers)
            return
        pull_limit = self.proxy._pull_limit_for(rec)
        if pull_limit is not None and self.command == "GET" and not self.proxy._take_pull(pull_limit):
            headers = self.proxy._pull_headers(pull_limit, self.client_address[0])
            self._refuse(rec, "refuse_pull", 429, headers, pull_limit.retry_after, PULL_LIMIT_REACHED)
            return
        self._forward(rec, rule, pull_limit)

    def _answer_referrers(self, rec: RecordedRequest, rule: Rule | None, api: ReferrersApi,
                          path: re.Match) -> None:
        """One page of the referrers of the path's digest, as the OCI 1.1 spec
        says; a drop_answer or truncate rule still applies, and is what is recorded."""
        if rule is None or rule.action == "delay":
            rec.action = "referrers"
        self._drain(rec)
        if DIGEST.search(path["digest"]) is None:
            self._reply(rec, 400, {}, DIGEST_INVALID)
            return
        query = parse_qs(urlsplit(self.path).query)
        artifact_type = query.get("artifactType", [None])[0]
        last = query.get("last", [""])[0]
        try:
            descriptors = self.proxy._referrers(path["name"], path["digest"],
                                                self.headers.get("Authorization"))
        except _Relay as relay:
            headers = {k: v for k, v in relay.answer.headers if k.lower() not in HOP_BY_HOP}
            self._reply(rec, relay.answer.status, headers, relay.answer.body)
            return
        except (OSError, http.client.HTTPException) as e:
            self._upstream_failed(rec, e)
            return
        if rule is not None and rule.action == "drop_answer":
            self._hang_up(rule.reset)
            return
        headers = {"Content-Type": OCI_INDEX}
        if artifact_type is not None:
            descriptors = [d for d in descriptors if d.get("artifactType") == artifact_type]
            headers["OCI-Filters-Applied"] = "artifactType"
        descriptors = [d for d in descriptors if d["digest"] > last]
        if api.page_size is not None and len(descriptors) > api.page_size:
            descriptors = descriptors[:api.page_size]
            kept = {} if artifact_type is None else {"artifactType": artifact_type}
            next_page = urlencode({**kept, "last": descriptors[-1]["digest"]})
            headers["Link"] = f'<{rec.url_path}?{next_page}>; rel="next"'
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": descriptors}
        cut = rule if rule is not None and rule.action == "truncate" else None
        self._reply(rec, 200, headers, json.dumps(index).encode(), cut)

    def _forward(self, rec: RecordedRequest, rule: Rule | None, pull_limit: PullLimit | None) -> None:
        """Pass the request on; ``pull_limit``'s headers go on the answer.  A
        manifest GET comes with its pull reserved, kept only if the registry
        answers 200."""
        proxy = self.proxy
        truncate = rule.after_bytes if rule and rule.action == "truncate" else None
        cut = rule.after_bytes if rule and rule.action == "cut_request" else None
        strip = rule.strip if rule and rule.action == "strip" else ()
        reserved = pull_limit is not None and self.command == "GET"
        up = proxy._connect()
        try:
            try:
                up.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                for k, v in self.headers.items():
                    if k.lower() in HOP_BY_HOP or k.lower() in strip:
                        continue
                    up.putheader(k, v)
                chunked = "chunked" in (self.headers.get("Transfer-Encoding") or "").lower()
                if chunked:
                    up.putheader("Transfer-Encoding", "chunked")
                up.putheader("Connection", "close")
                up.endheaders()
                for data in self._request_body():
                    if cut is not None and rec.request_bytes + len(data) >= cut:
                        data = data[:cut - rec.request_bytes]
                    rec.request_bytes += len(data)
                    if chunked and data:
                        up.send(b"%x\r\n%s\r\n" % (len(data), data))
                    elif data:
                        up.send(data)
                    if cut is not None and rec.request_bytes >= cut:
                        self._cut_both(up)
                        return
                if chunked:
                    up.send(b"0\r\n\r\n")
                resp = up.getresponse()
            except _ClientGone:
                raise
            except (OSError, http.client.HTTPException) as e:
                self._upstream_failed(rec, e)
                return
            if self.command == "PUT" and resp.status == 201:
                proxy._remember_manifest(rec.url_path, resp.getheader("Docker-Content-Digest"))
            if reserved and resp.status != 200:
                proxy._give_back_pull(pull_limit)
            reserved = False
            if rule is not None and rule.action == "drop_answer":
                self._hang_up(rule.reset)
                return

            added = {} if pull_limit is None else proxy._pull_headers(pull_limit, self.client_address[0])
            self.send_response_only(resp.status, resp.reason)
            length = resp.getheader("Content-Length")
            no_body = self.command == "HEAD" or resp.status in (204, 304) or 100 <= resp.status < 200
            for k, v in resp.getheaders():
                if k.lower() in HOP_BY_HOP or k.lower() in added:
                    continue
                self.send_header(k, v)
            for k, v in added.items():
                self.send_header(k, v)
            rechunk = not no_body and length is None
            if rechunk:
                self.send_header("Transfer-Encoding", "chunked")
            if truncate is not None:
                self.close_connection = True
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            rec.status = resp.status
            if no_body:
                self.wfile.flush()
                return
            sent = 0
            while True:
                data = resp.read1(CHUNK) if hasattr(resp, "read1") else resp.read(CHUNK)
                if not data:
                    break
                if truncate is not None and sent + len(data) >= truncate:
                    data = data[: max(0, truncate - sent)]
                    if rechunk and data:
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                    elif data:
                        self.wfile.write(data)
                    sent += len(data)
                    rec.response_bytes = sent
                    self.wfile.flush()
                    self._hang_up(rule.reset)
                    return
                if rechunk:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                else:
                    self.wfile.write(data)
                sent += len(data)
            if rechunk:
                self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
            rec.response_bytes = sent
        finally:
            if reserved:  # the registry never answered
                proxy._give_back_pull(pull_limit)
            up.close()
