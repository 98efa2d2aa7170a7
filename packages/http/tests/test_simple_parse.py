"""The simple-request parser against llhttp itself: whatever it accepts, llhttp reads the same.

The core skips llhttp for whole requests in a strict subset (protocol/simple.py); these tests
feed the same bytes to httptools directly and require identical requests, and check that
the subset is really taken for ordinary requests (so the fast path is what the server tests
exercise) and refused for everything llhttp would treat differently.
"""

from __future__ import annotations

import httptools
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keel.http import Limits, ProtocolError
from keel.http.protocol.core import END_OF_MESSAGE, HttpConnection, RequestHead
from keel.http.protocol.simple import SimpleRequest, parse_simple

SETTINGS = settings(max_examples=200, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
LIMITS = Limits()
MAX_EVENTS = 1000


class _Collector:
    """An httptools protocol that keeps what llhttp reports, as parse_simple's tuples."""

    def __init__(self) -> None:
        self.requests: list[SimpleRequest] = []
        self.keep_alive: list[bool] = []
        self.versions: list[str] = []
        self.complete = 0
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self.parser = httptools.HttpRequestParser(self)

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        self.requests.append((self.parser.get_method().decode("ascii"), self._url,
                              self._headers))
        self.keep_alive.append(self.parser.should_keep_alive())
        self.versions.append(self.parser.get_http_version())

    def on_message_complete(self) -> None:
        self.complete += 1


def parse_with_llhttp(data: bytes) -> _Collector:
    collector = _Collector()
    collector.parser.feed_data(data)  # raises on anything llhttp refuses
    return collector


def simple(data: bytes) -> list[SimpleRequest] | None:
    return parse_simple(data, LIMITS.max_request_line, LIMITS.max_header_bytes,
                        LIMITS.max_header_count)


def assert_llhttp_agrees(data: bytes, accepted: list[SimpleRequest]) -> None:
    collector = parse_with_llhttp(data)
    assert collector.requests == accepted
    assert collector.complete == len(accepted)  # every request whole, none with a body
    assert all(collector.keep_alive) and set(collector.versions) == {"1.1"}
    for _, _, headers in accepted:
        assert [name for name, _ in headers].count(b"host") == 1


# Near the subset: the pieces it takes, and neighbours that it must refuse.
methods = st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "get",
                           "CONNECT", "TRACE", "GETS", "PRI", ""])
target_characters = st.sampled_from([*"/azAZ09-._~!$&'()*+,;=:@?%", " ", "#", '"', "<", "\\",
                                     "^", "`", "{", "|", "\x7f", "\x80", "\x00", "\t"])
targets = st.one_of(st.just("/"), st.lists(target_characters, max_size=20).map("".join),
                    st.lists(target_characters, max_size=20).map(lambda c: "/" + "".join(c)),
                    st.just("*"), st.just("http://h/x"))
versions = st.sampled_from(["HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/1.1 ", "http/1.1"])
names = st.sampled_from(["Host", "host", "HOST", "X-A", "Accept", "Content-Length",
                         "Transfer-Encoding", "Connection", "Expect", "Upgrade", "Keep-Alive",
                         "X A", "X:A", "", "X\x00", "Cookie", "X-\x80"])
value_characters = st.sampled_from([*"az09 ;=/.:,\"", "\t", "\x7f", "\x80", "\xff", "\x00",
                                    "\r", "\n"])
values = st.one_of(st.sampled_from(["x", "close", "keep-alive", "chunked", "5", "100-continue",
                                    "h2c", "a b", " a", "a ", "", "a  b"]),
                   st.lists(value_characters, max_size=12).map("".join))
separators = st.sampled_from([": ", ":", ":  ", " : ", ":\t"])
line_ends = st.sampled_from(["\r\n", "\r\n", "\r\n", "\n", "\r"])


@st.composite
def near_request(draw: st.DrawFn) -> bytes:
    end = draw(line_ends)
    text = f"{draw(methods)} {draw(targets)} {draw(versions)}{end}"
    for name, value in draw(st.lists(st.tuples(names, values), max_size=5)):
        text += f"{name}{draw(separators)}{value}{draw(line_ends)}"
    text += draw(line_ends)
    return text.encode("latin-1")


token = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_",
                min_size=1, max_size=10)
word = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789;=/.,:()", min_size=1,
               max_size=10)


@st.composite
def subset_request(draw: st.DrawFn) -> bytes:
    method = draw(st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS",
                                   "PATCH"]))
    path = "/" + "/".join(draw(st.lists(token, max_size=4)))
    if draw(st.booleans()):
        path += "?" + "&".join(f"{k}={v}" for k, v in draw(st.lists(st.tuples(token, token),
                                                                     max_size=3)))
    headers = [("Host", draw(word))]
    for name, value_words in draw(st.lists(st.tuples(token.map(lambda t: "X-" + t),
                                                     st.lists(word, min_size=1, max_size=3)),
                                           max_size=5)):
        headers.insert(draw(st.integers(0, len(headers))), (name, " ".join(value_words)))
    lines = [f"{method} {path} HTTP/1.1", *[f"{name}: {value}" for name, value in headers]]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@SETTINGS
@given(requests=st.lists(subset_request(), min_size=1, max_size=4))
def test_ordinary_whole_requests_take_the_subset(requests: list[bytes]) -> None:
    data = b"".join(requests)
    accepted = simple(data)
    assert accepted is not None and len(accepted) == len(requests)
    assert_llhttp_agrees(data, accepted)
    # A request cut anywhere is not whole: all of it goes to llhttp.
    assert simple(data[:-1]) is None


