"""The Router: paths with static, `{param}` and `{*rest}` segments, methods, nest, merge,
fallback, 404 and 405 with Allow, HEAD answered by GET, and a trailing-slash policy.

Why a segment tree plus a dict: routes without parameters are found with one dict lookup;
the rest walk a tree that prefers static segments over parameters over a catch-all, so
`/users/me` beats `/users/{id}` whatever the registration order.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal, TypeVar

from keel.http.errors import ProtocolError, ResponseException, RouteError
from keel.http.handler import DirectCall, Handler, Service, direct_call, handler_service
from keel.http.middleware.base import Layer, compose
from keel.http.request import Request
from keel.http.response import (
    OK,
    TEXT_HEADERS,
    Responder,
    Response,
    error_response,
    into_response,
)

logger = logging.getLogger("keel.http")

METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT")
NOT_FOUND = 404
METHOD_NOT_ALLOWED = 405
INTERNAL_ERROR = 500
PERMANENT_REDIRECT = 308
MAX_PATH_SEGMENTS = 256
HandlerT = TypeVar("HandlerT", bound=Handler)
TrailingSlash = Literal["strict", "redirect"]


class MethodRouter:
    """The handlers of one path, per method, with their own layers."""

    def __init__(self) -> None:
        self.handlers: dict[str, Handler] = {}
        self.layers: list[Layer] = []
        self.any_handler: Handler | None = None

    def on(self, method: str, handler: Handler) -> MethodRouter:
        method = method.upper()
        if method in self.handlers:
            raise RouteError(f"a {method} handler is already registered here")
        handler_service(handler)  # fail at registration, not at the first request
        self.handlers[method] = handler
        return self

    def get(self, handler: Handler) -> MethodRouter:
        return self.on("GET", handler)

    def head(self, handler: Handler) -> MethodRouter:
        return self.on("HEAD", handler)

    def post(self, handler: Handler) -> MethodRouter:
        return self.on("POST", handler)

    def put(self, handler: Handler) -> MethodRouter:
        return self.on("PUT", handler)

    def delete(self, handler: Handler) -> MethodRouter:
        return self.on("DELETE", handler)

    def patch(self, handler: Handler) -> MethodRouter:
        return self.on("PATCH", handler)

    def options(self, handler: Handler) -> MethodRouter:
        return self.on("OPTIONS", handler)

    def any(self, handler: Handler) -> MethodRouter:
        handler_service(handler)
        self.any_handler = handler
        return self

    def layer(self, *layers: Layer) -> MethodRouter:
        self.layers.extend(layers)
        return self

    def merge_from(self, other: MethodRouter, path: str) -> None:
        for method, handler in other.handlers.items():
            if method in self.handlers:
                raise RouteError(f"{method} {path} is registered twice")
            self.handlers[method] = handler
        if other.any_handler is not None:
            self.any_handler = other.any_handler
        self.layers.extend(other.layers)


def get(handler: Handler) -> MethodRouter:
    return MethodRouter().get(handler)


def post(handler: Handler) -> MethodRouter:
    return MethodRouter().post(handler)


def put(handler: Handler) -> MethodRouter:
    return MethodRouter().put(handler)


def delete(handler: Handler) -> MethodRouter:
    return MethodRouter().delete(handler)


def patch(handler: Handler) -> MethodRouter:
    return MethodRouter().patch(handler)


def any_method(handler: Handler) -> MethodRouter:
    return MethodRouter().any(handler)


class Endpoint:
    """A built MethodRouter: services per method, the Allow header, the route pattern."""

    __slots__ = ("allow", "direct", "fallback", "pattern", "plain", "services")

    def __init__(self, pattern: str, method_router: MethodRouter, outer: Sequence[Layer]) -> None:
        self.pattern = pattern
        layers = [*outer, *method_router.layers]
        # Without layers, App.__call__ turns exceptions into responses; with layers, the
        # guard sits inside them so they see the 500 (or the carried response).
        guard = _guarded if layers else _unguarded
        self.services: dict[str, Service] = {
            method: compose(layers, guard(handler_service(handler)))
            for method, handler in method_router.handlers.items()}
        if "GET" in self.services and "HEAD" not in self.services:
            self.services["HEAD"] = self.services["GET"]
        # Handlers without parameters or layers: the app awaits them directly (no Service).
        self.plain: dict[str, Handler] = {} if layers else {
            method: handler for method, handler in method_router.handlers.items()
            if not inspect.signature(handler).parameters}
        if "GET" in self.plain and "HEAD" not in self.plain and "HEAD" not in \
                method_router.handlers:
            self.plain["HEAD"] = self.plain["GET"]
        # Handlers whose every parameter is a Path value, without layers: called straight
        # from the matched parameters (no Request, no Service), HEAD answered by GET's.
        self.direct: dict[str, DirectCall] = {}
        if not layers:
            for method, handler in method_router.handlers.items():
                call = direct_call(handler)
                if call is not None:
                    self.direct[method] = call
            if "GET" in self.direct and "HEAD" not in method_router.handlers:
                self.direct["HEAD"] = self.direct["GET"]
        self.fallback: Service | None = None
        if method_router.any_handler is not None:
            self.fallback = compose(layers, guard(handler_service(method_router.any_handler)))
        self.allow = ", ".join(sorted(self.services))


def _unguarded(service: Service) -> Service:
    return service


def _guarded(service: Service) -> Service:
    """Exceptions that carry a response become it; anything else becomes a logged 500."""

    async def guarded(request: Request) -> Response:
        try:
            return await service(request)
        except ResponseException as carried:
            return carried.response
        except ProtocolError:
            raise
        except Exception:
            logger.exception("handler failed on %s %s", request.method, request.raw_path)
            return error_response(INTERNAL_ERROR, "internal server error")
    return guarded


class _Node:
    __slots__ = ("catch_all", "endpoint", "param", "static")

    def __init__(self) -> None:
        self.static: dict[str, _Node] = {}
        self.param: tuple[str, _Node] | None = None
        self.catch_all: tuple[str, Endpoint] | None = None
        self.endpoint: Endpoint | None = None


def _segments(path: str) -> list[str]:
    return path[1:].split("/")


def _check_pattern(path: str) -> None:
    if not path.startswith("/"):
        raise RouteError(f"route {path!r} must start with '/'")
    names: set[str] = set()
    segments = _segments(path)
    for index, segment in enumerate(segments):
        if segment.startswith("{") and segment.endswith("}"):
            name = segment[2:-1] if segment.startswith("{*") else segment[1:-1]
            if not name.isidentifier():
                raise RouteError(f"route {path!r}: {segment!r} must name a Python identifier")
            if name in names:
                raise RouteError(f"route {path!r}: parameter {name!r} appears twice")
            names.add(name)
            if segment.startswith("{*") and index != len(segments) - 1:
                raise RouteError(f"route {path!r}: {segment!r} must be the last segment")
        elif "{" in segment or "}" in segment:
            raise RouteError(f"route {path!r}: segment {segment!r} mixes text and a parameter")


class Router:
    """Routes, layers, a fallback and shared state; it is also the application."""

    def __init__(self, *, trailing_slash: TrailingSlash = "strict") -> None:
        self._routes: dict[str, MethodRouter] = {}
        self._layers: list[Layer] = []
        self._fallback: Handler | None = None
        self._state: Any = None
        self._trailing_slash: TrailingSlash = trailing_slash
        self._built: App | None = None

    # -- registration --

    def route(self, path: str, method_router: MethodRouter) -> Router:
        self._check_open()
        _check_pattern(path)
        existing = self._routes.get(path)
        if existing is None:
            self._routes[path] = method_router
        else:
            existing.merge_from(method_router, path)
        return self

    def _decorator(self, method: str, path: str,
                   layers: Sequence[Layer]) -> Callable[[HandlerT], HandlerT]:
        def register(handler: HandlerT) -> HandlerT:
            self.route(path, MethodRouter().on(method, handler).layer(*layers))
            return handler
        return register

    def get(self, path: str, *layers: Layer) -> Callable[[HandlerT], HandlerT]:
        return self._decorator("GET", path, layers)

    def post(self, path: str, *layers: Layer) -> Callable[[HandlerT], HandlerT]:
        return self._decorator("POST", path, layers)

    def put(self, path: str, *layers: Layer) -> Callable[[HandlerT], HandlerT]:
        return self._decorator("PUT", path, layers)

    def delete(self, path: str, *layers: Layer) -> Callable[[HandlerT], HandlerT]:
        return self._decorator("DELETE", path, layers)

    def patch(self, path: str, *layers: Layer) -> Callable[[HandlerT], HandlerT]:
        return self._decorator("PATCH", path, layers)

    def nest(self, prefix: str, router: Router) -> Router:
        """Mount `router`'s routes under `prefix`; its layers stay around its routes only."""
        self._check_open()
        if not prefix.startswith("/") or (prefix.endswith("/") and prefix != "/"):
            raise RouteError(f"nest prefix {prefix!r} must start with '/' and not end with '/'")
        for path, method_router in router._routes.items():
            nested = MethodRouter()
            nested.merge_from(method_router, path)
            nested.layers = [*router._layers, *method_router.layers]
            full = prefix.rstrip("/") + path if path != "/" else prefix
            self.route(full, nested)
        return self

    def merge(self, router: Router) -> Router:
        """Add `router`'s routes (with its layers) beside ours."""
        self._check_open()
        for path, method_router in router._routes.items():
            merged = MethodRouter()
            merged.merge_from(method_router, path)
            merged.layers = [*router._layers, *method_router.layers]
            self.route(path, merged)
        if router._fallback is not None and self._fallback is None:
            self._fallback = router._fallback
        return self

    def fallback(self, handler: Handler) -> Router:
        """Answer requests no route matches (instead of 404)."""
        self._check_open()
        handler_service(handler)
        self._fallback = handler
        return self

    def layer(self, *layers: Layer) -> Router:
        """Wrap every route and the fallback; the first layer written sees requests first."""
        self._check_open()
        self._layers.extend(layers)
        return self

    def with_state(self, state: Any) -> Router:
        """Shared state for State[T] extractors."""
        self._check_open()
        self._state = state
        return self

    def _check_open(self) -> None:
        if self._built is not None:
            raise RouteError("the router is already serving; register routes before that")

    # -- building --

    def build(self) -> App:
        """Freeze the routes and compose every service (done once, on first use)."""
        if self._built is None:
            self._built = App(self._routes, self._layers, self._fallback, self._state,
                              self._trailing_slash)
        return self._built

    async def __call__(self, request: Request, responder: Responder) -> None:
        await self.build()(request, responder)

    @property
    def service(self) -> Service:
        return self.build().service


