"""An Axum-style typed HTTP framework and a fast HTTP/1.1 server.

```python
from keel.http import Router, Path, Json, serve

app = Router()

@app.get("/users/{user_id}")
async def show(user_id: Path[int]) -> dict[str, int]:
    return {"id": user_id}

serve(app, port=8000)
```
"""

from importlib.metadata import version as _version

from keel.http.asgi import AsgiAdapter, KeelAsgi, to_asgi
from keel.http.config import Limits, ServerConfig, Timeouts
from keel.http.errors import (
    ClientDisconnected,
    HttpError,
    HTTPException,
    ProtocolError,
    ResponseError,
    ResponseException,
    RouteError,
)
from keel.http.extract import (
    Body,
    BodyStream,
    Cookie,
    Cookies,
    Extractor,
    Form,
    Header,
    Json,
    Parameter,
    Path,
    Query,
    State,
)
from keel.http.headers import Headers, QueryParams
from keel.http.middleware.base import Layer, Next, compose, from_fn
from keel.http.middleware.layers import (
    BodyLimitLayer,
    CompressionLayer,
    ConcurrencyLimitLayer,
    CorsLayer,
    RequestIdLayer,
    TimeoutLayer,
    TraceLayer,
)
from keel.http.request import Request
from keel.http.response import (
    FileResponse,
    Responder,
    Response,
    StreamingResponse,
    into_response,
)
from keel.http.routing import App, MethodRouter, Router, any_method, delete, get, patch, post, put
from keel.http.server.run import serve
from keel.http.server.server import Server, ServerError
from keel.http.testing import TestClient

__version__: str = _version("keel-http")

__all__ = [
    "App",
    "AsgiAdapter",
    "Body",
    "BodyLimitLayer",
    "BodyStream",
    "ClientDisconnected",
    "CompressionLayer",
    "ConcurrencyLimitLayer",
    "Cookie",
    "Cookies",
    "CorsLayer",
    "Extractor",
    "FileResponse",
    "Form",
    "HTTPException",
    "Header",
    "Headers",
    "HttpError",
    "Json",
    "KeelAsgi",
    "Layer",
    "Limits",
    "MethodRouter",
    "Next",
    "Parameter",
    "Path",
    "ProtocolError",
    "Query",
    "QueryParams",
    "Request",
    "RequestIdLayer",
    "Responder",
    "Response",
    "ResponseError",
    "ResponseException",
    "RouteError",
    "Router",
    "Server",
    "ServerConfig",
    "ServerError",
    "State",
    "StreamingResponse",
    "TestClient",
    "TimeoutLayer",
    "Timeouts",
    "TraceLayer",
    "__version__",
    "any_method",
    "compose",
    "delete",
    "from_fn",
    "get",
    "into_response",
    "patch",
    "post",
    "put",
    "serve",
    "to_asgi",
]
