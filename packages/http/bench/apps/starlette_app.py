"""The same two routes in Starlette (served by uvicorn and by granian)."""

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route


async def plaintext(request: Request) -> PlainTextResponse:
    return PlainTextResponse("Hello, World!")


async def json_item(request: Request) -> JSONResponse:
    return JSONResponse({"id": int(request.path_params["item_id"]), "message": "Hello, World!"})


app = Starlette(routes=[Route("/plaintext", plaintext),
                        Route("/json/{item_id:int}", json_item)])
