"""`serve()`: one process, or one worker process per core with SO_REUSEPORT.

Why processes: CPython runs Python code on one core per process, so a worker per core is a
process with its own listening socket on the shared port (SO_REUSEPORT lets the kernel spread
connections); workers are pinned to a core each when there are enough cores. keel.runtime's
thread-per-core launcher will take this over once it exposes one (see the README).
"""

from __future__ import annotations

import logging
import os
import signal
import ssl
from types import FrameType
from typing import Any

from keel.http.config import ServerConfig
from keel.http.server.backend import Backend
from keel.http.server.server import DEFAULT_HOST, DEFAULT_PORT, Server, ServerError, bind_socket

logger = logging.getLogger("keel.http")


def serve(app: Any, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, workers: int = 1,
          backend: Backend | str | None = None, config: ServerConfig | None = None,
          ssl_context: ssl.SSLContext | None = None, pin_workers: bool = True) -> None:
    """Serve `app` until SIGINT/SIGTERM; with workers > 1, fork one process per worker."""
    if not isinstance(workers, int) or workers < 1:
        raise ServerError(f"workers must be a positive int, got {workers!r}")
    if workers == 1:
        Server(app, host=host, port=port, backend=backend, config=config,
               ssl_context=ssl_context).run()
        return
    # Fail here, once, if the address cannot be bound, rather than in every child.
    bind_socket(host, port, reuse_port=True).close()
    cores = sorted(os.sched_getaffinity(0))
    children: list[int] = []
    for index in range(workers):
        pid = os.fork()
        if pid == 0:  # the worker
            code = 0
            try:
                if pin_workers and len(cores) >= workers:
                    os.sched_setaffinity(0, {cores[index]})
                sock = bind_socket(host, port, reuse_port=True)
                Server(app, backend=backend, config=config, ssl_context=ssl_context,
                       sockets=[sock]).run()
            except BaseException:
                logger.exception("worker %d failed", index)
                code = 1
            finally:
                os._exit(code)
        children.append(pid)
    logger.info("keel.http: %d workers on %s:%d (pids %s)", workers, host, port, children)

    def forward(number: int, frame: FrameType | None) -> None:
        for child in children:
            try:
                os.kill(child, signal.SIGTERM)
            except ProcessLookupError:
                pass

    previous = {number: signal.signal(number, forward)
                for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        for child in children:
            while True:
                try:
                    os.waitpid(child, 0)
                    break
                except ChildProcessError:
                    break
                except InterruptedError:
                    continue
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
