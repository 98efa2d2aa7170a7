"""A keel.runtime server cancelled from outside leaves no kernel operation behind."""

from __future__ import annotations

import pytest

import keel.runtime as kr
from keel.http import Router, Server
from keel.runtime.sync import Event

app = Router()


@app.get("/")
async def index() -> str:
    return "hi"


@pytest.mark.parametrize("driver", ["io_uring", "epoll"])
def test_serve_cancelled_by_its_task_group_closes_the_listener(driver: str) -> None:
    async def main() -> None:
        server = Server(app, host="127.0.0.1", port=0, backend="runtime")
        ready = Event()
        async with kr.TaskGroup() as group:
            group.spawn(server.serve, lambda addresses: ready.set())
            await ready.wait()
            raise ValueError("the body failed")

    # strict: an accept still armed in the kernel after shutdown would be reported.
    with pytest.raises(ExceptionGroup) as raised:
        kr.run(main, driver=driver, strict=True)
    assert [type(error) for error in raised.value.exceptions] == [ValueError]
    assert not getattr(raised.value, "__notes__", None)
