"""The small HTTP server behind a process's ``--metrics-port``: ``/metrics`` (Prometheus text),
``/healthz`` (200 while the process serves) and ``/readyz`` (200 or 503 with the reason), from a daemon
thread. The worker pool (:mod:`workers.exporter`) and the archiver (:mod:`archive.metrics`) each hand it
what to render and how to judge readiness."""

from __future__ import annotations

import http.server
import logging
import threading
from collections.abc import Callable
from typing import Any

from prometheus_client.exposition import CONTENT_TYPE_LATEST

log = logging.getLogger(__name__)


class ProbeServer:
    """Serve ``render()`` at ``/metrics`` (500 with the reason when it raises) and ``readiness()`` ->
    ``(ok, why)`` at ``/readyz`` on ``host:port``; ``port=0`` picks a free port (:attr:`port`)."""

    def __init__(self, port: int, *, host: str, render: Callable[[], bytes],
                 readiness: Callable[[], tuple[bool, str]], name: str) -> None:
        self.render, self.readiness = render, readiness
        self._httpd = http.server.ThreadingHTTPServer((host, port), _handler(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name=name, daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def host(self) -> str:
        """The address actually bound (``0.0.0.0``: every interface)."""
        bound = self._httpd.server_address[0]
        return (bound.decode() if isinstance(bound, bytes) else str(bound)) or "0.0.0.0"

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


def _handler(server: ProbeServer) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                try:
                    self._send(200, server.render(), CONTENT_TYPE_LATEST)
                except Exception as exc:  # noqa: BLE001
                    log.exception("metrics collection failed")
                    self._send(500, f"collection failed: {exc}\n".encode())
            elif path == "/healthz":
                self._send(200, b"ok\n")
            elif path == "/readyz":
                ok, why = server.readiness()
                self._send(200 if ok else 503, (why + "\n").encode())
            else:
                self._send(404, b"not found\n")

        def _send(self, code: int, body: bytes, ctype: str = "text/plain; charset=utf-8") -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - signature of the base
            log.debug("metrics http: " + format, *args)

    return Handler
