"""The sans-IO connection core: parsing, framing, keep-alive rules, limits."""

from __future__ import annotations

import pytest

from keel.http import Limits, ProtocolError
from keel.http.errors import ResponseError
from keel.http.protocol.core import (
    CONNECTION_CLOSED,
    END_OF_MESSAGE,
    NEED_DATA,
    HttpConnection,
    RequestHead,
)


def events(connection: HttpConnection) -> list[object]:
    found = []
    while True:
        event = connection.next_event()
        if event is NEED_DATA or event is CONNECTION_CLOSED:
            return found
        found.append(event)


def test_simple_get_yields_head_and_end() -> None:
    connection = HttpConnection()
    connection.receive_data(b"GET /a?b=1 HTTP/1.1\r\nHost: x\r\nX-Thing: 1\r\n\r\n")
    head, end = events(connection)
    assert isinstance(head, RequestHead)
    assert (head.method, head.target, head.http_version) == ("GET", b"/a?b=1", "1.1")
    assert head.headers == [(b"host", b"x"), (b"x-thing", b"1")]
    assert head.keep_alive and end is END_OF_MESSAGE


def test_pipelined_requests_arrive_in_order() -> None:
    connection = HttpConnection()
    connection.receive_data(b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\n")
    found = events(connection)
    assert [e.target for e in found if isinstance(e, RequestHead)] == [b"/1", b"/2"]


def test_chunked_body_is_decoded() -> None:
    connection = HttpConnection()
    connection.receive_data(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                            b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
    head, *rest = events(connection)
    assert isinstance(head, RequestHead) and head.chunked
    assert b"".join(e for e in rest if isinstance(e, bytes)) == b"abcde"
    assert rest[-1] is END_OF_MESSAGE


def _serve(connection: HttpConnection, data: bytes) -> RequestHead:
    connection.receive_data(data)
    head = connection.next_event()
    assert isinstance(head, RequestHead)
    connection.begin_request(head)
    return head


def test_response_with_body_has_length_date_and_server() -> None:
    connection = HttpConnection()
    _serve(connection, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    wire = connection.start_response(200, [("content-type", "text/plain")], body=b"hi")
    head, _, body = wire.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"content-length: 2" in head and b"date: " in head and b"server: keel" in head
    assert body == b"hi" and connection.keep_alive


def test_streaming_response_is_chunked_on_http11_and_close_delimited_on_http10() -> None:
    connection = HttpConnection()
    _serve(connection, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert b"transfer-encoding: chunked" in connection.start_response(200, [])
    assert connection.body_bytes(b"abc") == b"3\r\nabc\r\n"
    assert connection.end_response() == b"0\r\n\r\n"

    old = HttpConnection()
    _serve(old, b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    head = old.start_response(200, [])
    assert b"chunked" not in head and b"connection: close" in head
    assert old.body_bytes(b"abc") == b"abc" and not old.keep_alive


def test_head_keeps_length_but_sends_no_body() -> None:
    connection = HttpConnection()
    _serve(connection, b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
    wire = connection.start_response(200, [], body=b"hello")
    assert wire.endswith(b"\r\n\r\n") and b"content-length: 5" in wire


@pytest.mark.parametrize("status", [204, 304])
def test_no_body_statuses(status: int) -> None:
    connection = HttpConnection()
    _serve(connection, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    wire = connection.start_response(status, [])
    assert wire.endswith(b"\r\n\r\n") and b"content-length" not in wire
    assert connection.body_bytes(b"x") == b""


@pytest.mark.parametrize(("request_bytes", "keep_alive"), [
    (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", True),
    (b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", False),
    (b"GET / HTTP/1.0\r\n\r\n", False),
    (b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", True),
])
def test_keep_alive_rules(request_bytes: bytes, keep_alive: bool) -> None:
    connection = HttpConnection()
    _serve(connection, request_bytes)
    wire = connection.start_response(200, [], body=b"")
    assert connection.keep_alive is keep_alive
    assert (b"connection: close" in wire) is (not keep_alive)


def test_application_connection_close_ends_the_connection() -> None:
    connection = HttpConnection()
    _serve(connection, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    connection.start_response(200, [("Connection", "close")], body=b"")
    assert not connection.keep_alive


def test_continue_is_offered_once_and_only_when_expected() -> None:
    connection = HttpConnection()
    _serve(connection, b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                       b"Content-Length: 3\r\n\r\n")
    assert connection.continue_bytes() == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert connection.continue_bytes() == b""


def test_unread_expected_body_closes_the_connection() -> None:
    connection = HttpConnection()
    _serve(connection, b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                       b"Content-Length: 3\r\n\r\n")
    connection.start_response(413, [], body=b"")
    assert not connection.keep_alive


def test_response_splitting_is_refused() -> None:
    connection = HttpConnection()
    _serve(connection, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    with pytest.raises(ResponseError, match="CR, LF"):
        connection.start_response(200, [("x", "a\r\nset-cookie: evil=1")], body=b"")


def first_error(data: bytes, limits: Limits | None = None) -> ProtocolError:
    connection = HttpConnection(limits)
    connection.receive_data(data)
    found = [e for e in events(connection) if isinstance(e, ProtocolError)]
    assert found, f"{data!r} was accepted"
    assert not connection.keep_alive
    return found[0]


SMUGGLING_AND_MALFORMED = [
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n"
    b"0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1x\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcdef\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n folded\r\n\r\n",
    b"GET / HTTP/1.1\rHost: x\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\rX: y\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\nX: y\r\n\r\n",
    b"GET / HTTP/1.1\r\nHo st: x\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost : x\r\n\r\n",
    b"G\x00T / HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /\x7f HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET / HTTP/1.1\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    b"GET / HTTP/9.9\r\nHost: x\r\n\r\n",
    b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03",
]


@pytest.mark.parametrize("data", SMUGGLING_AND_MALFORMED)
def test_malformed_and_smuggling_shapes_are_rejected(data: bytes) -> None:
    assert 400 <= first_error(data).status < 600


def test_unknown_transfer_coding_is_501() -> None:
    error = first_error(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n")
    assert error.status == 501


def test_limits_map_to_414_431_413() -> None:
    limits = Limits(max_request_line=64, max_header_bytes=256, max_header_count=4,
                    max_body_bytes=10)
    assert first_error(b"GET /" + b"a" * 100 + b" HTTP/1.1\r\n", limits).status == 414
    assert first_error(b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"v" * 300 + b"\r\n\r\n",
                       limits).status == 431
    many = b"".join(b"X%d: v\r\n" % index for index in range(5))
    assert first_error(b"GET / HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n", limits).status == 431
    assert first_error(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n",
                       limits).status == 413
    chunked = (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"8\r\n12345678\r\n8\r\n12345678\r\n")
    assert first_error(chunked, limits).status == 413


def test_upgrade_requests_are_answered_then_closed() -> None:
    connection = HttpConnection()
    connection.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\n"
                            b"Connection: upgrade\r\n\r\nPRI * HTTP/2.0")
    head = connection.next_event()
    assert isinstance(head, RequestHead) and head.upgrade
    connection.begin_request(head)
    assert b"connection: close" in connection.start_response(200, [], body=b"")


def test_eof_after_a_complete_request_still_delivers_it() -> None:
    connection = HttpConnection()
    connection.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    connection.receive_data(b"")
    assert isinstance(connection.next_event(), RequestHead)
    assert connection.next_event() is END_OF_MESSAGE
    assert connection.next_event() is CONNECTION_CLOSED
