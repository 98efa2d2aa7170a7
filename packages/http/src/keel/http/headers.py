"""Read-only views over request headers, query strings and cookies.

Why views: the server keeps headers as the raw (lowercased name, value) byte pairs the parser
produced; a view decodes only what a handler asks for, so requests that never look at their
headers pay nothing.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from http.cookies import CookieError, SimpleCookie
from urllib.parse import parse_qsl

MAX_QUERY_FIELDS = 1000
MAX_COOKIES = 200
BAD_REQUEST = 400


class Headers(Mapping[str, str]):
    """Case-insensitive header lookup; `get_all` for repeated names."""

    __slots__ = ("_raw",)

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        self._raw = raw

    @classmethod
    def from_pairs(cls, pairs: list[tuple[str, str]]) -> Headers:
        return cls([(name.lower().encode("latin-1"), value.encode("latin-1"))
                    for name, value in pairs])

    @property
    def raw(self) -> list[tuple[bytes, bytes]]:
        return self._raw

    def __getitem__(self, name: str) -> str:
        key = name.lower().encode("latin-1")
        for raw_name, value in self._raw:
            if raw_name == key:
                return value.decode("latin-1")
        raise KeyError(name)

    def get_all(self, name: str) -> list[str]:
        key = name.lower().encode("latin-1")
        return [value.decode("latin-1") for raw_name, value in self._raw if raw_name == key]

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = name.lower().encode("latin-1")
        return any(raw_name == key for raw_name, _ in self._raw)

    def __iter__(self) -> Iterator[str]:
        seen: set[bytes] = set()
        for raw_name, _ in self._raw:
            if raw_name not in seen:
                seen.add(raw_name)
                yield raw_name.decode("latin-1")

    def __len__(self) -> int:
        return len({raw_name for raw_name, _ in self._raw})

    def __repr__(self) -> str:
        return f"Headers({[(n.decode('latin-1'), v.decode('latin-1')) for n, v in self._raw]})"


def parse_query(text: str) -> list[tuple[str, str]]:
    """Name/value pairs of a query string or form body; too many fields answer 400."""
    try:
        return parse_qsl(text, keep_blank_values=True, max_num_fields=MAX_QUERY_FIELDS)
    except ValueError as error:
        from keel.http.errors import HTTPException

        raise HTTPException(BAD_REQUEST, f"query or form has more than {MAX_QUERY_FIELDS} "
                            f"fields: {error}") from None


class QueryParams(Mapping[str, str]):
    """Decoded query string: the first value per name, `get_all` for repeats."""

    __slots__ = ("_pairs",)

    def __init__(self, query_string: str) -> None:
        self._pairs = parse_query(query_string) if query_string else []

    def __getitem__(self, name: str) -> str:
        for key, value in self._pairs:
            if key == name:
                return value
        raise KeyError(name)

    def get_all(self, name: str) -> list[str]:
        return [value for key, value in self._pairs if key == name]

    def multi(self) -> dict[str, str | list[str]]:
        """Names with one value map to it, repeated names to the list of values."""
        result: dict[str, str | list[str]] = {}
        for key, value in self._pairs:
            existing = result.get(key)
            if existing is None:
                result[key] = value
            elif isinstance(existing, list):
                existing.append(value)
            else:
                result[key] = [existing, value]
        return result

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys(key for key, _ in self._pairs))

    def __len__(self) -> int:
        return len({key for key, _ in self._pairs})


def parse_cookies(headers: Headers) -> dict[str, str]:
    """Cookies from every Cookie header; malformed ones are skipped, not fatal."""
    cookies: dict[str, str] = {}
    for header in headers.get_all("cookie"):
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(header)
        except CookieError:
            continue
        for name, morsel in jar.items():
            if len(cookies) >= MAX_COOKIES:
                return cookies
            cookies[name] = morsel.value
    return cookies
