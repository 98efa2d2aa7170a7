"""Sync calls into the example Go library: types, zero copy, GIL, errors, callbacks, checks."""

from __future__ import annotations

import array
import asyncio
import ctypes
import threading
import time
from typing import Any

import pytest
from hashing_iface import Block, Location, Record, Widths

from keel.ffi.errors import (
    ArgumentRangeError,
    ArgumentTypeError,
    CallbackError,
    ClosedLibraryError,
    GoError,
    GoPanic,
)
from keel.ffi.strings import utf8_address

pytestmark = [pytest.mark.go, pytest.mark.timeout(60)]
FNV_OFFSET_BASIS = 0xCBF29CE484222325
FNV_PRIME = 0x100000001B3
UINT64_MASK = (1 << 64) - 1
SLEEP_MILLISECONDS = 300


def fnv1a(data: bytes) -> int:
    value = FNV_OFFSET_BASIS
    for byte in data:
        value = ((value ^ byte) * FNV_PRIME) & UINT64_MASK
    return value


def widths(**changes: Any) -> Widths:
    values: dict[str, Any] = dict(small=-128, half=-32768, medium=2**31 - 1, large=-(2**63),
                                  byte=255, word=65535, double_word=2**32 - 1,
                                  quad_word=2**64 - 1, ratio=1.5, flag=True)
    values.update(changes)
    return Widths(**values)


def test_empty_call(library: Any) -> None:
    assert library.empty() is None


def test_bytes_and_str_hash_like_fnv1a(library: Any) -> None:
    data = bytes(range(256)) * 3
    assert library.hash(data) == fnv1a(data)
    assert library.hash(bytearray(data)) == fnv1a(data)
    assert library.hash(b"") == fnv1a(b"")
    assert library.hash_text("héllo wörld ✓") == fnv1a("héllo wörld ✓".encode())
    assert library.hash_text("") == fnv1a(b"")


def test_lists_of_scalars_from_lists_and_buffers(library: Any) -> None:
    assert library.sum_int32([1, -2, 2**31 - 1]) == 2**31 - 2
    assert library.sum_int32(array.array("i", range(1000))) == sum(range(1000))
    assert library.sum_int32([]) == 0


def test_structured_record_round_trip(library: Any) -> None:
    record = library.parse_record("42;ada;9.5;math,engines;51.5,-0.125")
    assert record == Record(42, "ada", 9.5, ["math", "engines"], Location(51.5, -0.125))
    assert library.describe(record) == "#42 ada (9.5) [math engines] @ 51.50,-0.12"
    without = Record(1, "", 0.0, [], None)
    assert library.describe(without) == "#1  (0.0) [] @ nowhere"
    records = [record, without, Record(2**64 - 1, "ü" * 100, -1.0, ["x"] * 50, None)]
    assert library.echo_records(records) == records


def test_every_scalar_width_round_trips_at_its_limits(library: Any) -> None:
    for value in (widths(), widths(small=127, half=32767, medium=-(2**31), large=2**63 - 1,
                                   byte=0, word=0, double_word=0, quad_word=0, ratio=-2.0,
                                   flag=False)):
        assert library.echo_widths(value) == value


@pytest.mark.parametrize(("field", "value"), [
    ("small", -129), ("small", 128), ("half", 32768), ("medium", 2**31), ("large", 2**63),
    ("large", -(2**63) - 1), ("byte", -1), ("byte", 256), ("word", 65536),
    ("double_word", 2**32), ("quad_word", 2**64), ("quad_word", -1), ("ratio", 1e39),
])
def test_out_of_range_ints_are_refused_naming_the_field(library: Any, field: str,
                                                        value: int) -> None:
    with pytest.raises(ArgumentRangeError, match=rf"widths\)\.{field} = "):
        library.echo_widths(widths(**{field: value}))


@pytest.mark.parametrize(("call", "message"), [
    (lambda lib: lib.hash("text"), r"data\) must be bytes"),
    (lambda lib: lib.hash_text(b"bytes"), r"text\) must be a str"),
    (lambda lib: lib.hash(None), r"data\) is None but is not optional"),
    (lambda lib: lib.sum_int32([1, "2"]), r"values\)\[1\] must be an int"),
    (lambda lib: lib.sum_int32([1, 2**31]), r"values\)\[1\] = 2147483648 is out of range"),
    (lambda lib: lib.sum_int32(array.array("q", [1])), r"format 'q' cannot be read"),
    (lambda lib: lib.describe(Location(1.0, 2.0)), r"record\) must be a Record"),
    (lambda lib: lib.describe(Record(1, None, 0.0, [], None)),  # type: ignore[arg-type]
     r"record\)\.name is None but is not optional"),
    (lambda lib: lib.echo_widths(widths(flag=1)), r"flag must be a bool"),
    (lambda lib: lib.echo_widths(widths(small=True)), r"small must be an int"),
    (lambda lib: lib.hash(), r"missing a required argument: 'data'"),
    (lambda lib: lib.hash(b"", b""), r"too many positional arguments"),
])
def test_bad_arguments_raise_before_anything_crosses(library: Any, call: Any,
                                                     message: str) -> None:
    with pytest.raises((ArgumentTypeError, ArgumentRangeError), match=message):
        call(library)