class App:
    """A built router: the precomposed service and the connection entry point."""

    def __init__(self, routes: dict[str, MethodRouter], layers: list[Layer],
                 fallback: Handler | None, state: Any, trailing_slash: TrailingSlash) -> None:
        self.state = state
        self._static: dict[str, Endpoint] = {}
        self._tree = _Node()
        self._trailing_slash = trailing_slash
        for path, method_router in routes.items():
            endpoint = Endpoint(path, method_router, ())
            if "{" not in path:
                self._static[path] = endpoint
            else:
                self._insert(path, endpoint)
        self._fallback: Service = _guarded(handler_service(fallback)) if fallback else \
            _not_found
        self.service: Service = compose(layers, self._dispatch)
        self._layered = bool(layers)
        # Request targets (bytes, as parsed) of static routes, for `plain_handler`.
        self._static_targets: dict[bytes, Endpoint] = {
            path.encode("ascii"): endpoint for path, endpoint in self._static.items()
            if path.isascii() and "%" not in path and "?" not in path}
        self._direct_routes = any(endpoint.direct for endpoint in self._static.values()) or \
            _has_direct(self._tree)

    def plain_call(self, method: str, target: bytes) -> Awaitable[Any] | None:
        """The handler's coroutine (not started) for a request with this method and raw
        target, when the route's handler takes nothing or only Path values and has no layers;
        None when the request needs the general path (`__call__`).

        Why: the connection driver then runs the handler itself and sends a `str`, dict or
        list result with no Request, Service or Response object; `respond` finishes anything
        else. A Path value that does not convert comes back as an awaitable raising the same
        HTTPException the extractor raises."""
        if self._layered:
            return None
        endpoint = self._static_targets.get(target)
        if endpoint is not None:
            handler = endpoint.plain.get(method)
            return None if handler is None else handler()
        if not self._direct_routes:
            return None
        question = target.find(b"?")
        raw = target if question < 0 else target[:question]
        if raw[:1] != b"/" or b"%" in raw:
            return None  # absolute-form or percent-encoded: decoded by the general path
        path = raw.decode("latin-1")
        endpoint = self._static.get(path)
        if endpoint is not None:
            handler = endpoint.plain.get(method)
            return None if handler is None else handler()
        segments = _segments(path)
        if len(segments) > MAX_PATH_SEGMENTS:
            return None
        params: dict[str, str] = {}
        endpoint = _walk(self._tree, segments, 0, params)
        if endpoint is None:
            return None
        call = endpoint.direct.get(method)
        if call is None:
            return None
        try:
            return call(params)
        except Exception as error:  # a Path value that does not convert: answered as usual
            return _raised(error)

    def _insert(self, path: str, endpoint: Endpoint) -> None:
        node = self._tree
        for segment in _segments(path):
            if segment.startswith("{*"):
                name = segment[2:-1]
                if node.catch_all is not None and node.catch_all[0] != name:
                    raise RouteError(f"route {path!r}: conflicting catch-all names "
                                     f"{node.catch_all[0]!r} and {name!r}")
                node.catch_all = (name, endpoint)
                return
            if segment.startswith("{"):
                name = segment[1:-1]
                if node.param is None:
                    node.param = (name, _Node())
                elif node.param[0] != name:
                    raise RouteError(f"route {path!r}: parameter {name!r} conflicts with "
                                     f"{node.param[0]!r} at the same position")
                node = node.param[1]
            else:
                node = node.static.setdefault(segment, _Node())
        node.endpoint = endpoint

    def match(self, path: str) -> tuple[Endpoint, dict[str, str]] | None:
        endpoint = self._static.get(path)
        if endpoint is not None:
            return endpoint, {}
        segments = _segments(path)
        if len(segments) > MAX_PATH_SEGMENTS:
            return None
        params: dict[str, str] = {}
        found = _walk(self._tree, segments, 0, params)
        return (found, params) if found is not None else None

    async def _dispatch(self, request: Request) -> Response:
        request.app_state = self.state
        found = self.match(request.path)
        if found is None:
            if self._trailing_slash == "redirect" and request.path != "/":
                other = request.path[:-1] if request.path.endswith("/") else request.path + "/"
                if self.match(other) is not None:
                    location = other + ("?" + request.query_string if request.query_string
                                        else "")
                    return Response(b"", PERMANENT_REDIRECT, [("location", location)])
            return await self._fallback(request)
        endpoint, request.path_params = found
        service = endpoint.services.get(request.method)
        if service is None:
            if endpoint.fallback is not None:
                return await endpoint.fallback(request)
            return error_response(METHOD_NOT_ALLOWED, f"method {request.method} is not allowed "
                                  f"for {endpoint.pattern}; allowed: {endpoint.allow}",
                                  [("allow", endpoint.allow)])
        return await service(request)

    async def __call__(self, request: Request, responder: Responder) -> None:
        if not self._layered:
            # Without router layers: a static route's plain handler is awaited directly.
            request.app_state = self.state
            endpoint = self._static.get(request.path)
            plain = endpoint.plain.get(request.method) if endpoint is not None else None
            if plain is not None:
                await self.respond(plain(), request.method, request.raw_path, responder)
                return
            if endpoint is None and self._direct_routes:
                found = self.match(request.path)
                if found is not None:
                    call = found[0].direct.get(request.method)
                    if call is not None:
                        try:
                            started = call(found[1])
                        except Exception as error:
                            started = _raised(error)
                        await self.respond(started, request.method, request.raw_path,
                                           responder)
                        return
            await self.respond(self._dispatch(request), request.method, request.raw_path,
                               responder)
            return
        await self.respond(self.service(request), request.method, request.raw_path, responder)

    async def respond(self, result: Awaitable[Any], method: str, raw_path: str,
                      responder: Responder) -> None:
        """Await a handler's (or service's) result and send it: a `str` without a Response
        object, exceptions that carry a response as it, anything else as a logged 500."""
        response: Response | None = None
        text = b""
        try:
            value = await result
            if type(value) is str:
                text = value.encode()
            else:
                response = value if type(value) is Response else into_response(value)
        except ResponseException as carried:
            response = carried.response
        except ProtocolError:
            raise
        except Exception:
            logger.exception("handler failed on %s %s", method, raw_path)
            response = error_response(INTERNAL_ERROR, "internal server error")
        if response is None:
            await responder.send_whole(OK, TEXT_HEADERS, text)
        elif type(response) is Response:  # the common case, one coroutine fewer
            await responder.send_whole(response.status, response.headers, response.body)
        else:
            await response.send(responder)


def _walk(node: _Node, segments: list[str], index: int,
          params: dict[str, str]) -> Endpoint | None:
    if index == len(segments):
        return node.endpoint
    segment = segments[index]
    child = node.static.get(segment)
    if child is not None:
        found = _walk(child, segments, index + 1, params)
        if found is not None:
            return found
    if node.param is not None and segment:
        name, child = node.param
        params[name] = segment
        found = _walk(child, segments, index + 1, params)
        if found is not None:
            return found
        del params[name]
    if node.catch_all is not None:
        rest = "/".join(segments[index:])
        if rest:
            name, endpoint = node.catch_all
            params[name] = rest
            return endpoint
    return None


def _has_direct(node: _Node) -> bool:
    """Does any route under `node` have a handler the driver may call directly?"""
    if node.endpoint is not None and node.endpoint.direct:
        return True
    if node.catch_all is not None and node.catch_all[1].direct:
        return True
    if node.param is not None and _has_direct(node.param[1]):
        return True
    return any(_has_direct(child) for child in node.static.values())


async def _raised(error: Exception) -> Any:
    raise error


async def _not_found(request: Request) -> Response:
    return error_response(NOT_FOUND, f"no route for {request.path}")
