"""Which HTTP proxy a connection goes through: HTTP_PROXY, HTTPS_PROXY and NO_PROXY.

The original image-syncer honoured these through Go's net/http, so we read them by
Go's rules: the upper-case name wins, a proxy without a scheme is ``http://``,
loopback hosts never go through a proxy, and a NO_PROXY entry is ``*``, an IP, a CIDR
range, ``example.com`` (that host and its subdomains) or ``.example.com`` /
``*.example.com`` (subdomains only), each optionally with ``:port``.
"""

from __future__ import annotations

import ipaddress
import urllib.parse
from collections.abc import Mapping

import attrs

from reconciler.oci.reference import host_port, is_loopback
from reconciler.registry.credentials import basic_authorization
from reconciler.registry.errors import RegistryError


class InvalidProxy(RegistryError):
    """A proxy variable we cannot use; the message names it."""


@attrs.frozen
class Proxy:
    """An ``http://`` proxy; its credentials only ever leave as the Proxy-Authorization value."""

    host: str
    port: int
    authorization: str | None = attrs.field(default=None, repr=False)

    @property
    def address(self) -> str:
        """For messages: where the proxy is, never who we are to it."""
        return host_port(self.host, self.port)


@attrs.frozen
class _Bypass:
    """One NO_PROXY entry."""

    host: str = ""  # ".example.com" for a domain; "" for an IP range or "*"
    exact_too: bool = False  # the domain itself matches, not only its subdomains
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None
    port: int | None = None
    everything: bool = False

    def matches(self, host: str, port: int) -> bool:
        if self.everything:
            return True
        if self.port is not None and self.port != port:
            return False
        if self.network is not None:
            try:
                return ipaddress.ip_address(host) in self.network
            except ValueError:
                return False
        return host.endswith(self.host) or (self.exact_too and host == self.host[1:])


@attrs.frozen
class ProxySettings:
    http: Proxy | None = None
    https: Proxy | None = None
    bypasses: tuple[_Bypass, ...] = ()

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> ProxySettings:
        def variable(name: str) -> tuple[str, str]:
            for key in (name, name.lower()):
                if environ.get(key):
                    return key, environ[key]
            return name, ""

        http_name, http_value = variable("HTTP_PROXY")
        if environ.get("REQUEST_METHOD"):  # as Go: under CGI, HTTP_PROXY is a request header
            http_value = ""
        https_name, https_value = variable("HTTPS_PROXY")
        _, no_proxy = variable("NO_PROXY")
        return cls(
            http=_parse_proxy(http_name, http_value),
            https=_parse_proxy(https_name, https_value),
            bypasses=tuple(_parse_bypass(entry) for entry in no_proxy.split(",") if entry.strip()),
        )

    def for_origin(self, scheme: str, host: str, port: int) -> Proxy | None:
        """The proxy for a connection to ``scheme://host:port``, None to go direct."""
        proxy = self.https if scheme == "https" else self.http
        host = host.lower().strip("[]")
        if proxy is None or is_loopback(f"[{host}]" if ":" in host else host):
            return None
        if any(bypass.matches(host, port) for bypass in self.bypasses):
            return None
        return proxy


def _parse_proxy(name: str, value: str) -> Proxy | None:
    value = value.strip()
    if not value:
        return None
    if "://" not in value:
        value = "http://" + value
    try:
        url = urllib.parse.urlsplit(value)
        port = url.port
    except ValueError:
        raise InvalidProxy(f"{name}: not a proxy URL") from None
    if url.scheme != "http":
        raise InvalidProxy(f"{name}: {url.scheme}:// proxies are not supported, only http:// "
                           "(https registries are still end-to-end TLS through it)")
    if not url.hostname:
        raise InvalidProxy(f"{name}: the proxy URL names no host")
    authorization = None
    if url.username is not None:
        authorization = basic_authorization(urllib.parse.unquote(url.username),
                                            urllib.parse.unquote(url.password or ""))
    return Proxy(url.hostname, port or 80, authorization)


def _parse_bypass(entry: str) -> _Bypass:
    entry = entry.strip().lower()
    if entry == "*":
        return _Bypass(everything=True)
    host, port = entry, None
    if entry.startswith("["):  # [v6]:port
        host, _, rest = entry[1:].partition("]")
        port = _port(rest.removeprefix(":"))
    elif entry.count(":") == 1:
        host, _, port_text = entry.partition(":")
        port = _port(port_text)
    try:
        return _Bypass(network=ipaddress.ip_network(host, strict=False), port=port)
    except ValueError:
        pass
    if host.startswith("*."):
        return _Bypass(host=host[1:], port=port)
    if host.startswith("."):
        return _Bypass(host=host, port=port)
    return _Bypass(host="." + host, exact_too=True, port=port)


def _port(text: str) -> int | None:
    return int(text) if text.isdigit() else None


DIRECT = ProxySettings()