INTERESTING_BYTES = [b" ", b"\t", b"\r", b"\n", b":", b"#", b"\x00", b"\x7f", b"\x80", b"\xff",
                     b'"', b"A", b"a", b"/", b"?", b"%", b"\r\n", b": "]
mutations = st.lists(st.tuples(st.sampled_from(["insert", "replace", "delete"]),
                               st.integers(0, 1 << 16), st.sampled_from(INTERESTING_BYTES)),
                     max_size=2)


def mutate(data: bytes, changes: list[tuple[str, int, bytes]]) -> bytes:
    for kind, where, piece in changes:
        at = where % (len(data) + 1)
        if kind == "insert":
            data = data[:at] + piece + data[at:]
        elif kind == "replace":
            data = data[:at] + piece + data[at + 1:]
        else:
            data = data[:at] + data[at + 1:]
    return data


@SETTINGS
@given(requests=st.lists(subset_request(), min_size=1, max_size=3),
       strange=st.lists(near_request(), max_size=1), changes=mutations)
def test_what_the_subset_accepts_llhttp_reads_the_same(
        requests: list[bytes], strange: list[bytes],
        changes: list[tuple[str, int, bytes]]) -> None:
    """Ordinary requests with a few bytes inserted, replaced or removed, and odd neighbours
    of the subset: whenever the subset still accepts them, llhttp reads the same requests."""
    data = mutate(b"".join(requests + strange), changes)
    accepted = simple(data)
    if accepted is not None:
        assert_llhttp_agrees(data, accepted)


@pytest.mark.parametrize("data", [
    b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"GET / HTTP/1.0\r\nHost: x\r\n\r\n",
    b"GET / HTTP/1.1\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost:x\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x \r\n\r\n",
    b"GET /#f HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET http://x/ HTTP/1.1\r\nHost: x\r\n\r\n",
    b"\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r",
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGARBAGE",
])
def test_shapes_left_to_llhttp(data: bytes) -> None:
    assert simple(data) is None


def test_limits_leave_requests_to_llhttp_which_refuses_them() -> None:
    limits = Limits(max_request_line=64, max_header_bytes=256, max_header_count=4)
    cases = [
        (b"GET /" + b"a" * 100 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"v" * 300 + b"\r\n\r\n", 431),
        (b"GET / HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X%d: v\r\n" % index
                                                    for index in range(4)) + b"\r\n", 431),
    ]
    for data, status in cases:
        assert parse_simple(data, limits.max_request_line, limits.max_header_bytes,
                            limits.max_header_count) is None
        connection = HttpConnection(limits)
        connection.receive_data(data)
        errors = [event for event in _events(connection) if isinstance(event, ProtocolError)]
        assert [error.status for error in errors] == [status]
    # Exactly at every limit: accepted by both.
    exact = b"GET /" + b"a" * 63 + b" HTTP/1.1\r\nHost: x\r\n" + \
        b"".join(b"X%d: v\r\n" % index for index in range(3)) + b"\r\n"
    accepted = parse_simple(exact, 64, 256, 4)
    assert accepted is not None
    connection = HttpConnection(limits)
    connection.receive_data(exact)
    head = connection.next_event()
    assert isinstance(head, RequestHead) and head.headers == accepted[0][2]


def _events(connection: HttpConnection) -> list[object]:
    from keel.http.protocol.core import CONNECTION_CLOSED, NEED_DATA

    found: list[object] = []
    for _ in range(MAX_EVENTS):
        event = connection.next_event()
        if event is NEED_DATA or event is CONNECTION_CLOSED:
            return found
        found.append(event)
    raise AssertionError("event stream did not end")


def _summary(events: list[object]) -> list[object]:
    return [(event.method, event.target, event.headers, event.http_version, event.keep_alive,
             event.content_length, event.chunked, event.expect_continue)
            if isinstance(event, RequestHead) else
            (event.status, event.message) if isinstance(event, ProtocolError) else event
            for event in events]


@pytest.mark.parametrize("first", [
    b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    b"GET / HTTP/1.0\r\nHost: x\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\nConnection: upgrade\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nX-A: ",
])
def test_after_llhttp_ends_or_starts_a_message_it_gets_the_next_bytes_too(first: bytes) -> None:
    """A request after one that closes the connection, or the rest of a started one, is
    llhttp's: the core's events are those of feeding everything to llhttp at once."""
    second = b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n"
    in_two = HttpConnection()
    in_two.receive_data(first)
    in_two.receive_data(second)
    at_once = HttpConnection()
    at_once.receive_data(first + second)  # the first part keeps the whole out of the subset
    assert _summary(_events(in_two)) == _summary(_events(at_once))


def test_simple_requests_give_the_same_events_as_llhttp() -> None:
    data = (b"GET /a?b=1 HTTP/1.1\r\nHost: x\r\nX-Thing: 1 2\r\n\r\n"
            b"HEAD /b HTTP/1.1\r\nAccept: */*\r\nHost: y\r\n\r\n")
    fast = HttpConnection()
    fast.receive_data(data)
    slow = HttpConnection()
    slow.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n" + data)
    slow_events = _events(slow)[2:]  # without the request that kept it on llhttp
    assert _summary(_events(fast)) == _summary(slow_events)
    assert slow_events[1] is END_OF_MESSAGE
