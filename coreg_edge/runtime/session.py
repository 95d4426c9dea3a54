"""Open an ONNX file with onnxruntime: providers, threads, and one-line errors for bad model files."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from coreg_edge.cpu import default_threads
from coreg_edge.errors import UserError
from coreg_edge.formats import published_name, rejected_note
from coreg_edge.runtime.metadata import (
    FILE_METADATA_WRONG,
    MetadataError,
    MetadataOverrides,
    ModelError,
    ModelNotFoundError,
    NotOnnxError,
    named_value,
    parse_metadata,
    resolve_metadata,
)
from coreg_edge.runtime.preprocess import PreprocessConfig
from coreg_edge.runtime.spec import ModelSpec
from coreg_edge.utils import one_line

CPU = "CPUExecutionProvider"
# Short names users type -> onnxruntime's provider names.
PROVIDER_ALIASES = {
    "cpu": CPU,
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "dml": "DmlExecutionProvider",
    "directml": "DmlExecutionProvider",
    "rocm": "ROCMExecutionProvider",
    "migraphx": "MIGraphXExecutionProvider",
    "qnn": "QNNExecutionProvider",
    "xnnpack": "XnnpackExecutionProvider",
    "nnapi": "NnapiExecutionProvider",
    "acl": "ACLExecutionProvider",
}


def available_providers() -> list[str]:
    """Execution providers the installed onnxruntime build has."""
    return list(ort.get_available_providers())


def resolve_providers(providers: str | Sequence[str] | None = None) -> list[str]:
    """Providers in priority order, CPU always last as the fallback; None means CPU only.

    Accepts onnxruntime names or short ones (cpu, cuda, tensorrt, openvino, coreml, dml, ...), as a list
    or one comma-separated string. A provider this onnxruntime lacks is a one-line error listing the others.
    """
    if providers is None:
        return [CPU]
    if isinstance(providers, str):
        providers = [part for part in providers.split(",") if part.strip()]
    have = available_providers()
    chosen: list[str] = []
    for name in providers:
        full = PROVIDER_ALIASES.get(name.strip().lower(), name.strip())
        if full not in have:
            short = {value: key for key, value in PROVIDER_ALIASES.items()}
            names = ", ".join(f"{short.get(p, p)} ({p})" if p in short else p for p in have)
            raise UserError(
                f"execution provider {name!r} is not in this onnxruntime build; available: {names}"
            )
        if full not in chosen:
            chosen.append(full)
    if CPU not in chosen and CPU in have:
        chosen.append(CPU)
    return chosen


def providers_for_device(device: str) -> list[str]:
    """The CLI's --device: cpu -> CPU; cuda -> CUDA (error if absent); auto -> CUDA when installed, else CPU."""
    if device == "cpu":
        return [CPU]
    if device == "cuda" or "CUDAExecutionProvider" in available_providers():
        return resolve_providers(["cuda"])
    return [CPU]


def open_session(
    model: str | os.PathLike[str],
    *,
    threads: int | None = None,
    providers: str | Sequence[str] | None = None,
    spinning: bool = True,
    caller: str = "python",
) -> ort.InferenceSession:
    """An InferenceSession with explicit threads (default: physical cores) and quiet logging.

    `spinning=False` stops idle worker threads from busy-waiting, so two sessions timed alternately do not
    steal each other's cores (bench --vs). `caller` ("python" or "cli") says how errors name the settings.
    """
    path = Path(model)
    if not path.exists():
        raise ModelNotFoundError(f"model file not found: {path}")
    if path.is_dir():
        raise NotOnnxError(f"{path} is a folder, not an ONNX file (pass e.g. {path / 'model.onnx'})")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1):
        raise UserError(f"{named_value('threads', threads, caller)}: must be a whole number >= 1")
    chosen = resolve_providers(providers)
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads) if threads else default_threads()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # errors only: no provider-fallback chatter on stderr
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    ort_format = published_name(path).endswith(".ort")
    if ort_format and path.suffix != ".ort":  # model.ort.rejected: onnxruntime tells formats by the suffix
        options.add_session_config_entry("session.load_model_format", "ORT")
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=chosen)
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises bare pybind exceptions
        first = one_line(exc)
        kind = "an ORT-format model" if ort_format else "an ONNX model"
        raise NotOnnxError(f"{path}: onnxruntime cannot load it as {kind} ({first})") from exc


