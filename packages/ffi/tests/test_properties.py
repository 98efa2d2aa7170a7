"""Property tests: any valid value survives Python -> C -> Go -> C -> Python unchanged."""

from __future__ import annotations

from typing import Any

import pytest
from hashing_iface import Location, Record, Widths
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = [pytest.mark.go, pytest.mark.timeout(120)]
EXAMPLES = 150
FLOAT32 = st.floats(width=32, allow_nan=False)
FLOAT64 = st.floats(allow_nan=False)


def ints(bits: int, signed: bool) -> st.SearchStrategy[int]:
    if signed:
        return st.integers(-(1 << (bits - 1)), (1 << (bits - 1)) - 1)
    return st.integers(0, (1 << bits) - 1)


WIDTHS = st.builds(Widths, ints(8, True), ints(16, True), ints(32, True), ints(64, True),
                   ints(8, False), ints(16, False), ints(32, False), ints(64, False),
                   FLOAT32, st.booleans())
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)
RECORDS = st.builds(Record, ints(64, False), TEXT, FLOAT64, st.lists(TEXT, max_size=6),
                    st.none() | st.builds(Location, FLOAT64, FLOAT32))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


@SETTINGS
@given(widths=WIDTHS)
def test_every_width_round_trips(library: Any, widths: Widths) -> None:
    assert library.echo_widths(widths) == widths


@SETTINGS
@given(records=st.lists(RECORDS, max_size=8))
def test_nested_records_round_trip(library: Any, records: list[Record]) -> None:
    assert library.echo_records(records) == records


@SETTINGS
@given(text=TEXT)
def test_text_reaches_go_as_utf8(library: Any, text: str) -> None:
    from test_sync import fnv1a

    assert library.hash_text(text) == fnv1a(text.encode())
