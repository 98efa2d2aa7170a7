"""The HTTP server: listening sockets, connections, graceful shutdown, signals.

Why the server owns the sockets: it creates them itself (SO_REUSEPORT when asked, so worker
processes each accept on their own socket) and hands them to the backend, which only runs the
accept loop. Shutdown is ordered: stop accepting, end idle keep-alive connections, let in-flight
requests finish (their connections close after the response), then abort stragglers.
"""

from __future__ import annotations

import logging
import signal
import socket
import ssl
from collections.abc import Callable
from typing import Any

from keel.http.asgi import AsgiAdapter, Lifespan
from keel.http.config import ServerConfig
from keel.http.errors import HttpError
from keel.http.server.backend import Backend, Event, Stream, get_backend
from keel.http.server.driver import ConnectionApp, ConnectionDriver

logger = logging.getLogger("keel.http")

SHUTDOWN_POLL_SECONDS = 0.05
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
ASGI_DEFAULT_BACKEND = "asyncio"


class ServerError(HttpError):
    """The server could not start (address in use, bad TLS files, unknown backend)."""


def bind_socket(host: str, port: int, reuse_port: bool = False) -> socket.socket:
    """A listening TCP socket; SO_REUSEPORT lets several workers bind the same port."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        raise ServerError(f"cannot resolve listen address {host!r}: {error}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(address)
        sock.listen(socket.SOMAXCONN)
        sock.setblocking(False)
    except OSError as error:
        sock.close()
        raise ServerError(f"cannot listen on {host}:{port}: {error.strerror}") from None
    return sock


def tls_context(certificate: str, private_key: str | None = None) -> ssl.SSLContext:
    """A server-side TLS context from PEM files (HTTP/1.1 offered through ALPN)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(certificate, private_key)
    except (OSError, ssl.SSLError) as error:
        raise ServerError(f"cannot load TLS certificate {certificate!r}: {error}") from None
    context.set_alpn_protocols(["http/1.1"])
    return context


class Server:
    """Serves one application on one backend; use `serve()` inside a loop or `run()`."""

    def __init__(self, app: Any, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
                 backend: Backend | str | None = None, config: ServerConfig | None = None,
                 ssl_context: ssl.SSLContext | None = None,
                 sockets: list[socket.socket] | None = None, reuse_port: bool = False) -> None:
        from keel.http.app_adapter import as_connection_app, is_asgi

        self.app: ConnectionApp = as_connection_app(app)
        self.host = host
        self.port = port
        if backend is None and is_asgi(app):
            backend = ASGI_DEFAULT_BACKEND  # ASGI apps lean on anyio/asyncio (threadpools...)
        self.backend = backend if not isinstance(backend, str | None) else get_backend(backend)
        self.config = config or ServerConfig()
        self.ssl_context = ssl_context
        self._sockets = sockets
        self._reuse_port = reuse_port
        self._stop: Event | None = None
        self._call_in_loop: Callable[[Callable[[], None]], None] | None = None
        self._stop_requested = False
        self.draining = False
        self.connections: set[ConnectionDriver] = set()
        self.addresses: list[tuple[str, int]] = []

    # ConnectionRegistry
    def add(self, driver: ConnectionDriver) -> None:
        self.connections.add(driver)

    def discard(self, driver: ConnectionDriver) -> None:
        self.connections.discard(driver)

    def shutdown(self) -> None:
        """Ask for a graceful shutdown; call from the server's own loop (or a signal)."""
        self._stop_requested = True
        if self._stop is not None:
            self._stop.set()

    def shutdown_threadsafe(self) -> None:
        """`shutdown()` from another thread (the server runs its loop in its own)."""
        self._stop_requested = True
        if self._call_in_loop is not None:
            self._call_in_loop(self.shutdown)

    async def serve(self, ready: Callable[[list[tuple[str, int]]], None] | None = None) -> None:
        """Serve until `shutdown()`; `ready` gets the bound addresses once accepting."""
        backend = self.backend
        sockets = self._sockets or [bind_socket(self.host, self.port, self._reuse_port)]
        self._sockets = None
        self.addresses = [sock.getsockname()[:2] for sock in sockets]
        self._stop = backend.event()
        self._call_in_loop = backend.threadsafe_caller()
        if self._stop_requested:
            self._stop.set()
        config = self.config

        async def handle(stream: Stream) -> None:
            await ConnectionDriver(stream, self.app, config, self).run()

        lifespan = None
        if isinstance(self.app, AsgiAdapter):
            lifespan = Lifespan(self.app, backend.event)
        logger.info("keel.http serving on %s (%s backend)",
                    ", ".join(f"{host}:{port}" for host, port in self.addresses), backend.name)
        try:
            async with backend.task_group() as connections:
                if lifespan is not None:
                    connections.spawn(lifespan.run)
                    await lifespan.started.wait()
                    if lifespan.failure is not None:
                        self.shutdown()
                        raise ServerError(f"the ASGI app's startup failed: {lifespan.failure}")
                async with backend.task_group() as acceptors:
                    for sock in sockets:
                        acceptors.spawn(backend.serve_socket, sock, self.ssl_context,
                                        connections, handle, self._stop,
                                        config.limits.write_high_water)
                    if ready is not None:
                        ready(self.addresses)
                    await self._stop.wait()
                await self._drain()
                if lifespan is not None and lifespan.supported:
                    lifespan.request_shutdown()
                    await lifespan.finished.wait()
        finally:
            self._call_in_loop = None
            for sock in sockets:
                sock.close()
        logger.info("keel.http stopped")

    async def _drain(self) -> None:
        """Stop idle connections now; give in-flight ones `timeouts.shutdown` seconds."""
        self.draining = True
        for driver in list(self.connections):
            if driver.idle:
                driver.stream.abort()
        waited = 0.0
        while self.connections and waited < self.config.timeouts.shutdown:
            await self.backend.sleep(SHUTDOWN_POLL_SECONDS)
            waited += SHUTDOWN_POLL_SECONDS
            for driver in list(self.connections):
                if driver.idle:
                    driver.stream.abort()
        for driver in list(self.connections):
            logger.warning("aborting connection from %s after the shutdown timeout",
                           driver.stream.peer)
            driver.stream.abort()

    def run(self) -> None:
        """Run on the backend until SIGINT or SIGTERM, then shut down gracefully."""

        async def main() -> None:
            with self.backend.signal_handler([signal.SIGINT, signal.SIGTERM], self.shutdown):
                await self.serve()

        self.backend.run(main)