@dataclass
class LoadedModel:
    """A session plus everything needed to feed it: resolved metadata, the model's spec, tensor names."""

    path: Path
    session: ort.InferenceSession
    metadata: dict[str, Any]
    spec: ModelSpec
    input_name: str
    output_name: str
    threads: int
    fixed_batch: int | None = None
    providers: list[str] = field(default_factory=list)

    @property
    def config(self) -> PreprocessConfig:
        """The preprocessing (the spec's)."""
        return self.spec.preprocess

    @property
    def provider(self) -> str:
        """The provider that actually runs the model (onnxruntime may have fallen back to CPU)."""
        return self.providers[0] if self.providers else CPU

    @property
    def bytes(self) -> int:
        """Model size: the .onnx file's size in bytes."""
        return self.path.stat().st_size

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Logits for a float32 (N, C, H, W) batch; a fixed-batch model gets padded chunks."""
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if self.fixed_batch is None or len(batch) == self.fixed_batch:
            return self.session.run([self.output_name], {self.input_name: batch})[0]
        outputs = []
        for start in range(0, len(batch), self.fixed_batch):
            chunk = batch[start : start + self.fixed_batch]
            pad = self.fixed_batch - len(chunk)
            if pad:
                chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), dtype=np.float32)])
            outputs.append(
                self.session.run([self.output_name], {self.input_name: chunk})[0][: len(chunk) - pad]
            )
        return np.concatenate(outputs)


def _pick(items: Sequence[Any], wanted: str, kind: str, source: str) -> Any:
    for item in items:
        if item.name == wanted:
            return item
    if len(items) == 1:
        return items[0]
    names = ", ".join(item.name for item in items)
    raise ModelError(f"{source}: expected one {kind} named {wanted!r} (the model has {names})")


def load_model(
    model: str | os.PathLike[str],
    *,
    threads: int | None = None,
    providers: str | Sequence[str] | None = None,
    overrides: MetadataOverrides | None = None,
    need_class_names: bool = True,
    need_normalisation: bool = True,
    spinning: bool = True,
    caller: str = "python",
) -> LoadedModel:
    """Open `model` and resolve its metadata (file, then overrides, then static shapes). A rejected export
    (NAME.rejected) opens with a warning saying why it was rejected. `caller` ("python" or "cli"): how
    errors name the settings."""
    path = Path(model)
    session = open_session(path, threads=threads, providers=providers, spinning=spinning, caller=caller)
    note = rejected_note(path)
    if note is not None:
        warnings.warn(note, UserWarning, stacklevel=2)
    source = str(path)
    image_input = _pick(session.get_inputs(), "images", "input", source)
    logits_output = _pick(session.get_outputs(), "logits", "output", source)
    if image_input.type != "tensor(float)" or len(image_input.shape) != 4:
        raise ModelError(
            f"{source}: input {image_input.name!r} is {image_input.type} {image_input.shape}; "
            "expected float32 (N, C, H, W) images"
        )
    found = parse_metadata(session.get_modelmeta().custom_metadata_map, source)
    metadata = resolve_metadata(
        found,
        overrides,
        input_shape=image_input.shape,
        output_shape=logits_output.shape,
        source=source,
        need_class_names=need_class_names,
        need_normalisation=need_normalisation,
        caller=caller,
    )
    try:
        spec = ModelSpec.from_metadata(metadata)
    except MetadataError as exc:
        given = overrides.given(caller) if overrides is not None else []
        blame = f"with {', '.join(given)} given" if given else FILE_METADATA_WRONG
        raise MetadataError(f"{source}: {blame}: {exc}") from exc
    batch_dim = image_input.shape[0]
    return LoadedModel(
        path=path,
        session=session,
        metadata=metadata,
        spec=spec,
        input_name=image_input.name,
        output_name=logits_output.name,
        threads=session.get_session_options().intra_op_num_threads,
        fixed_batch=batch_dim if isinstance(batch_dim, int) and batch_dim > 0 else None,
        providers=list(session.get_providers()),
    )
