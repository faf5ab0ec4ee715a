"""HTTP_PROXY / HTTPS_PROXY / NO_PROXY, read as the Go original read them.

End to end through a real forward proxy (tests/harness/forward_proxy.py) to real
registries reachable only by names that proxy alone resolves.
"""

from __future__ import annotations

import pytest

from reconciler.registry.proxy import InvalidProxy, ProxySettings
from tests.harness.forward_proxy import ForwardProxy
from tests.harness.registry import PROXIED_NAME
from tests.harness.skopeo import skopeo_inspect_raw
from tests.helpers_cli import run_cli, write_images

PROXY_USER, PROXY_PASSWORD = "corp-user", "proxy-s3cret"


@pytest.fixture
def forward_proxy():
    started: list[ForwardProxy] = []

    def make(hosts: dict[str, str], credentials: tuple[str, str] | None = None) -> ForwardProxy:
        proxy = ForwardProxy(hosts, credentials).start()
        started.append(proxy)
        return proxy

    yield make
    for proxy in started:
        proxy.stop()


def with_credentials(url: str, user: str = PROXY_USER, password: str = PROXY_PASSWORD) -> str:
    return url.replace("http://", f"http://{user}:{password}@")


# -- which connections go through which proxy ----------------------------------------------------

@pytest.mark.parametrize("environ, scheme, host, port, proxied", [
    ({"HTTPS_PROXY": "proxy:3128"}, "https", "gcr.io", 443, True),
    ({"HTTPS_PROXY": "proxy:3128"}, "http", "gcr.io", 80, False),
    ({"HTTP_PROXY": "proxy:3128"}, "http", "gcr.io", 80, True),
    ({"https_proxy": "http://proxy:3128"}, "https", "gcr.io", 443, True),
    ({"HTTPS_PROXY": "proxy:3128"}, "https", "127.0.0.1", 5000, False),
    ({"HTTPS_PROXY": "proxy:3128"}, "https", "localhost", 5000, False),
    ({"HTTPS_PROXY": "proxy:3128"}, "https", "::1", 5000, False),
    ({"HTTPS_PROXY": "proxy:3128", "NO_PROXY": "*"}, "https", "gcr.io", 443, False),
    ({"HTTPS_PROXY": "proxy:3128", "NO_PROXY": "example.com"}, "https", "example.com", 443, False),
    ({"HTTPS_PROXY": "proxy:3128", "NO_PROXY": "example.com"}, "https", "reg.example.com", 443, False),
    ({"HTTPS_PROXY": "proxy:3128", "NO_PROXY": "example.com"}, "https", "notexample.com", 443, True),
    ({"HTTPS_PROXY": "proxy:3128", "NO_PROXY": ".example.com"}, "https", "example.com", 443, True),
    ({"HTTPS_PROXY": "proxy:3128", "no_proxy": "*.example.com"}, "https", "reg.example.com", 443, False),
    ({"HTTPS_PROXY": "proxy:3128", "NO_PROXY": "10.0.0.0/8, 192.168.1.5"}, "https", "10.1.2.3", 443, False),
    ({"HTTPS_PROXY": "proxy:3128", "NO_PROXY": "10.0.0.0/8, 192.168.1.5"}, "https", "192.168.1.5", 443, False),
    ({"HTTPS_PROXY": "proxy:3128", "NO_PROXY": "10.0.0.0/8"}, "https", "11.0.0.1", 443, True),
    ({"HTTPS_PROXY": "proxy:3128", "NO_PROXY": "reg.io:5000"}, "https", "reg.io", 5000, False),
    ({"HTTPS_PROXY": "proxy:3128", "NO_PROXY": "reg.io:5000"}, "https", "reg.io", 443, True),
])
def test_proxy_choice_follows_go(environ, scheme, host, port, proxied):
    proxy = ProxySettings.from_environment(environ).for_origin(scheme, host, port)
    assert (proxy is not None) is proxied


def test_the_upper_case_variable_wins():
    settings = ProxySettings.from_environment({"HTTPS_PROXY": "upper:1", "https_proxy": "lower:1"})
    assert settings.for_origin("https", "gcr.io", 443).host == "upper"


def test_proxy_credentials_become_a_header_and_stay_out_of_reprs():
    settings = ProxySettings.from_environment({"HTTPS_PROXY": "http://us%40er:p%3Ass@proxy.corp:8080"})
    proxy = settings.https
    assert (proxy.host, proxy.port, proxy.address) == ("proxy.corp", 8080, "proxy.corp:8080")
    assert proxy.authorization == "Basic dXNAZXI6cDpzcw=="  # us@er:p:ss
    assert "p:ss" not in repr(settings) and "cDpzcw" not in repr(settings)


@pytest.mark.parametrize("value, message", [
    ("socks5://proxy:1080", "HTTPS_PROXY: socks5:// proxies are not supported, only http://"),
    ("https://proxy:443", "HTTPS_PROXY: https:// proxies are not supported, only http://"),
    ("http://proxy:notaport", "HTTPS_PROXY: not a proxy URL"),
])
def test_unusable_proxy_variables_are_refused(value, message):
    with pytest.raises(InvalidProxy, match=message):
        ProxySettings.from_environment({"HTTPS_PROXY": value})


