"""The one `coreg_edge` metadata entry inside an ONNX file, written with the runtime's own helpers.

`make_metadata` builds the object and `dumps_metadata` serialises it, both from coreg_edge.runtime, so the
writer (here) and the reader (the device's Classifier) cannot drift apart.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import onnx

from coreg_edge.runtime.describe import read_header
from coreg_edge.runtime.metadata import METADATA_KEY, dumps_metadata, parse_metadata


def set_metadata(path: str | os.PathLike[str], meta: Mapping[str, Any]) -> None:
    """Make the file's metadata_props exactly ONE entry, `coreg_edge` (onnxruntime's quantization tools
    add their own), drop opset imports no node uses, and save in place."""
    model = onnx.load(str(path))
    del model.metadata_props[:]
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, dumps_metadata(meta)
    used = {node.domain for node in model.graph.node} | {""}
    used |= {function.domain for function in model.functions}
    for function in model.functions:
        used |= {node.domain for node in function.node}
    kept = [opset for opset in model.opset_import if opset.domain in used or opset.domain == "ai.onnx"]
    del model.opset_import[:]
    model.opset_import.extend(kept)
    onnx.save(model, str(path))


def get_metadata(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The file's `coreg_edge` object (None when absent), read the way the device reads it."""
    return parse_metadata(read_header(path)["metadata_props"], str(path))
