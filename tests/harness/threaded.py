"""How the harness's servers run: a ``socketserver`` served from a daemon thread, so a test talks to it
synchronously while pytest's thread carries on."""

from __future__ import annotations

import socketserver
import threading
from typing import Self


class ThreadedServer:
    """``start()`` (or ``with``) serves what ``_bind()`` returns until ``stop()``; ``host`` and ``url`` say where."""

    _server: socketserver.BaseServer | None = None
    _thread: threading.Thread | None = None
    thread_name = "harness-server"

    def _bind(self) -> socketserver.BaseServer:
        """A server bound to its address, its handler able to reach ``self``."""
        raise NotImplementedError

    def _after_shutdown(self) -> None:
        """Release what handler threads still hold once the server takes no more connections."""

    @property
    def port(self) -> int:
        assert self._server is not None, f"{type(self).__name__} not started"
        return self._server.server_address[1]

    @property
    def host(self) -> str:
        """"IP:PORT": what a client names it by."""
        port = self.port
        return f"{self._server.server_address[0]}:{port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def start(self) -> Self:
        self._server = self._bind()
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name=self.thread_name, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._after_shutdown()
        self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> Self:
        return self.start() if self._server is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()
