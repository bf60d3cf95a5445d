"""Scalars from TensorFlow event files, without importing TensorFlow.

An event file (``events.out.tfevents.*``) is a TFRecord file: records of
``uint64 length | uint32 crc | data | uint32 crc``, each ``data`` an ``Event`` protocol buffer
(``wall_time`` = 1, ``step`` = 2, ``summary`` = 5). A ``Summary`` holds ``Value``s (``tag`` = 1,
``simple_value`` = 2 for TF1 summaries, ``tensor`` = 8 for TF2's ``tf.summary.scalar``, whose
``TensorProto`` holds one number in ``float_val``/``double_val``/``int_val``/``int64_val`` or
``tensor_content``). This module decodes exactly those fields from the protobuf wire format
(about 100 lines instead of a 6-second TensorFlow import in the control plane); everything
else in the file (graphs, histograms, images, non-scalar tensors) is skipped.

:class:`EventFileReader` reads incrementally: it remembers how far it got, and a record still
being written (a truncated tail) is read on the next call. CRCs are not verified (crc32c is
not in the standard library); a record whose length is absurd ends the read of that file.
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

MAX_RECORD_BYTES = 256 * 1024 * 1024
#: TensorFlow DataType enum values of the numbers a scalar summary can hold.
_CONTENT_FORMATS = {1: "<f", 2: "<d", 3: "<i", 9: "<q", 19: "<e"}


@dataclass(frozen=True)
class Scalar:
    wall_time: float
    step: int
    value: float


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 70:
            raise ValueError("varint too long")


def _fields(buf: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """(field number, wire type, value): ints for varint/fixed fields, bytes for the rest."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
            yield number, wire, value
        elif wire == 1:
            yield number, wire, buf[pos:pos + 8]
            pos += 8
        elif wire == 2:
            size, pos = _varint(buf, pos)
            yield number, wire, buf[pos:pos + size]
            pos += size
        elif wire == 5:
            yield number, wire, buf[pos:pos + 4]
            pos += 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
    if pos > len(buf):
        raise ValueError("truncated field")


def _signed64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _tensor_scalar(buf: bytes) -> float | None:
    """The single number of a ``TensorProto``, or None when it is not one number."""
    dtype = 0
    numbers: list[float] = []
    content = b""
    for number, wire, value in _fields(buf):
        if number == 1 and isinstance(value, int):
            dtype = value
        elif number == 4 and isinstance(value, bytes):
            content = value
        elif number in (5, 6) and isinstance(value, bytes):  # float_val, double_val
            size, item_format = (4, "<f") if number == 5 else (8, "<d")
            if wire == 2:
                numbers.extend(v for (v,) in struct.iter_unpack(item_format, value[: len(value) // size * size]))
            else:
                numbers.append(struct.unpack(item_format, value)[0])
        elif number in (7, 10):  # int_val, int64_val
            if isinstance(value, int):
                numbers.append(_signed64(value))
            else:
                pos = 0
                while pos < len(value):
                    item, pos = _varint(value, pos)
                    numbers.append(_signed64(item))
    if numbers:
        return float(numbers[0]) if len(numbers) == 1 else None
    fmt = _CONTENT_FORMATS.get(dtype)
    if fmt and content and len(content) == struct.calcsize(fmt):
        return float(struct.unpack(fmt, content)[0])
    return None


def parse_event(data: bytes, tag: str) -> list[Scalar]:
    """The scalars named ``tag`` in one serialized ``Event``."""
    wall_time, step, summaries = 0.0, 0, []
    for number, _wire, value in _fields(data):
        if number == 1 and isinstance(value, bytes) and len(value) == 8:
            wall_time = struct.unpack("<d", value)[0]
        elif number == 2 and isinstance(value, int):
            step = _signed64(value)
        elif number == 5 and isinstance(value, bytes):
            summaries.append(value)
    found = []
    wanted = tag.encode()
    for summary in summaries:
        for number, _wire, value in _fields(summary):
            if number != 1 or not isinstance(value, bytes) or wanted not in value:
                continue
            name, scalar = b"", None
            for vnum, _vwire, vval in _fields(value):
                if vnum == 1 and isinstance(vval, bytes):
                    name = vval
                elif vnum == 2 and isinstance(vval, bytes) and len(vval) == 4:
                    scalar = struct.unpack("<f", vval)[0]
                elif vnum == 8 and isinstance(vval, bytes):
                    scalar = _tensor_scalar(vval)
            if name == wanted and scalar is not None:
                found.append(Scalar(wall_time, step, float(scalar)))
    return found


class EventFileReader:
    """Reads the scalars named ``tag`` from one event file, picking up where it stopped."""

    def __init__(self, path: Path, tag: str) -> None:
        self.path = path
        self.tag = tag
        self.offset = 0
        self.broken = False

    def read_new(self) -> list[Scalar]:
        if self.broken:
            return []
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except OSError:
            return []
        found: list[Scalar] = []
        pos = 0
        while pos + 12 <= len(data):
            (length,) = struct.unpack_from("<Q", data, pos)
            if length > MAX_RECORD_BYTES:
                self.broken = True
                break
            end = pos + 12 + length + 4
            if end > len(data):
                break  # still being written
            with contextlib.suppress(ValueError, struct.error):  # not an Event we understand
                found.extend(parse_event(data[pos + 12:pos + 12 + length], self.tag))
            pos = end
        self.offset += pos
        return found


def event_files(root: Path) -> list[Path]:
    """Every ``events.out.tfevents*`` file under ``root`` (recursively), sorted."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.rglob("events.out.tfevents*") if p.is_file())
