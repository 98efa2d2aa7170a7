"""Extractors: handler parameters filled from the request by their annotations.

Why `Annotated`: `user_id: Path[int]` is `Annotated[int, PathExtractor]`, so mypy sees an `int`
while the router sees how to produce it. Every extractor, built-in or custom, follows one
protocol: `consumes_body` and `bind(parameter)` which returns the per-parameter coroutine
function, prepared once when the route is registered (decoders are built there, not per
request).
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, Protocol, TypeVar, runtime_checkable

import msgspec

from keel.http.errors import HTTPException
from keel.http.headers import Headers, parse_query
from keel.http.request import Request

T = TypeVar("T")

BAD_REQUEST = 400
UNSUPPORTED_MEDIA_TYPE = 415
UNPROCESSABLE = 422
INTERNAL_ERROR = 500

ExtractFunction = Callable[[Request], Awaitable[Any]]
# Matched path parameters -> one handler argument (PathExtractor.bind_path).
PathConversion = Callable[[dict[str, str]], Any]
_MISSING: Any = dataclasses.MISSING


@dataclass(frozen=True, slots=True)
class Parameter:
    """What an extractor learns about the handler parameter it fills."""

    name: str
    annotation: Any  # the type inside Annotated[...], e.g. int for Path[int]
    default: Any = _MISSING
    handler_name: str = ""

    @property
    def has_default(self) -> bool:
        return self.default is not _MISSING


@runtime_checkable
class Extractor(Protocol):
    """The one protocol for extractors; put an instance in `Annotated[T, instance]`."""

    consumes_body: bool

    def bind(self, parameter: Parameter) -> ExtractFunction:
        """Prepare for `parameter` once; the result runs per request."""
        ...


def _is_structured(annotation: Any) -> bool:
    """Types filled from a whole mapping (all path params, all query fields)."""
    origin = typing.get_origin(annotation) or annotation
    return (isinstance(origin, type) and (issubclass(origin, msgspec.Struct | dict)
                                          or dataclasses.is_dataclass(origin))) or \
        typing.is_typeddict(origin)


def _sequence_fields(annotation: Any) -> frozenset[str]:
    """Fields that take several values (list[str] from ?tag=a&tag=b)."""
    try:
        info = msgspec.inspect.type_info(annotation)
    except (TypeError, ValueError):
        return frozenset()
    fields = getattr(info, "fields", ())
    sequence_kinds = (msgspec.inspect.ListType, msgspec.inspect.SetType,
                      msgspec.inspect.FrozenSetType, msgspec.inspect.VarTupleType)
    return frozenset(field.encode_name for field in fields
                     if isinstance(field.type, sequence_kinds))


def _is_sequence(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    return origin in (list, set, frozenset, tuple)


def _convert(value: Any, annotation: Any, what: str, status: int) -> Any:
    if annotation is str and isinstance(value, str):
        return value
    try:
        return msgspec.convert(value, annotation, strict=False)
    except msgspec.ValidationError as error:
        raise HTTPException(status, f"{what}: {error}") from None


def _mapping_from_pairs(pairs: list[tuple[str, str]], sequences: frozenset[str],
                        ) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in sequences:
            result.setdefault(key, []).append(value)
        elif key in result:
            existing = result[key]
            result[key] = [*existing, value] if isinstance(existing, list) else [existing, value]
        else:
            result[key] = value
    return result


class PathExtractor:
    """`{name}` segments: by parameter name, the only one, or all into a struct."""

    consumes_body = False

    def bind_path(self, parameter: Parameter) -> PathConversion:
        """The conversion from the matched path parameters, synchronous: what `bind`'s
        coroutine does, offered on its own so the router can call a handler whose every
        argument comes from the path without building a Request (the same function runs
        either way, so both paths answer alike, errors included)."""
        annotation, name = parameter.annotation, parameter.name
        if _is_structured(annotation):
            def convert_all(params: dict[str, str]) -> Any:
                return _convert(params, annotation, "path parameters", BAD_REQUEST)
            return convert_all

        def convert_one(params: dict[str, str]) -> Any:
            value = params.get(name)
            if value is None:
                if len(params) != 1:
                    raise HTTPException(INTERNAL_ERROR, f"handler parameter '{name}' names no "
                                        f"path parameter of this route ({sorted(params)})")
                value = next(iter(params.values()))
            return _convert(value, annotation, f"path parameter '{name}'", BAD_REQUEST)
        return convert_one

    def bind(self, parameter: Parameter) -> ExtractFunction:
        convert = self.bind_path(parameter)

        async def extract(request: Request) -> Any:
            return convert(request.path_params)
        return extract


class QueryExtractor:
    """The query string: one field by parameter name, or all fields into a struct."""

    consumes_body = False

    def bind(self, parameter: Parameter) -> ExtractFunction:
        annotation, name = parameter.annotation, parameter.name
        if _is_structured(annotation):
            sequences = _sequence_fields(annotation)

            async def extract_all(request: Request) -> Any:
                pairs = parse_query(request.query_string)
                return _convert(_mapping_from_pairs(pairs, sequences), annotation,
                                "query string", BAD_REQUEST)
            return extract_all
        many = _is_sequence(annotation)

        async def extract_one(request: Request) -> Any:
            values = request.query.get_all(name)
            if not values:
                if parameter.has_default:
                    return parameter.default
                raise HTTPException(BAD_REQUEST, f"query parameter '{name}' is missing")
            return _convert(values if many else values[0], annotation,
                            f"query parameter '{name}'", BAD_REQUEST)
        return extract_one


class HeaderExtractor:
    """One header by parameter name (`user_agent` reads User-Agent)."""

    consumes_body = False

    def __init__(self, name: str | None = None) -> None:
        self.name = name

    def bind(self, parameter: Parameter) -> ExtractFunction:
        header = (self.name or parameter.name.replace("_", "-")).lower()
        annotation = parameter.annotation
        many = _is_sequence(annotation)

        async def extract(request: Request) -> Any:
            values = request.headers.get_all(header)
            if not values:
                if parameter.has_default:
                    return parameter.default
                raise HTTPException(BAD_REQUEST, f"header '{header}' is missing")
            return _convert(values if many else values[0], annotation, f"header '{header}'",
                            BAD_REQUEST)
        return extract


class HeadersExtractor:
    consumes_body = False

    def bind(self, parameter: Parameter) -> ExtractFunction:
        async def extract(request: Request) -> Headers:
            return request.headers
        return extract


class CookieExtractor:
    """One cookie by parameter name, or all cookies as a dict."""

    consumes_body = False

    def __init__(self, name: str | None = None, every: bool = False) -> None:
        self.name = name
        self.every = every

    def bind(self, parameter: Parameter) -> ExtractFunction:
        if self.every:
            async def extract_all(request: Request) -> dict[str, str]:
                return request.cookies
            return extract_all
        name = self.name or parameter.name
        annotation = parameter.annotation

        async def extract(request: Request) -> Any:
            value = request.cookies.get(name)
            if value is None:
                if parameter.has_default:
                    return parameter.default
                raise HTTPException(BAD_REQUEST, f"cookie '{name}' is missing")
            return _convert(value, annotation, f"cookie '{name}'", BAD_REQUEST)
        return extract


class StateExtractor:
    """The router's shared state, checked against the annotated type."""

    consumes_body = False

    def bind(self, parameter: Parameter) -> ExtractFunction:
        expected = typing.get_origin(parameter.annotation) or parameter.annotation

        async def extract(request: Request) -> Any:
            state = request.app_state
            if isinstance(expected, type) and not isinstance(state, expected):
                raise HTTPException(INTERNAL_ERROR, f"handler parameter '{parameter.name}' "
                                    f"wants state of type {expected.__name__}, the router has "
                                    f"{type(state).__name__}; call Router.with_state()")
            return state
        return extract


