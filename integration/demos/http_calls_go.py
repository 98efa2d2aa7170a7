"""Demo: a keel.http application on keel.runtime whose handlers await Go through keel.ffi.

Run it with `python integration/demos/http_calls_go.py` (keel-native, keel-runtime, keel-ffi
and keel-http installed). It builds keel.ffi's example Go library (cached under
~/.cache/keel/ffi), serves the app in hashing_service.py on 127.0.0.1 on a free port, makes a
few requests with Python's own http.client, prints what came back, and shuts everything down.
"""

from __future__ import annotations

import http.client
import threading
import time
from typing import Any

from hashing_service import make_app, open_library

import keel.runtime as kr
from keel.http import Server
from keel.runtime.drivers import chosen_driver_name

HOST = "127.0.0.1"
START_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 30.0
REQUEST_TIMEOUT_SECONDS = 10.0
REQUESTS: list[tuple[str, str, bytes | None, str]] = [
    ("GET", "/hash/keel", None, "Go's FNV-1a of a path parameter (async call)"),
    ("POST", "/hash", b"bytes read in place by Go", "Go hashes the request body (async call)"),
    ("GET", "/square/12", None, "a Go goroutine squares after a timer (async call)"),
    ("GET", "/record?line=7;ada;9.5;math,logic;51.5,-0.1", None,
     "Go parses a record (async) and describes it (sync call)"),
    ("GET", "/record?line=not-a-record", None, "a Go error becomes a 400 with Go's message"),
]


class ServerThread:
    """The server's runtime on its own thread, so this thread can be the client."""

    def __init__(self, app: Any) -> None:
        self.server = Server(app, host=HOST, port=0, backend="runtime")
        self._ready = threading.Event()
        self._failure: list[BaseException] = []
        self._thread = threading.Thread(target=self._run, name="keel-http-demo-server")

    def _run(self) -> None:
        try:
            kr.run(self.server.serve, lambda addresses: self._ready.set())
        except BaseException as error:  # reported by start()/stop() on the main thread
            self._failure.append(error)
            self._ready.set()

    def __enter__(self) -> int:
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT_SECONDS) or self._failure:
            self.__exit__()
            raise SystemExit(f"http_calls_go: the server did not start: {self._failure}")
        return int(self.server.addresses[0][1])

    def __exit__(self, *exc_info: object) -> None:
        self.server.shutdown_threadsafe()
        self._thread.join(STOP_TIMEOUT_SECONDS)
        if self._thread.is_alive():
            raise SystemExit("http_calls_go: the server did not stop in time")


def fetch(port: int, method: str, path: str, body: bytes | None) -> tuple[int, str]:
    connection = http.client.HTTPConnection(HOST, port, timeout=REQUEST_TIMEOUT_SECONDS)
    try:
        connection.request(method, path, body=body,
                           headers={"Content-Type": "application/octet-stream"} if body else {})
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


def main() -> None:
    print("http_calls_go: building (or reusing) keel.ffi's example Go library")
    started = time.perf_counter()
    with open_library() as library:
        print(f"http_calls_go: Go library ready in {time.perf_counter() - started:.1f} s "
              f"({library.directory})")
        with ServerThread(make_app(library)) as port:
            print(f"http_calls_go: keel.http serving on http://{HOST}:{port} "
                  f"(keel.runtime backend, {chosen_driver_name()} driver)")
            for method, path, body, what in REQUESTS:
                status, text = fetch(port, method, path, body)
                print(f"\n{method} {path}  -- {what}")
                print(f"  {status} {text}")
        print("\nhttp_calls_go: server stopped, Go library closed")


if __name__ == "__main__":
    main()
