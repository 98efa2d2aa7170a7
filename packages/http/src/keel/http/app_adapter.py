"""What the server accepts as an application.

Why: `keel http serve module:app` must take a keel Router, an ASGI 3 app (Starlette, FastAPI)
or a bare `async (request, responder)` callable, without the user saying which.
"""

from __future__ import annotations

import inspect
from typing import Any, cast

from keel.http.asgi import AsgiAdapter
from keel.http.routing import App, Router
from keel.http.server.driver import ConnectionApp

ASGI_PARAMETER_COUNT = 3


def is_asgi(app: Any) -> bool:
    """ASGI 3 apps are awaitables taking (scope, receive, send)."""
    target = app if inspect.isfunction(app) or inspect.ismethod(app) else \
        getattr(app, "__call__", None)  # noqa: B004 - we need the signature, not callability
    if target is None:
        return False
    try:
        parameters = inspect.signature(target).parameters
    except (TypeError, ValueError):
        return False
    positional = [p for p in parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) == ASGI_PARAMETER_COUNT


def as_connection_app(app: Any) -> ConnectionApp:
    if isinstance(app, Router):
        return app.build()
    if isinstance(app, App):
        return app
    if is_asgi(app):
        return AsgiAdapter(app)
    if callable(app):
        return cast(ConnectionApp, app)
    raise TypeError(f"cannot serve {type(app).__name__}: expected a keel Router, an ASGI 3 "
                    "application or an async (request, responder) callable")