class RequestExtractor:
    """The Request itself; it can read the body, so it must come last."""

    consumes_body = True

    def bind(self, parameter: Parameter) -> ExtractFunction:
        async def extract(request: Request) -> Request:
            return request
        return extract


def _check_content_type(request: Request, expected: tuple[str, ...], what: str) -> None:
    content_type = request.headers.get("content-type", "")
    media = content_type.split(";", 1)[0].strip().lower()
    if not any(media == item or (item.startswith("+") and media.endswith(item))
               for item in expected):
        raise HTTPException(UNSUPPORTED_MEDIA_TYPE, f"{what} needs Content-Type "
                            f"{' or '.join(expected)}, got {content_type or 'none'!r}")


class JsonExtractor:
    """A JSON body decoded and validated by msgspec into the annotated type."""

    consumes_body = True

    def bind(self, parameter: Parameter) -> ExtractFunction:
        decoder = msgspec.json.Decoder(parameter.annotation)

        async def extract(request: Request) -> Any:
            _check_content_type(request, ("application/json", "+json"), "a JSON body")
            body = await request.body()
            try:
                return decoder.decode(body)
            except msgspec.ValidationError as error:
                raise HTTPException(UNPROCESSABLE, f"JSON body: {error}") from None
            except msgspec.DecodeError as error:
                raise HTTPException(BAD_REQUEST, f"JSON body is malformed: {error}") from None
        return extract


