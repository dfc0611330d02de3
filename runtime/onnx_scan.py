"""Read the external-data references out of an ONNX file without onnx or onnxruntime.

An ONNX tensor may keep its bytes in another file (`external_data`: location, offset,
length). onnxruntime opens whatever `location` says, so a hostile graph could point it at
`/etc/shadow` or `../../id_rsa`, or past the end of its data file. `artifact_policy` checks
each reference this module lists before any engine opens the graph.

This is a minimal protobuf wire-format walk over exactly the fields that can hold tensors
(ModelProto.graph and .functions, GraphProto.initializer/.sparse_initializer/.node, NodeProto
.attribute, AttributeProto.t/.g/.tensors/.graphs/.sparse_tensor(s), SparseTensorProto
.values/.indices). Large fields (raw weights) are skipped by length over an mmap, so a
multi-GB graph costs a few milliseconds. The runtime does not depend on the `onnx` package.
Never imports heavy modules.
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ExternalRef", "MalformedOnnx", "external_refs"]

MAX_DEPTH = 32  # nested subgraphs (If/Loop bodies); real models use a handful

# (message kind, field number) -> kind of the embedded message worth descending into
_CHILDREN: dict[tuple[str, int], str] = {
    ("model", 7): "graph",
    ("model", 25): "function",
    ("function", 7): "node",
    ("graph", 1): "node",
    ("graph", 5): "tensor",
    ("graph", 15): "sparse",
    ("node", 5): "attribute",
    ("attribute", 5): "tensor",
    ("attribute", 6): "graph",
    ("attribute", 10): "tensor",
    ("attribute", 11): "graph",
    ("attribute", 22): "sparse",
    ("attribute", 23): "sparse",
    ("sparse", 1): "tensor",
    ("sparse", 2): "tensor",
}
_TENSOR_NAME, _TENSOR_EXTERNAL, _TENSOR_LOCATION = 8, 13, 14


class MalformedOnnx(ValueError):
    """The bytes are not a well-formed ONNX protobuf (truncated, bad wire type, too deep)."""


@dataclass(frozen=True)
class ExternalRef:
    """One tensor whose bytes live in another file."""

    tensor: str
    location: str
    offset: int
    length: int | None  # None: "to the end of the file"


def external_refs(path: Path) -> list[ExternalRef]:
    """Every external-data reference in the ONNX file at `path`.

    Raises:
        MalformedOnnx: the file is not a parseable ONNX protobuf.
    """
    with path.open("rb") as handle:
        if path.stat().st_size == 0:
            return []
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
            view = memoryview(data)
            try:
                return list(_walk(view, "model", 0))
            finally:
                view.release()


def _walk(data: memoryview, kind: str, depth: int) -> Iterator[ExternalRef]:
    if depth > MAX_DEPTH:
        raise MalformedOnnx(f"subgraphs nested deeper than {MAX_DEPTH}")
    if kind == "tensor":
        if (ref := _tensor_ref(data)) is not None:
            yield ref
        return
    for number, value in _fields(data):
        child = _CHILDREN.get((kind, number))
        if child is not None and isinstance(value, memoryview):
            yield from _walk(value, child, depth + 1)


def _tensor_ref(data: memoryview) -> ExternalRef | None:
    name, location_kind, entries = "", 0, {}
    for number, value in _fields(data):
        if number == _TENSOR_NAME and isinstance(value, memoryview):
            name = _text(value)
        elif number == _TENSOR_LOCATION and isinstance(value, int):
            location_kind = value
        elif number == _TENSOR_EXTERNAL and isinstance(value, memoryview):
            entry = dict(_fields(value))
            key, text = entry.get(1), entry.get(2)
            if isinstance(key, memoryview):
                entries[_text(key)] = _text(text) if isinstance(text, memoryview) else ""
    if location_kind != 1 and not entries:
        return None
    try:
        offset = int(entries.get("offset", "0"))
        length = int(entries["length"]) if "length" in entries else None
    except ValueError as exc:
        raise MalformedOnnx(
            f"tensor {name!r}: external data offset/length is not a number"
        ) from exc
    return ExternalRef(name, entries.get("location", ""), offset, length)


def _fields(data: memoryview) -> Iterator[tuple[int, int | memoryview]]:
    """(field number, value) pairs: varints as int, length-delimited fields as views."""
    pos, end = 0, len(data)
    while pos < end:
        tag, pos = _varint(data, pos)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = _varint(data, pos)
            yield number, value
        elif wire == 2:
            size, pos = _varint(data, pos)
            if pos + size > end:
                raise MalformedOnnx("a field runs past the end of its message")
            yield number, data[pos : pos + size]
            pos += size
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
        else:
            raise MalformedOnnx(f"unsupported protobuf wire type {wire}")
    if pos != end:
        raise MalformedOnnx("a field runs past the end of its message")


def _varint(data: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise MalformedOnnx("truncated or overlong varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _text(value: memoryview) -> str:
    return bytes(value).decode("utf-8", errors="replace")
