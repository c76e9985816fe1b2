"""The YARA worker's request frame: any POSIX file name survives the trip, flags stay with their path."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scanner.engines._yara_worker import decode_request, encode_request

# a POSIX name: any bytes but NUL (and "/" is fine inside a path)
_names = st.binary(min_size=1, max_size=40).filter(lambda b: b"\0" not in b).map(os.fsdecode)


@given(st.lists(st.tuples(_names, st.booleans()), max_size=50))
def test_round_trip(jobs: list[tuple[str, bool]]) -> None:
    frame = encode_request([p for p, _ in jobs], [f for _, f in jobs])
    assert decode_request(frame) == jobs


def test_awkward_names() -> None:
    names = ["/a b/c", "/new\nline", "/-dash", "/é", os.fsdecode(b"/bad\xff\xfe"), "/q'\"", "/tab\t"]
    flags = [True, False, True, False, True, False, True]
    assert decode_request(encode_request(names, flags)) == list(zip(names, flags, strict=True))


def test_a_frame_that_lies_about_its_count_is_refused() -> None:
    frame = encode_request(["/a", "/b"], [False, False])
    with pytest.raises(ValueError, match="malformed request frame"):
        decode_request(b"\x00\x00\x00\x03" + frame[4:])
