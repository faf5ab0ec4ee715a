"""An HTTP forward proxy on loopback, for testing HTTP_PROXY / HTTPS_PROXY.

It answers ``CONNECT host:port`` with a byte tunnel and forwards an absolute-form
request (``GET http://host:port/… HTTP/1.1``) by piping the connection to that host.
``hosts`` maps names to loopback addresses: names nobody else can resolve, so a
client that reaches a registry by such a name must have come through here. With
``credentials`` it demands Basic Proxy-Authorization (407 otherwise).
"""

from __future__ import annotations

import base64
import socket
import socketserver
import threading
from dataclasses import dataclass

from .threaded import ThreadedServer


@dataclass(frozen=True)
class ProxiedConnection:
    method: str  # CONNECT, or the method of the first absolute-form request
    target: str  # host:port for CONNECT, the absolute URL otherwise
    authorization: str | None


class ForwardProxy(ThreadedServer):
    thread_name = "forward-proxy"

    def __init__(self, hosts: dict[str, str], credentials: tuple[str, str] | None = None) -> None:
        self.hosts = hosts
        self.expected_authorization = (
            "Basic " + base64.b64encode(f"{credentials[0]}:{credentials[1]}".encode()).decode()
            if credentials else None
        )
        self.connections: list[ProxiedConnection] = []
        self.refused = 0

    def _bind(self) -> socketserver.ThreadingTCPServer:
        proxy = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                proxy._handle(self.request)

        server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        return server

    def _handle(self, client: socket.socket) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            data = client.recv(65536)
            if not data:
                return
            head += data
        request_line, *header_lines = head.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
        method, target, _ = request_line.split(" ", 2)
        headers = {name.strip().lower(): value.strip()
                   for name, _, value in (line.partition(":") for line in header_lines)}
        authorization = headers.get("proxy-authorization")
        if self.expected_authorization and authorization != self.expected_authorization:
            self.refused += 1
            client.sendall(b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"test\"\r\n"
                           b"Content-Length: 0\r\nConnection: close\r\n\r\n")
            return
        authority = target if method == "CONNECT" else target.split("://", 1)[1].split("/", 1)[0]
        self.connections.append(ProxiedConnection(method, target, authorization))
        upstream_address = self.hosts.get(authority)
        if upstream_address is None:
            client.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            return
        host, port = upstream_address.rsplit(":", 1)
        with socket.create_connection((host, int(port))) as upstream:
            if method == "CONNECT":
                client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            else:
                upstream.sendall(head)  # a registry takes absolute-form requests as they are
            pump = threading.Thread(target=_pipe, args=(upstream, client), daemon=True)
            pump.start()
            _pipe(client, upstream)
            pump.join(timeout=30)


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        try:
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            pass
