"""Property tests of the sans-IO connection core (hypothesis)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keel.http import Limits, ProtocolError
from keel.http.protocol.core import (
    CONNECTION_CLOSED,
    END_OF_MESSAGE,
    NEED_DATA,
    HttpConnection,
    RequestHead,
)

MAX_EVENTS = 10_000
SETTINGS = settings(max_examples=200, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

token = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=12)
value = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789 ;=/.", max_size=30) \
    .map(str.strip)
body = st.binary(max_size=300)


@st.composite
def valid_request(draw: st.DrawFn) -> tuple[bytes, str, bytes]:
    method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE"]))
    path = "/" + "/".join(draw(st.lists(token, max_size=4)))
    headers = draw(st.lists(st.tuples(token.map(lambda t: "x-" + t), value), max_size=6))
    payload = draw(body) if method != "GET" else b""
    chunked = draw(st.booleans()) and method != "GET"
    lines = [f"{method} {path} HTTP/1.1", "Host: test"]
    lines += [f"{name}: {text}" for name, text in headers]
    if chunked:
        lines.append("Transfer-Encoding: chunked")
        pieces = draw(st.lists(st.integers(1, 50), max_size=5))
        encoded, offset = b"", 0
        for size in pieces:
            piece = payload[offset:offset + size]
            offset += len(piece)
            if piece:
                encoded += b"%x\r\n%b\r\n" % (len(piece), piece)
        rest = payload[offset:]
        if rest:
            encoded += b"%x\r\n%b\r\n" % (len(rest), rest)
        wire_body = encoded + b"0\r\n\r\n"
    else:
        if payload or method != "GET":
            lines.append(f"Content-Length: {len(payload)}")
        wire_body = payload
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + wire_body, path, payload


def drain(connection: HttpConnection) -> list[object]:
    found: list[object] = []
    for _ in range(MAX_EVENTS):
        event = connection.next_event()
        if event is NEED_DATA or event is CONNECTION_CLOSED:
            return found
        found.append(event)
    raise AssertionError("event stream did not end")


def summarize(events: list[object]) -> list[tuple[str, bytes]]:
    summary: list[tuple[str, bytes]] = []
    current = b""
    for event in events:
        if isinstance(event, RequestHead):
            current = b""
            summary.append(("head", event.target))
        elif isinstance(event, bytes):
            current += event
        elif event is END_OF_MESSAGE:
            summary.append(("body", current))
        else:
            summary.append(("other", repr(event).encode()))
    return summary


@SETTINGS
@given(requests=st.lists(valid_request(), min_size=1, max_size=4), data=st.data())
def test_any_split_of_pipelined_requests_parses_the_same(
        requests: list[tuple[bytes, str, bytes]], data: st.DataObject) -> None:
    wire = b"".join(raw for raw, _, _ in requests)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=8)))
    connection = HttpConnection()
    events: list[object] = []
    start = 0
    for cut in [*cuts, len(wire)]:
        if cut > start:
            connection.receive_data(wire[start:cut])
            events += drain(connection)
            start = cut
    expected = []
    for _, path, payload in requests:
        expected += [("head", path.encode()), ("body", payload)]
    assert summarize(events) == expected


@SETTINGS
@given(garbage=st.binary(max_size=2000), prefix=st.sampled_from(
    [b"", b"GET / HTTP/1.1\r\n",
     b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"]))
def test_arbitrary_bytes_never_crash_and_errors_are_4xx_or_5xx(garbage: bytes,
                                                               prefix: bytes) -> None:
    connection = HttpConnection(Limits(max_header_bytes=1024, max_body_bytes=512))
    connection.receive_data(prefix + garbage)
    events = drain(connection)
    for event in events:
        if isinstance(event, ProtocolError):
            assert 400 <= event.status < 600
            assert not connection.keep_alive
    connection.receive_data(b"")
    drain(connection)
    assert connection.next_event() is CONNECTION_CLOSED


@SETTINGS
@given(request=valid_request(), status=st.sampled_from([200, 201, 204, 304, 404, 500]),
       payload=st.binary(max_size=100), streamed=st.booleans())
def test_responses_are_framed_consistently(request: tuple[bytes, str, bytes], status: int,
                                           payload: bytes, streamed: bool) -> None:
    connection = HttpConnection()
    connection.receive_data(request[0])
    head = connection.next_event()
    assert isinstance(head, RequestHead)
    connection.begin_request(head)
    if streamed:
        wire = connection.start_response(status, []) + connection.body_bytes(payload) + \
            connection.end_response()
    else:
        wire = connection.start_response(status, [], body=payload)
    head_bytes, _, rest = wire.partition(b"\r\n\r\n")
    lowered = head_bytes.lower()
    if status in (204, 304):
        assert rest == b"" and b"content-length" not in lowered
    elif streamed:
        assert b"transfer-encoding: chunked" in lowered
        assert rest.endswith(b"0\r\n\r\n")
    else:
        assert b"content-length: %d" % len(payload) in lowered and rest == payload
