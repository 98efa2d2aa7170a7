"""A keel.http application whose handlers await Go functions through keel.ffi.

Why one module for the demo and the load test: both must exercise exactly the same routes.
The Go side is keel.ffi's own example library (packages/ffi/examples/hashing), built with
keel.ffi's build functions into ~/.cache/keel/ffi/<hash of its inputs> and reused while its
sources are unchanged.
"""

from __future__ import annotations

import sys
from pathlib import Path as FilePath
from typing import Any

from keel.ffi.build import build_cached
from keel.ffi.errors import GoError
from keel.http import Body, HTTPException, Path, Query, Router

REPOSITORY = FilePath(__file__).resolve().parents[2]
GO_EXAMPLE = REPOSITORY / "packages" / "ffi" / "examples" / "hashing"
# |value| above this squares past int64 (Go would wrap around): refused with 400.
LARGEST_SQUARABLE = 3_037_000_499
SQUARE_DELAY_MS = 1  # long enough that Go parks the goroutine on a timer and wakes it
HTTP_BAD_REQUEST = 400
MAX_HASHED_BODY = 64 * 1024  # keel.http's own limit is larger; this route needs no more


def open_library() -> Any:
    """Build (or reuse) the example Go library and open it; the caller closes it."""
    built = build_cached(GO_EXAMPLE)
    if str(GO_EXAMPLE) not in sys.path:
        sys.path.insert(0, str(GO_EXAMPLE))
    from hashing_binding import HashingLibrary  # type: ignore[import-not-found]

    return HashingLibrary.open(built)


def make_app(library: Any) -> Router:
    """The routes; every handler awaits (or calls) the Go library."""
    app = Router()

    @app.get("/hash/{text}")
    async def hash_text(text: Path[str]) -> dict[str, object]:
        digest = await library.hash_async(text.encode())
        return {"text": text, "fnv1a64": f"{digest:016x}"}

    @app.post("/hash")
    async def hash_body(body: Body[bytes]) -> dict[str, object]:
        if len(body) > MAX_HASHED_BODY:
            raise HTTPException(HTTP_BAD_REQUEST,
                                f"body of {len(body)} bytes; at most {MAX_HASHED_BODY}")
        digest = await library.hash_async(body)
        return {"bytes": len(body), "fnv1a64": f"{digest:016x}"}

    @app.get("/square/{value}")
    async def square(value: Path[int]) -> dict[str, int]:
        if abs(value) > LARGEST_SQUARABLE:
            raise HTTPException(HTTP_BAD_REQUEST,
                                f"value {value} is out of range; |value| <= {LARGEST_SQUARABLE}")
        return {"value": value, "square": await library.slow_square(value, SQUARE_DELAY_MS)}

    @app.get("/record")
    async def record(line: Query[str]) -> dict[str, object]:
        try:
            parsed = await library.parse_record_async(line)
        except GoError as error:
            raise HTTPException(HTTP_BAD_REQUEST, error.go_message) from None
        return {"record": parsed, "description": library.describe(parsed)}

    return app
