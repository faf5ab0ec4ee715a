"""Real CNCF distribution (``docker-registry serve``) processes for the tests, the demo and the benchmark.

Every registry runs on 127.0.0.1 on a free port (or a given one), with its
storage, config and log file in a private temporary directory.  Nothing here
mocks the registry.  The benchmark turns the access log on to count requests
and puts a delay line in front (``front``).
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import httpx
import yaml

if TYPE_CHECKING:  # pragma: no cover
    from .token_issuer import TokenIssuer

REGISTRY_BINARY = os.environ.get("HARNESS_REGISTRY_BINARY", "docker-registry")
# A name only the forward proxy of tests/harness/forward_proxy.py resolves (to a TLS registry).
PROXIED_NAME = "registry.proxied.test"

_live: "set[Registry]" = set()

_ACCESS = re.compile(rb'"(GET|HEAD|PUT|POST|PATCH|DELETE) (\S+) HTTP/[0-9.]+" (\d{3}) ')
_CLK_TCK = os.sysconf("SC_CLK_TCK")


@atexit.register
def _stop_leftovers() -> None:
    """Safety net: never leave registry processes (or what stands in front of them) behind."""
    for reg in list(_live):
        reg.stop(remove=False)


class Front(Protocol):
    """A proxy in front of a registry (the benchmark's delay line), stopped with it."""

    host: str

    def stop(self) -> None: ...


class RegistryStartError(RuntimeError):
    """The registry process did not come up; the message holds its log tail."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _tail(path: Path, n: int = 40) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return "<no log>"
    return "\n".join(lines[-n:])


def make_htpasswd_line(username: str, password: str) -> str:
    """A bcrypt htpasswd line (the only hash distribution accepts)."""
    import bcrypt

    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=5)).decode()
    # distribution's htpasswd reader accepts $2a$/$2b$/$2y$.
    return f"{username}:{hashed}"


@dataclass(eq=False)
class Registry:
    """A running ``docker-registry`` process.

    ``host`` is "127.0.0.1:PORT", ``url`` is "http(s)://127.0.0.1:PORT".
    ``ca_file``/``cert_dir`` are set for TLS registries (``cert_dir`` holds
    ``ca.crt`` in the layout skopeo's ``--*-cert-dir`` expects).
    ``credentials`` is (username, password) for auth variants, else None.
    ``auth`` is one of "none", "htpasswd", "token".
    ``issuer`` is the :class:`TokenIssuer` for token registries.
    ``front`` is where clients should go instead of ``host``, if anywhere.
    """

    name: str
    host: str
    port: int
    scheme: str
    workdir: Path
    data_dir: Path
    config_file: Path
    log_file: Path
    auth: str = "none"
    ca_file: Path | None = None
    cert_dir: Path | None = None
    credentials: tuple[str, str] | None = None
    htpasswd_file: Path | None = None
    issuer: "TokenIssuer | None" = None
    delete_enabled: bool = True
    config: dict[str, Any] = field(default_factory=dict)
    front: Front | None = None
    _proc: subprocess.Popen | None = field(default=None, repr=False)
    _own_workdir: bool = field(default=False, repr=False)
    _owns_issuer: bool = field(default=False, repr=False)

    # ------------------------------------------------------------------ info
    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}"

    @property
    def front_host(self) -> str:
        return self.front.host if self.front else self.host

    @property
    def front_url(self) -> str:
        return f"{self.scheme}://{self.front_host}"

    @property
    def tls(self) -> bool:
        return self.scheme == "https"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def ssl_context(self) -> ssl.SSLContext | bool:
        """What to pass as httpx ``verify=``."""
        if self.ca_file is None:
            return True
        return ssl.create_default_context(cafile=str(self.ca_file))

    def http_client(self, **kwargs: Any) -> httpx.Client:
        """A plain httpx client that trusts this registry's CA (no auth)."""
        kwargs.setdefault("verify", self.ssl_context())
        kwargs.setdefault("timeout", 30)
        return httpx.Client(**kwargs)

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError(f"registry {self.name} is not running")
        return self._proc.pid

    def log_tail(self, n: int = 40) -> str:
        return _tail(self.log_file, n)

    def cpu_seconds(self) -> float:
        """CPU time (user + sys, all threads) the registry process has used so far.

        ``utime`` and ``stime`` are fields 14 and 15 of ``/proc/<pid>/stat``, in clock ticks.
        """
        stat = Path(f"/proc/{self.pid}/stat").read_text()
        fields = stat.rsplit(")", 1)[1].split()  # fields[0] is field 3 (the name may hold spaces)
        return (int(fields[11]) + int(fields[12])) / _CLK_TCK

    # ------------------------------------------------- access log (if on)
    def log_offset(self) -> int:
        try:
            return self.log_file.stat().st_size
        except FileNotFoundError:
            return 0

    def requests_since(self, offset: int, settle: float = 0.2) -> Counter:
        """Requests logged after ``offset``, counted by method (plus ``total``)."""
        time.sleep(settle)  # the access log is written after the response
        with open(self.log_file, "rb") as f:
            f.seek(offset)
            data = f.read()
        counts: Counter = Counter()
        for match in _ACCESS.finditer(data):
            counts[match.group(1).decode()] += 1
            counts["total"] += 1
        return counts

    # ------------------------------------------------------------- lifecycle
    def start(self, timeout: float = 20.0) -> "Registry":
        env = dict(os.environ)
        env.setdefault("OTEL_TRACES_EXPORTER", "none")
        # Never let an ambient REGISTRY_* variable reconfigure the test registry.
        for k in list(env):
            if k.startswith("REGISTRY_"):
                del env[k]
        log = open(self.log_file, "ab")
        try:
            self._proc = subprocess.Popen(
                [REGISTRY_BINARY, "serve", str(self.config_file)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=str(self.workdir),
                env=env,
                start_new_session=True,
            )
        finally:
            log.close()
        _live.add(self)
        deadline = time.monotonic() + timeout
        last_err: Exception | None = None
        with self.http_client(timeout=2) as client:
            while time.monotonic() < deadline:
                if self._proc.poll() is not None:
                    raise RegistryStartError(
                        f"registry {self.name} exited with {self._proc.returncode}; "
                        f"log tail:\n{self.log_tail()}"
                    )
                try:
                    r = client.get(f"{self.url}/v2/")
                    if r.status_code in (200, 401):
                        return self
                    last_err = RuntimeError(f"/v2/ answered {r.status_code}")
                except httpx.HTTPError as e:
                    last_err = e
                time.sleep(0.05)
        self._kill()
        raise RegistryStartError(
            f"registry {self.name} did not answer {self.url}/v2/ within {timeout}s "
            f"({last_err!r}); log tail:\n{self.log_tail()}"
        )

    def _kill(self) -> None:
        _live.discard(self)
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        try:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def stop(self, remove: bool = True) -> None:
        """Terminate (then kill) the process and its front; remove the temp dir if we made it."""
        self._kill()
        front, self.front = self.front, None
        if front is not None:
            front.stop()
        if self.issuer is not None and self._owns_issuer:
            self.issuer.stop()
        if remove and self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def restart(self, timeout: float = 20.0) -> "Registry":
        """Stop and start again on the same port with the same storage."""
        self._kill()
        return self.start(timeout=timeout)

    def __enter__(self) -> "Registry":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_registry(
    name: str = "registry",
    *,
    auth: str = "none",
    tls: bool = False,
    delete_enabled: bool = True,
    users: dict[str, str] | None = None,
    issuer: "TokenIssuer | None" = None,
    token_service: str = "test-registry",
    workdir: Path | str | None = None,
    parent: Path | str | None = None,
    port: int | None = None,
    access_log: bool = False,
    extra_config: dict[str, Any] | None = None,
    start_attempts: int = 3,
) -> Registry:
    """Start a real registry and wait for ``/v2/``.

    auth: "none", "htpasswd" (``users`` name->password; default one user
    ``tester``/``tester-pw``) or "token" (``issuer``: a started TokenIssuer; if
    None one is started and owned by the registry).  tls: serve HTTPS with a
    trustme CA (certificate for 127.0.0.1, localhost and PROXIED_NAME).
    workdir: use this directory (kept at stop) rather than a temporary one,
    made in ``parent`` (removed at stop).  port: this one rather than a free one.
    access_log: one line per request in ``log_file`` (see ``requests_since``).
    """
    if auth not in ("none", "htpasswd", "token"):
        raise ValueError(f"unknown auth {auth!r}")
    own = workdir is None
    wd = Path(tempfile.mkdtemp(prefix=f"harness-{name}-", dir=parent)) if own else Path(workdir)
    wd.mkdir(parents=True, exist_ok=True)
    data_dir = wd / "data"
    data_dir.mkdir(exist_ok=True)

    config: dict[str, Any] = {
        "version": 0.1,
        "log": {"level": "warn", "accesslog": {"disabled": not access_log}, "formatter": "text"},
        "storage": {
            "filesystem": {"rootdirectory": str(data_dir)},
            "delete": {"enabled": bool(delete_enabled)},
            "maintenance": {"uploadpurging": {"enabled": False}},
        },
        "http": {"secret": f"harness-secret-{name}", "headers": {"X-Content-Type-Options": ["nosniff"]}},
    }

    ca_file = cert_dir = None
    if tls:
        import trustme

        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1", "localhost", PROXIED_NAME)
        tls_dir = wd / "tls"
        tls_dir.mkdir(exist_ok=True)
        ca_file = tls_dir / "ca.pem"
        ca.cert_pem.write_to_path(str(ca_file))
        chain = tls_dir / "server-chain.pem"
        with open(chain, "wb") as f:
            for blob in cert.cert_chain_pems:
                f.write(blob.bytes())
        key = tls_dir / "server-key.pem"
        cert.private_key_pem.write_to_path(str(key))
        cert_dir = wd / "certs.d"
        cert_dir.mkdir(exist_ok=True)
        shutil.copy(ca_file, cert_dir / "ca.crt")
        config["http"]["tls"] = {"certificate": str(chain), "key": str(key)}

    credentials = None
    htpasswd_file = None
    owns_issuer = False
    if auth == "htpasswd":
        users = dict(users or {"tester": "tester-pw"})
        htpasswd_file = wd / "htpasswd"
        htpasswd_file.write_text(
            "".join(make_htpasswd_line(u, p) + "\n" for u, p in users.items())
        )
        credentials = next(iter(users.items()))
        config["auth"] = {"htpasswd": {"realm": "harness-realm", "path": str(htpasswd_file)}}
    elif auth == "token":
        if issuer is None:
            from .token_issuer import TokenIssuer

            issuer = TokenIssuer(users=users, service=token_service).start()
            owns_issuer = True
        config["auth"] = {
            "token": {
                "realm": issuer.realm,
                "service": issuer.service,
                "issuer": issuer.issuer_name,
                "rootcertbundle": str(issuer.write_root_cert_bundle(wd / "token-root.pem")),
            }
        }
        credentials = issuer.default_credentials

    if extra_config:
        _deep_merge(config, extra_config)

    last: Exception | None = None
    for _ in range(1 if port else max(1, start_attempts)):
        listen_port = port or free_port()
        config["http"]["addr"] = f"127.0.0.1:{listen_port}"
        config_file = wd / "config.yml"
        config_file.write_text(yaml.safe_dump(config, sort_keys=False))
        reg = Registry(
            name=name,
            host=f"127.0.0.1:{listen_port}",
            port=listen_port,
            scheme="https" if tls else "http",
            workdir=wd,
            data_dir=data_dir,
            config_file=config_file,
            log_file=wd / "registry.log",
            auth=auth,
            ca_file=ca_file,
            cert_dir=cert_dir,
            credentials=credentials,
            htpasswd_file=htpasswd_file,
            issuer=issuer,
            delete_enabled=delete_enabled,
            config=config,
        )
        reg._own_workdir = own
        reg._owns_issuer = owns_issuer
        try:
            return reg.start()
        except RegistryStartError as e:  # e.g. the port got taken meanwhile
            last = e
            if "address already in use" not in str(e):
                break
    if owns_issuer and issuer is not None:
        issuer.stop()
    if own:
        # keep the directory for post-mortem only if asked
        if not os.environ.get("HARNESS_KEEP_TMP"):
            shutil.rmtree(wd, ignore_errors=True)
    assert last is not None
    raise last


def _deep_merge(dst: dict, src: dict) -> None:
    for k, v in src.items():
        if isinstance(v, dict) and isinstance(dst.get(k), dict):
            _deep_merge(dst[k], v)
        else:
            dst[k] = v