def test_optional_scalars_both_ways(library: Any) -> None:
    assert library.maybe_double(None) is None
    assert library.maybe_double(21) == 42
    assert library.maybe_double(value=-4) == -8


def test_struct_of_256_bytes(library: Any) -> None:
    block = Block(list(range(10)), *range(30))
    assert library.block_sum(block) == sum(range(10)) + 0 + 1 + 2 + 29
    too_big = Block([], *range(29), 2**63)
    with pytest.raises(ArgumentRangeError, match=r"block_sum\(block\)\.a29 = 9223372036854775808"):
        library.block_sum(too_big)
    with pytest.raises(ArgumentRangeError, match=r"block_sum\(block\)\.values\[1\] = -9223"):
        library.block_sum(Block([0, -(2**63) - 1], *range(30)))


def test_go_reads_bytes_str_and_scalar_buffers_in_place(library: Any) -> None:
    data = b"in place " * 100
    assert library.address_of_bytes(data) == ctypes.cast(ctypes.c_char_p(data),
                                                         ctypes.c_void_p).value
    writable = bytearray(data)
    assert library.address_of_bytes(writable) == ctypes.addressof(
        (ctypes.c_char * len(writable)).from_buffer(writable))
    for text in ("ascii text " * 10, "ünïcode " * 10):
        located = utf8_address(text)
        assert located is not None
        assert library.address_of_text(text) == located[0]
    values = array.array("i", range(100))
    assert library.address_of_int32s(values) == values.buffer_info()[0]


def test_go_errors_and_panics_become_exceptions_with_the_go_message(library: Any) -> None:
    with pytest.raises(GoError, match="disk on fire") as raised:
        library.fail("disk on fire")
    assert raised.value.go_message == "disk on fire"
    assert not isinstance(raised.value, GoPanic)
    with pytest.raises(GoPanic, match="index out of bounds"):
        library.crash("index out of bounds")
    with pytest.raises(GoError, match=r'record "x" has 1 fields, expected 5'):
        library.parse_record("x")
    assert library.hash(b"still works") == fnv1a(b"still works")


def test_cgocheck_is_on_and_reported_as_a_panic(library: Any) -> None:
    with pytest.raises(GoPanic, match="unpinned Go pointer"):
        library.cgocheck_probe()


def test_callbacks_from_another_goroutine(library: Any) -> None:
    seen: list[tuple[int, str, int]] = []

    def visit(index: int, word: str) -> bool:
        seen.append((index, word, threading.get_ident()))
        return index < 2

    assert library.each_word("alpha beta gamma delta", visit) == 3
    assert [(index, word) for index, word, _ in seen] == [(0, "alpha"), (1, "beta"),
                                                        (2, "gamma")]
    assert all(thread != threading.get_ident() for _, _, thread in seen)


def test_a_raising_callback_surfaces_as_callback_error(library: Any) -> None:
    def visit(index: int, word: str) -> bool:
        raise KeyError(word)

    with pytest.raises(CallbackError) as raised:
        library.each_word("one two", visit)
    assert isinstance(raised.value.__cause__, KeyError)

    with pytest.raises(CallbackError) as wrong:
        library.each_word("one", lambda index, word: "yes")
    assert isinstance(wrong.value.__cause__, ArgumentTypeError)


def test_sync_calls_release_the_gil(library: Any) -> None:
    iterations_during_call = 0
    in_call = threading.Event()
    stop = threading.Event()

    def spin() -> None:
        nonlocal iterations_during_call
        while not stop.is_set():
            if in_call.is_set():
                iterations_during_call += 1
            time.sleep(0)

    spinner = threading.Thread(target=spin)
    spinner.start()
    try:
        in_call.set()
        library.sleep(SLEEP_MILLISECONDS)
        in_call.clear()
    finally:
        stop.set()
        spinner.join()
    assert iterations_during_call > 0


