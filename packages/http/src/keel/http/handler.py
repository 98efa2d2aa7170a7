"""Turning an async handler function into a Service, once, when its route is registered.

Why at registration: the signature, the annotations and every extractor's preparation
(decoders, field lists) are worked out once; a request then runs a short list of bound
coroutine functions. Misplaced body consumers are a registration error, not a runtime one.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Awaitable, Callable
from typing import Any

from keel.http.errors import RouteError
from keel.http.extract import (
    IMPLICIT_EXTRACTORS,
    ExtractFunction,
    Extractor,
    Parameter,
    PathConversion,
    PathExtractor,
)
from keel.http.request import Request
from keel.http.response import Response, into_response

Service = Callable[[Request], Awaitable[Response]]
Handler = Callable[..., Awaitable[Any]]
# Matched path parameters -> the handler's (unstarted) coroutine, arguments converted.
DirectCall = Callable[[dict[str, str]], Awaitable[Any]]


def _extractor_for(name: str, annotation: Any, handler_name: str) -> tuple[Extractor, Any]:
    if typing.get_origin(annotation) is typing.Annotated:
        inner, *metadata = typing.get_args(annotation)
        for item in metadata:
            if isinstance(item, Extractor):
                return item, inner
    implicit = IMPLICIT_EXTRACTORS.get(annotation)
    if implicit is not None:
        return implicit, annotation
    raise RouteError(f"handler {handler_name}: parameter '{name}' has no extractor; annotate "
                     "it as Path[...], Query[...], Json[...], Form[...], Header[...], "
                     "Cookie[...], State[...], Body[...], Request, Headers or "
                     "Annotated[T, <your Extractor>]")


def _parameters(handler: Handler) -> list[tuple[Extractor, Parameter]]:
    """Each parameter's extractor and what it learns about the parameter; checked."""
    name = getattr(handler, "__qualname__", repr(handler))
    if not inspect.iscoroutinefunction(handler):
        raise RouteError(f"handler {name} must be an async function (async def)")
    try:
        hints = typing.get_type_hints(handler, include_extras=True)
    except NameError as error:
        raise RouteError(f"handler {name}: cannot resolve an annotation: {error}") from None
    signature = inspect.signature(handler)
    found: list[tuple[Extractor, Parameter]] = []
    parameters = list(signature.parameters.values())
    for index, parameter in enumerate(parameters):
        if parameter.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            raise RouteError(f"handler {name}: *args and **kwargs cannot be extracted")
        if parameter.name not in hints:
            raise RouteError(f"handler {name}: parameter '{parameter.name}' has no annotation")
        extractor, inner = _extractor_for(parameter.name, hints[parameter.name], name)
        if extractor.consumes_body and index != len(parameters) - 1:
            raise RouteError(f"handler {name}: parameter '{parameter.name}' consumes the "
                             "request body, so it must be the last parameter")
        default = parameter.default if parameter.default is not inspect.Parameter.empty \
            else Parameter.__dataclass_fields__["default"].default
        found.append((extractor, Parameter(parameter.name, inner, default, name)))
    return found


def handler_service(handler: Handler) -> Service:
    """A Service that extracts `handler`'s arguments, awaits it and converts its result."""
    return _compose(handler, [extractor.bind(parameter)
                              for extractor, parameter in _parameters(handler)])


def direct_call(handler: Handler) -> DirectCall | None:
    """For a handler whose every parameter is a `Path` value: a function from the matched
    path parameters to the handler's coroutine (None for any other handler).

    Why: the server then runs such a handler with no Request and no Service; the arguments
    go through the very conversion the Path extractor uses, so a bad value is the same 400."""
    conversions: list[PathConversion] = []
    for extractor, parameter in _parameters(handler):
        if type(extractor) is not PathExtractor:
            return None
        conversions.append(extractor.bind_path(parameter))
    if not conversions:
        def call_without_arguments(params: dict[str, str]) -> Awaitable[Any]:
            return handler()
        return call_without_arguments
    if len(conversions) == 1:
        convert = conversions[0]

        def call_with_one(params: dict[str, str]) -> Awaitable[Any]:
            return handler(convert(params))
        return call_with_one

    def call_with_many(params: dict[str, str]) -> Awaitable[Any]:
        return handler(*[convert(params) for convert in conversions])
    return call_with_many


def _compose(handler: Handler, bound: list[ExtractFunction]) -> Service:
    if not bound:
        async def service_no_arguments(request: Request) -> Response:
            result = await handler()
            return result if type(result) is Response else into_response(result)
        return service_no_arguments
    if len(bound) == 1:
        extract = bound[0]

        async def service_one_argument(request: Request) -> Response:
            result = await handler(await extract(request))
            return result if type(result) is Response else into_response(result)
        return service_one_argument

    async def service(request: Request) -> Response:
        arguments = [await extract(request) for extract in bound]
        result = await handler(*arguments)
        return result if type(result) is Response else into_response(result)
    return service
