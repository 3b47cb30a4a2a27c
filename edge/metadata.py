"""TFLite Metadata (name, input normalization, label file) read straight from the model.

A tiny flatbuffer reader is enough for the few fields we need, and it works with every
backend (tflite-runtime ships no metadata schema), so there is no extra dependency.
"""

from __future__ import annotations

import io
import json
import struct
import zipfile
from dataclasses import dataclass, field

_TENSOR_AXIS_LABELS = 2
RECORD_FILE = "edge_training.json"  # the training record `edge train` embeds
_NORMALIZATION_OPTIONS = 1


class _Table:
    """A flatbuffer table: fields are read through the vtable by index (slot)."""

    def __init__(self, buf: bytes, pos: int) -> None:
        self.buf, self.pos = buf, pos

    @classmethod
    def root(cls, buf: bytes) -> _Table:
        return cls(buf, struct.unpack_from("<I", buf, 0)[0])

    def _offset(self, slot: int) -> int:
        vt = self.pos - struct.unpack_from("<i", self.buf, self.pos)[0]
        vt_len = struct.unpack_from("<H", self.buf, vt)[0]
        off = 4 + 2 * slot
        return struct.unpack_from("<H", self.buf, vt + off)[0] if off < vt_len else 0

    def _indirect(self, p: int) -> int:
        return p + struct.unpack_from("<I", self.buf, p)[0]

    def scalar(self, slot: int, fmt: str, default=0):
        o = self._offset(slot)
        return struct.unpack_from("<" + fmt, self.buf, self.pos + o)[0] if o else default

    def table(self, slot: int) -> _Table | None:
        o = self._offset(slot)
        return _Table(self.buf, self._indirect(self.pos + o)) if o else None

    def _vector(self, slot: int) -> tuple[int, int]:
        o = self._offset(slot)
        if not o:
            return 0, 0
        p = self._indirect(self.pos + o)
        return p + 4, struct.unpack_from("<I", self.buf, p)[0]

    def tables(self, slot: int) -> list[_Table]:
        start, n = self._vector(slot)
        return [_Table(self.buf, self._indirect(start + 4 * i)) for i in range(n)]

    def string(self, slot: int) -> str | None:
        start, n = self._vector(slot)
        return self.buf[start : start + n].decode("utf-8", "replace") if start else None

    def floats(self, slot: int) -> list[float]:
        start, n = self._vector(slot)
        return list(struct.unpack_from(f"<{n}f", self.buf, start)) if start else []

    def raw(self, slot: int) -> bytes:
        start, n = self._vector(slot)
        return self.buf[start : start + n] if start else b""


@dataclass
class Metadata:
    name: str | None = None
    description: str | None = None
    mean: list[float] = field(default_factory=list)  # input normalization: (x - mean) / std
    std: list[float] = field(default_factory=list)
    label_file: str | None = None  # associated file holding the output labels


def _model_metadata_buffer(buf: bytes) -> bytes | None:
    """The TFLITE_METADATA buffer of a .tflite model (Model: buffers=4, metadata=6)."""
    model = _Table.root(buf)
    buffers = model.tables(4)
    for entry in model.tables(6):
        if entry.string(0) == "TFLITE_METADATA":
            index = entry.scalar(1, "I")
            if index < len(buffers):
                data = buffers[index].raw(0)
                if not data:  # large models keep data outside the flatbuffer: offset/size
                    off, size = buffers[index].scalar(1, "Q"), buffers[index].scalar(2, "Q")
                    data = buf[off : off + size] if off > 1 else b""
                return data or None
    return None


def _label_file(files: list[_Table]) -> str | None:
    for f in files:
        if f.scalar(2, "b") == _TENSOR_AXIS_LABELS:
            return f.string(0)
    return None


def read_metadata(buf: bytes) -> Metadata:
    """Parse the metadata, returning an empty Metadata when the model has none."""
    md = Metadata()
    try:
        raw = _model_metadata_buffer(buf)
        if not raw:
            return md
        root = _Table.root(raw)  # ModelMetadata
        md.name, md.description = root.string(0), root.string(1)
        for sub in root.tables(3):  # SubGraphMetadata
            inputs = sub.tables(2)
            for unit in inputs[0].tables(4) if inputs else []:  # ProcessUnit
                if unit.scalar(0, "B") == _NORMALIZATION_OPTIONS:
                    opts = unit.table(1)
                    if opts is not None:
                        md.mean, md.std = opts.floats(0), opts.floats(1)
            outputs = sub.tables(3)
            md.label_file = _label_file(outputs[0].tables(6)) if outputs else None
            md.label_file = md.label_file or _label_file(sub.tables(4))
        md.label_file = md.label_file or _label_file(root.tables(6))
    except (struct.error, IndexError, UnicodeDecodeError):
        return Metadata()  # malformed metadata is ignored, the model itself may be fine
    return md


def embedded_files(buf: bytes) -> dict[str, bytes]:
    """Files packed in the model: a .tflite with metadata is also a zip archive."""
    try:
        with zipfile.ZipFile(io.BytesIO(buf)) as z:
            return {n: z.read(n) for n in z.namelist()}
    except (zipfile.BadZipFile, OSError, ValueError):
        return {}


def check_structure(buf: bytes) -> str | None:
    """Why the model's flatbuffer is cut short or corrupt, or None when it holds together.

    Some runtimes (tflite-runtime 2.14) crash on a truncated file instead of raising, so the
    tables, vectors and weight buffers a runtime will touch are bounds-checked first.
    """
    size = len(buf)

    def inside(start: int, length: int) -> bool:
        return start >= 0 and start + length <= size

    try:
        model = _Table.root(buf)
        if not inside(model.pos, 4):
            return "root table outside the file"
        for slot in (1, 2, 4):  # operator_codes, subgraphs, buffers
            start, n = model._vector(slot)
            if start and not inside(start, 4 * n):
                return "table vector runs past the end of the file"
        for sub in model.tables(2):
            for slot in (0, 3):  # tensors, operators
                start, n = sub._vector(slot)
                if not inside(start, 4 * n):
                    return "subgraph runs past the end of the file"
                for t in sub.tables(slot):
                    if not inside(t.pos, 4):
                        return "tensor or operator outside the file"
        for b in model.tables(4):
            start, n = b._vector(0)
            if start and not inside(start, n):
                return f"weights buffer of {n} bytes runs past the end of the file"
            off, length = b.scalar(1, "Q"), b.scalar(2, "Q")
            if off > 1 and not inside(off, length):
                return "external weights buffer runs past the end of the file"
    except (struct.error, IndexError, ValueError):
        return "its tables cannot be read"
    return None


def training_record(buf: bytes) -> dict | None:
    """The record `edge train` embedded (classes, base, validation), or None."""
    data = embedded_files(buf).get(RECORD_FILE)
    try:
        record = json.loads(data) if data is not None else None
    except ValueError:
        return None
    return record if isinstance(record, dict) else None
