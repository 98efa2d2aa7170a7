"""keel.http's one exception hierarchy.

Why one base: callers catch `HttpError` for anything keel.http raises on purpose; protocol
violations carry the status code the server answers with, so the connection driver never has
to guess which 4xx a malformed request deserves.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from keel.http.response import Response


class HttpError(Exception):
    """Base of every error keel.http raises on purpose."""


class ProtocolError(HttpError):
    """The peer broke HTTP/1.1 framing or a configured limit; answer `status` and close."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class ClientDisconnected(HttpError):
    """The peer closed its side while the application still expected request bytes."""


class ResponseError(HttpError):
    """The application produced a response that cannot be sent (bad header, wrong length)."""


class RouteError(HttpError):
    """A route or handler was registered in a shape the router cannot serve."""


class ResponseException(HttpError):
    """Raise from a handler or extractor to answer with `response` instead of a return value."""

    def __init__(self, response: Response) -> None:
        super().__init__(f"response {response.status}")
        self.response = response


class HTTPException(ResponseException):
    """Raise to answer `status` with a plain-text or JSON `detail`."""

    def __init__(self, status: int, detail: object = None,
                 headers: list[tuple[str, str]] | None = None) -> None:
        from keel.http.response import error_response

        self.status = status
        self.detail = detail
        super().__init__(error_response(status, detail, headers))