def test_sync_calls_from_many_threads(library: Any) -> None:
    results: dict[int, int] = {}

    def work(index: int) -> None:
        results[index] = library.hash(str(index).encode() * 1000)

    threads = [threading.Thread(target=work, args=(index,)) for index in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == {index: fnv1a(str(index).encode() * 1000) for index in range(8)}


def test_calls_after_close_raise_before_reaching_go(built_example: Any) -> None:
    from hashing_binding import HashingLibrary

    with HashingLibrary.open(built_example) as opened:
        assert opened.hash(b"x") == fnv1a(b"x")
    assert opened.closed
    with pytest.raises(ClosedLibraryError, match=r"Hashing\.hash: the library is closed"):
        opened.hash(b"x")
    with pytest.raises(ClosedLibraryError):
        opened.call_method("empty")
    with pytest.raises(ClosedLibraryError, match=r"Hashing\.divide: the library is closed"):
        opened.divide(1, 1)  # a fast-path method: swapped out on close as well
    opened.close()  # idempotent


def test_scalar_methods_take_the_c_fast_path(library: Any) -> None:
    for name in ("empty", "divide", "checked_add", "scale", "is_even", "sleep", "hash",
                 "hash_text", "fail", "sum_int32", "block_sum"):
        assert type(getattr(library, name)).__name__ == "builtin_function_or_method", name
    # Nested or optional structs, lists of structs, non-scalar results: the checked path.
    for name in ("parse_record", "describe", "echo_records", "echo_widths", "maybe_double"):
        assert type(getattr(library, name)).__name__ == "function", name


@pytest.mark.parametrize("line", ["42;ada lovelace;9.5;math,engines,logic;51.5,-0.125",
                                  "7;;-0.0;;", "1;ü€𝄞;1e300;ü,,€;-90,180"])
def test_dataclass_results_are_decoded_in_c_exactly_as_in_python(library: Any,
                                                                  line: str) -> None:
    """The C decoder builds the same dataclass as the compiled Python reader, from the
    same result memory Go wrote."""
    codec = library._struct_codecs["Record"]
    assert "use_c_decoder" in codec.read.__qualname__  # the C decoder is installed
    ffi, lib = library._ffi, library._lib
    encoded = line.encode()
    text = ffi.from_buffer("uint8_t[]", encoded)
    arguments = ffi.new("keel_Hashing_parse_record_args *")
    arguments.line.data, arguments.line.size = text, len(encoded)
    result = ffi.new("keel_Hashing_parse_record_result *")
    assert lib.keel_Hashing_parse_record(arguments, result) == 0
    try:
        from_c = codec.read(result.value)
        from_python = codec._read(ffi.addressof(result.value))
    finally:
        lib.keel_free(result.arena)
    assert from_c == from_python == library.parse_record(line)
    assert type(from_c) is Record and type(from_c.tags) is list
    assert from_c.location is None or type(from_c.location) is Location


def test_fast_path_values_at_the_limits(library: Any) -> None:
    assert library.divide(-(2**63), 1) == -(2**63)
    assert library.divide(7, -2) == -3  # Go truncates toward zero
    assert library.checked_add(2**31 - 2, 1) == 2**31 - 1
    assert library.is_even(2**64 - 2) is True
    assert library.is_even(2**64 - 1) is False
    assert library.scale(1.5, 2.0) == 3.0
    assert library.scale(3, 0.5) == 1.5  # an int is a fine float
    assert library.scale(float("inf"), 1.0) == float("inf")
    assert library.checked_add(left=1, right=2) == 3  # keywords: the checked path


def test_fast_path_errors_match_the_checked_path(library: Any) -> None:
    with pytest.raises(GoPanic, match="integer divide by zero"):
        library.divide(1, 0)
    with pytest.raises(GoError, match="2147483647 \\+ 1 overflows int32"):
        library.checked_add(2**31 - 1, 1)
    with pytest.raises(ArgumentRangeError, match=r"checked_add\(left\) = 2147483648"):
        library.checked_add(2**31, 0)
    with pytest.raises(ArgumentRangeError, match=r"is_even\(value\) = -1 is out of range"):
        library.is_even(-1)
    with pytest.raises(ArgumentRangeError, match=r"is_even\(value\) = 18446744073709551616"):
        library.is_even(2**64)
    with pytest.raises(ArgumentTypeError, match=r"divide\(divisor\) must be an int"):
        library.divide(1, 2.0)
    with pytest.raises(ArgumentTypeError, match=r"divide\(divisor\) is None"):
        library.divide(1, None)
    with pytest.raises(ArgumentRangeError, match=r"scale\(factor\) = 1e\+39 does not fit"):
        library.scale(1.0, 1e39)
    with pytest.raises(ArgumentTypeError, match="missing a required argument"):
        library.divide(1)
    with pytest.raises(ArgumentTypeError, match="too many positional arguments"):
        library.empty(1)


def test_goroutine_probe_counts_goroutines_started_by_async_calls(library: Any) -> None:
    """The example's probe is what load tests use to prove no goroutine is leaked."""
    idle = library.goroutines()
    assert idle >= 1

    async def main() -> None:
        pending = [asyncio.ensure_future(library.slow_square(3, 300)) for _ in range(5)]
        await asyncio.sleep(0.1)
        assert library.goroutines() >= idle + len(pending)
        assert await asyncio.gather(*pending) == [9] * len(pending)

    asyncio.run(main())
    deadline = time.monotonic() + 5
    while library.goroutines() > idle and time.monotonic() < deadline:
        time.sleep(0.01)
    assert library.goroutines() == idle
