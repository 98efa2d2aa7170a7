"""Middleware as layers around services, and the `from_fn` form.

Why layers: a layer is a function from Service to Service, composed once at startup, so a
request walks a precomposed chain of closures. Order follows the code: in `layer(a, b)` the
request meets `a` first and the response leaves through `a` last.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from keel.http.handler import Service
from keel.http.request import Request
from keel.http.response import Response, into_response

Layer = Callable[[Service], Service]
Next = Callable[[Request], Awaitable[Response]]
MiddlewareFunction = Callable[[Request, Next], Awaitable[object]]


def compose(layers: Sequence[Layer], service: Service) -> Service:
    """`layers[0]` outermost."""
    for layer in reversed(layers):
        service = layer(service)
    return service


def from_fn(function: MiddlewareFunction) -> Layer:
    """A layer from `async def middleware(request, next) -> response-like`."""

    def layer(inner: Service) -> Service:
        async def service(request: Request) -> Response:
            result = await function(request, inner)
            return result if isinstance(result, Response) else into_response(result)
        return service
    return layer