def test_an_unusable_proxy_is_one_error_line(tmp_path, plain_registry):
    write_images(tmp_path, f"{plain_registry.host}/mirror/", [{"source": f"{plain_registry.host}/x/y:v1"}])
    result = run_cli(tmp_path, "lock", env={"HTTPS_PROXY": "socks5://user:pw@proxy:1080"})
    assert result.code == 1, str(result)
    assert result.stderr.strip().splitlines() == [
        ("error: HTTPS_PROXY: socks5:// proxies are not supported, only http:// "
         "(https registries are still end-to-end TLS through it)")
    ]
    assert not (tmp_path / "images.lock").exists()


# -- end to end ------------------------------------------------------------------------------------

def test_https_registry_through_a_connect_tunnel_with_proxy_credentials(
    tmp_path, push_image, tls_registry, forward_proxy, unique_repo
):
    pushed = push_image("oci-index")  # the source is on loopback: reached directly, as Go does
    proxied_host = f"{PROXIED_NAME}:{tls_registry.port}"
    proxy = forward_proxy({proxied_host: tls_registry.host}, credentials=(PROXY_USER, PROXY_PASSWORD))
    base = unique_repo("proxied")
    write_images(tmp_path, f"{proxied_host}/{base}/", [{"source": f"{pushed.host}/{pushed.repo}:v1"}])
    env = {"HTTPS_PROXY": with_credentials(proxy.url), "HTTP_PROXY": with_credentials(proxy.url)}

    ok = [run_cli(tmp_path, *args, "--ca-file", str(tls_registry.ca_file), "--debug", env=env)
          for args in (("lock",), ("apply",))]

    for result in ok:
        assert result.code == 0, str(result)
        assert PROXY_PASSWORD not in result.stdout + result.stderr
    assert {(c.method, c.target) for c in proxy.connections} == {("CONNECT", proxied_host)}
    assert proxy.refused == 0
    target = f"{tls_registry.host}/{base}/{pushed.host.replace(':', '_')}/{pushed.repo}:v1"
    assert skopeo_inspect_raw(target, tls_verify=True, cert_dir=tls_registry.cert_dir) == pushed.manifest


def test_plain_http_registry_through_the_proxy_in_absolute_form(
    tmp_path, push_image, second_plain_registry, forward_proxy, unique_repo
):
    pushed = push_image("oci")
    proxied_host = f"plain.proxied.test:{second_plain_registry.port}"
    proxy = forward_proxy({proxied_host: second_plain_registry.host})
    base = unique_repo("proxied")
    write_images(tmp_path, f"{proxied_host}/{base}/", [{"source": f"{pushed.host}/{pushed.repo}:v1"}])
    env = {"HTTP_PROXY": proxy.url, "HTTPS_PROXY": proxy.url}

    for command in ("lock", "apply"):
        result = run_cli(tmp_path, command, "--insecure-registry", proxied_host, env=env)
        assert result.code == 0, str(result)

    absolute = [c for c in proxy.connections if c.method != "CONNECT"]
    assert absolute and all(c.target.startswith(f"http://{proxied_host}/v2/") for c in absolute), proxy.connections
    target = f"{second_plain_registry.host}/{base}/{pushed.host.replace(':', '_')}/{pushed.repo}:v1"
    assert skopeo_inspect_raw(target) == pushed.manifest


def test_wrong_proxy_credentials_are_one_error_line_without_secrets(
    tmp_path, push_image, tls_registry, forward_proxy, unique_repo
):
    pushed = push_image("oci")
    proxied_host = f"{PROXIED_NAME}:{tls_registry.port}"
    proxy = forward_proxy({proxied_host: tls_registry.host}, credentials=(PROXY_USER, PROXY_PASSWORD))
    write_images(tmp_path, f"{proxied_host}/{unique_repo()}/", [{"source": f"{pushed.host}/{pushed.repo}:v1"}])

    assert run_cli(tmp_path, "lock").code == 0  # the source only: on loopback, direct

    result = run_cli(tmp_path, "plan", "--ca-file", str(tls_registry.ca_file),
                     env={"HTTPS_PROXY": with_credentials(proxy.url, password="wrong-pw")})

    assert result.code == 1, str(result)
    address = proxy.url.removeprefix("http://")
    refusal = (f"  error: {proxied_host}: proxy {address} refused CONNECT {proxied_host}: "
               "HTTP 407 Proxy Authentication Required")
    assert [line for line in result.stdout_lines if line.endswith(refusal)] != [], str(result)
    assert "wrong-pw" not in result.stdout + result.stderr
    assert proxy.refused == 1  # not retried: the proxy will not change its mind


def test_loopback_registries_never_go_through_the_proxy(tmp_path, push_image, second_plain_registry,
                                                        forward_proxy, unique_repo):
    pushed = push_image("oci")
    proxy = forward_proxy({})
    write_images(tmp_path, f"{second_plain_registry.host}/{unique_repo()}/",
                 [{"source": f"{pushed.host}/{pushed.repo}:v1"}])
    env = {"HTTP_PROXY": proxy.url, "HTTPS_PROXY": proxy.url}

    for command in ("lock", "apply"):
        result = run_cli(tmp_path, command, env=env)
        assert result.code == 0, str(result)
    assert proxy.connections == [] and proxy.refused == 0
