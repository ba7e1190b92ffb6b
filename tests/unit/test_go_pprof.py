"""bench/go_pprof.py reads Go's CPU profile format: checked on a profile encoded here by hand."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from bench import go_pprof


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, value: int | bytes) -> bytes:
    if isinstance(value, int):
        return _varint(number << 3) + _varint(value)
    return _varint(number << 3 | 2) + _varint(len(value)) + value


def _packed(values: list[int]) -> bytes:
    return b"".join(_varint(v) for v in values)


def _profile() -> bytes:
    """Functions main (1) -> handle (2) -> hash (3); one 30 ms sample in hash, one 10 ms in handle."""
    strings = ["", "samples", "count", "cpu", "nanoseconds", "main", "handle", "hash"]
    body = b"".join(_field(6, s.encode()) for s in strings)
    for fid, name in ((1, 5), (2, 6), (3, 7)):
        body += _field(5, _field(1, fid) + _field(2, name))
        body += _field(4, _field(1, fid) + _field(4, _field(1, fid)))  # location fid: one line in function fid
    # Leaf first, values packed (count, nanoseconds); the second sample unpacked, as some writers do.
    body += _field(2, _field(1, _packed([3, 2, 1])) + _field(2, _packed([3, 30_000_000])))
    body += _field(2, _field(1, 2) + _field(1, 1) + _field(2, 1) + _field(2, 10_000_000))
    return gzip.compress(body)


def test_flat_and_cumulative_shares(tmp_path: Path) -> None:
    path = tmp_path / "cpu.prof"
    path.write_bytes(_profile())
    profile = go_pprof.read(path)
    assert profile.total == 40_000_000
    assert profile.flat == {"hash": 30_000_000, "handle": 10_000_000}
    assert profile.cumulative == {"main": 40_000_000, "handle": 40_000_000, "hash": 30_000_000}
    assert profile.top(1, contains="hash") == [" 75.0% cum  75.0% flat  hash"]


def test_a_wire_type_pprof_never_uses_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.prof"
    path.write_bytes(gzip.compress(_varint(2 << 3 | 3)))  # a group start
    with pytest.raises(ValueError, match="wire type 3"):
        go_pprof.read(path)