class FormExtractor:
    """An application/x-www-form-urlencoded body into the annotated type."""

    consumes_body = True

    def bind(self, parameter: Parameter) -> ExtractFunction:
        annotation = parameter.annotation
        sequences = _sequence_fields(annotation)

        async def extract(request: Request) -> Any:
            _check_content_type(request, ("application/x-www-form-urlencoded",), "a form")
            body = await request.body()
            try:
                text = body.decode()
            except UnicodeDecodeError as error:
                raise HTTPException(BAD_REQUEST, f"form body is not UTF-8: {error}") from None
            pairs = parse_query(text)
            return _convert(_mapping_from_pairs(pairs, sequences), annotation, "form body",
                            UNPROCESSABLE)
        return extract


class BodyExtractor:
    """The raw body: bytes, str, or an async iterator of chunks (streamed, not buffered)."""

    consumes_body = True

    def bind(self, parameter: Parameter) -> ExtractFunction:
        annotation = parameter.annotation
        origin = typing.get_origin(annotation) or annotation
        if origin is bytes:
            async def extract_bytes(request: Request) -> bytes:
                return await request.body()
            return extract_bytes
        if origin is str:
            async def extract_text(request: Request) -> str:
                try:
                    return (await request.body()).decode()
                except UnicodeDecodeError as error:
                    raise HTTPException(BAD_REQUEST, f"body is not UTF-8: {error}") from None
            return extract_text

        async def extract_stream(request: Request) -> AsyncIterator[bytes]:
            return request.stream()
        return extract_stream


Path = Annotated[T, PathExtractor()]
Query = Annotated[T, QueryExtractor()]
Header = Annotated[T, HeaderExtractor()]
Cookie = Annotated[T, CookieExtractor()]
Cookies = Annotated[dict[str, str], CookieExtractor(every=True)]
Json = Annotated[T, JsonExtractor()]
Form = Annotated[T, FormExtractor()]
State = Annotated[T, StateExtractor()]
Body = Annotated[T, BodyExtractor()]
BodyStream = Annotated[AsyncIterator[bytes], BodyExtractor()]

# Plain annotations that need no Annotated wrapper.
IMPLICIT_EXTRACTORS: dict[Any, Extractor] = {
    Request: RequestExtractor(),
    Headers: HeadersExtractor(),
}
