"""`coreg-edge info model.onnx`: the file's metadata, size and opset, readable on a device install.

The device install has neither `onnx` nor torch, and opening an onnxruntime session just to read a few
header fields would optimise the whole graph. So this reads the ModelProto's top-level protobuf fields
directly (ir_version, producer, opset_import, metadata_props) and seeks past the graph without loading it.
"""

from __future__ import annotations

import io
import json
import os
import sys
from pathlib import Path
from typing import Any, BinaryIO

from coreg_edge.cpu import kernel_family
from coreg_edge.runtime.metadata import METADATA_KEY, NotOnnxError, parse_metadata
from coreg_edge.utils import one_line

# ModelProto field numbers (onnx.proto3).
_IR_VERSION, _PRODUCER_NAME, _PRODUCER_VERSION, _OPSET_IMPORT, _METADATA_PROPS = 1, 2, 3, 8, 14
_HEADER_FIELDS = frozenset({_PRODUCER_NAME, _PRODUCER_VERSION, _OPSET_IMPORT, _METADATA_PROPS})
_VARINT, _FIXED64, _BYTES, _FIXED32 = 0, 1, 2, 5


class _Malformed(Exception):
    pass


def _varint(stream: BinaryIO) -> int | None:
    """A base-128 varint; None at a clean end of stream."""
    result, shift = 0, 0
    while True:
        byte = stream.read(1)
        if not byte:
            if shift:
                raise _Malformed("truncated varint")
            return None
        result |= (byte[0] & 0x7F) << shift
        if not byte[0] & 0x80:
            return result
        shift += 7
        if shift > 63:
            raise _Malformed("varint too long")


def _fields(stream: BinaryIO, size: int, keep: frozenset[int] | None = None) -> Any:
    """Yield (field number, wire type, value) of one message; length-delimited fields are read as bytes
    when their number is in `keep` (all when None) and skipped with a seek (value None) otherwise."""
    while True:
        key = _varint(stream)
        if key is None:
            return
        number, wire = key >> 3, key & 7
        if number == 0:
            raise _Malformed("field number 0")
        if wire == _VARINT:
            value = _varint(stream)
            if value is None:
                raise _Malformed("truncated field")
            yield number, wire, value
        elif wire in (_FIXED64, _FIXED32):
            stream.seek(8 if wire == _FIXED64 else 4, io.SEEK_CUR)
            yield number, wire, None
        elif wire == _BYTES:
            length = _varint(stream)
            if length is None or stream.tell() + length > size:
                raise _Malformed("length past the end of the file")
            if keep is None or number in keep:
                yield number, wire, stream.read(length)
            else:
                stream.seek(length, io.SEEK_CUR)
                yield number, wire, None
        else:
            raise _Malformed(f"wire type {wire}")


def _message(data: bytes) -> dict[int, Any]:
    """A small nested message (opset entry, metadata entry) as {field: value}."""
    out: dict[int, Any] = {}
    for number, _, value in _fields(io.BytesIO(data), len(data)):
        out[number] = value
    return out


ORT_IDENTIFIER = b"ORTM"  # the flatbuffer file identifier of onnxruntime's ORT format (bytes 4-8)


def is_ort_format(path: str | os.PathLike[str]) -> bool:
    """Whether the file is in onnxruntime's ORT format (`.ort`), whatever its name."""
    with open(path, "rb") as stream:
        return stream.read(8)[4:8] == ORT_IDENTIFIER


def _ort_header(path: Path) -> dict[str, Any]:
    """The header of an ORT-format file, read by onnxruntime itself (a flatbuffer, not a protobuf; the
    graph is optimised already, so a session opens fast). ORT files record no ir_version or opsets here."""
    import onnxruntime as ort  # lazy: runtime rule, onnxruntime loads on first use (headers need none)

    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises bare pybind exceptions
        raise NotOnnxError(f"{path}: not a readable ORT-format model ({one_line(exc)})") from exc
    meta = session.get_modelmeta()
    return {"ir_version": None, "producer": meta.producer_name, "opsets": {},
            "metadata_props": dict(meta.custom_metadata_map), "container": "ort"}  # fmt: skip


def read_header(path: str | os.PathLike[str]) -> dict[str, Any]:
    """ir_version, producer, opsets {domain: version} and metadata_props {key: value} of an ONNX file
    (or of an ORT-format file: `container` "ort")."""
    path = Path(path)
    if is_ort_format(path):
        return _ort_header(path)
    size = path.stat().st_size
    header: dict[str, Any] = {"ir_version": None, "producer": "", "opsets": {}, "metadata_props": {}}
    producer = ["", ""]
    try:
        with path.open("rb") as stream:
            for number, _, value in _fields(stream, size, _HEADER_FIELDS):
                if number == _IR_VERSION:
                    header["ir_version"] = value
                elif number in (_PRODUCER_NAME, _PRODUCER_VERSION):
                    producer[number - _PRODUCER_NAME] = value.decode("utf-8")
                elif number == _OPSET_IMPORT:
                    entry = _message(value)
                    header["opsets"][entry.get(1, b"").decode("utf-8")] = int(entry.get(2, 0))
                elif number == _METADATA_PROPS:
                    entry = _message(value)
                    header["metadata_props"][entry.get(1, b"").decode("utf-8")] = entry.get(2, b"").decode(
                        "utf-8"
                    )
    except (_Malformed, UnicodeDecodeError, AttributeError) as exc:
        raise NotOnnxError(f"{path}: not an ONNX model file ({exc})") from exc
    if not header["ir_version"] or not header["opsets"]:
        raise NotOnnxError(f"{path}: not an ONNX model file (no ir_version or opset_import)")
    header["producer"] = " ".join(part for part in producer if part)
    header["container"] = "onnx"
    return header


def describe_onnx(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The `coreg_edge` metadata plus file, bytes, opset (default domain), ir_version and producer.

    A file without coreg_edge metadata is described too (`coreg_edge_metadata: false`), so a user can
    see why predict asks for --classes.
    """
    path = Path(path)
    if not path.is_file():
        raise NotOnnxError(f"{path}: no such ONNX file")
    header = read_header(path)
    opsets = header["opsets"]
    meta = parse_metadata(header["metadata_props"], str(path))
    summary: dict[str, Any] = {
        "file": str(path),
        "bytes": path.stat().st_size,
        "opset": opsets.get("", opsets.get("ai.onnx")),
        "ir_version": header["ir_version"],
        "producer": header["producer"],
        "container": header["container"],
        "coreg_edge_metadata": meta is not None,
    }
    other = {domain: version for domain, version in opsets.items() if domain not in ("", "ai.onnx")}
    if other:
        summary["other_opsets"] = other
    summary.update(meta or {})
    if isinstance(summary.get("quantization"), dict):  # an int8 file: which kernels it would meet here
        summary["int8_kernels_here"] = kernel_family()
    extra = {k: v for k, v in header["metadata_props"].items() if k != METADATA_KEY}
    if extra:
        summary["other_metadata"] = extra
    return summary


def main() -> None:  # pragma: no cover - debugging aid: python -m coreg_edge.runtime.describe FILE
    print(json.dumps(describe_onnx(sys.argv[1]), indent=2))


if __name__ == "__main__":  # pragma: no cover
    main()
