"""`coreg-edge predict`: classify image files and folders with an exported ONNX model (onnxruntime only)."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Sequence

import click
from tqdm import tqdm

from coreg_edge.cli.common import common_options, handle_errors, settings_options
from coreg_edge.errors import UserError
from coreg_edge.runtime.classifier import Classifier, Prediction
from coreg_edge.runtime.image import IMAGE_EXTENSIONS, find_images
from coreg_edge.runtime.session import providers_for_device
from coreg_edge.settings.bench import PredictSettings


def _round(prob: float) -> float:
    return round(prob, 6)


def _answer(prediction: Prediction, threshold: float | None) -> str | None:
    """The top-1 label, or None ("none of these") when --reject is on and its probability is below the threshold."""
    return None if threshold is not None and prediction.prob < threshold else prediction.label


def _json_line(path: str, prediction: Prediction, threshold: float | None = None) -> str:
    if not prediction.ok:
        return json.dumps({"path": path, "error": prediction.error}, ensure_ascii=False)
    top = [{"label": t.label, "index": t.index, "prob": _round(t.prob)} for t in prediction.top]
    if threshold is None:
        return json.dumps({"path": path, "top": top}, ensure_ascii=False)
    answer = {"label": _answer(prediction, threshold), "score": _round(prediction.prob)}
    return json.dumps({"path": path, **answer, "top": top}, ensure_ascii=False)


def _threshold(s: PredictSettings, classifier: Classifier, model: str) -> float | None:
    """--reject's threshold: --reject-below, else the one the model carries (None without --reject)."""
    if not s.reject and s.reject_below is None:
        return None
    if s.reject_below is not None:
        return s.reject_below
    value = classifier.metadata.get("reject_threshold")
    if not isinstance(value, (int, float)):
        raise UserError(f"{model} carries no rejection threshold (export it again from its run); or pass --reject-below P")
    return float(value)


def _csv_header(k: int, reject: bool = False) -> list[str]:
    columns = ["path", "label", "score"] if reject else ["path"]
    for rank in range(1, k + 1):
        columns += [f"label_{rank}", f"index_{rank}", f"prob_{rank}"]
    return [*columns, "error"]


def _csv_row(path: str, prediction: Prediction, k: int, threshold: float | None = None) -> list[str]:
    answer = [] if threshold is None else ["", ""]
    if not prediction.ok:
        return [path, *answer, *[""] * (3 * k), prediction.error or ""]
    if threshold is not None:
        answer = [_answer(prediction, threshold) or "", f"{_round(prediction.prob)}"]
    cells = [path, *answer]
    for t in prediction.top:
        cells += [t.label, str(t.index), f"{_round(t.prob)}"]
    return [*cells, ""]


def _table(rows: Sequence[tuple[str, Prediction]], k: int, threshold: float | None = None) -> str:
    """Aligned columns: path, then label and probability per rank; a failed image shows its error instead.
    With --reject, a top-1 below the threshold reads "(none of these)"."""
    header = ["path"] + [cell for rank in range(1, k + 1) for cell in (f"top-{rank}", "prob")]

    def shown(prediction: Prediction, rank: int, label: str) -> str:
        return "(none of these)" if rank == 0 and _answer(prediction, threshold) is None else label

    cells = {
        index: [path] + [cell for r, t in enumerate(prediction.top) for cell in (shown(prediction, r, t.label),
                                                                                  f"{t.prob:.4f}")]
        for index, (path, prediction) in enumerate(rows)
        if prediction.ok
    }  # fmt: skip
    widths = [max(len(row[i]) for row in [header, *cells.values()]) for i in range(len(header))]
    widths[0] = max([widths[0], *(len(path) for path, _ in rows)])

    def line(row: list[str]) -> str:
        # Probabilities (even columns after the path) align right, text aligns left.
        return "  ".join(
            c.rjust(w) if i and i % 2 == 0 else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()

    lines = [line(header)]
    for index, (path, prediction) in enumerate(rows):
        lines.append(
            line(cells[index]) if index in cells else f"{path.ljust(widths[0])}  ERROR: {prediction.error}"
        )
    return "\n".join(lines)


EPILOG = f"""\b
Examples:
  coreg-edge predict dist/cifar10/model.int8.onnx photo.jpg
  coreg-edge predict model.onnx photos/ --format json > predictions.jsonl
  coreg-edge predict model.onnx a.png b.png --topk 3 --format csv
  coreg-edge predict foreign.onnx img.jpg --classes cat,dog --input-size 224 \\
      --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225

\b
Folders are searched recursively for {", ".join(IMAGE_EXTENSIONS)} (sorted, hidden files skipped).
Exit status: 0 all images classified, 1 some failed (each reported in the output), 2 usage error.
"""


@click.command(epilog=EPILOG)
@click.argument("model", type=click.Path(path_type=str))
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=str), metavar="INPUT...")
@settings_options(PredictSettings)
@common_options
@handle_errors
def predict(model: str, inputs: tuple[str, ...], device: str, seed: int, quiet: bool, **options) -> None:
    """Classify image files and folders (INPUT...) with MODEL (.onnx or .ort); prints the top-k classes per image.

    Needs only onnxruntime, numpy and pillow (the device install). Preprocessing and class names come
    from the model's own metadata.
    """
    paths = find_images(list(inputs))
    if not paths:
        raise click.UsageError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found in {', '.join(inputs)}")
    s = PredictSettings(**options)
    topk, fmt, batch_size = s.topk, s.format, s.batch_size
    classifier = Classifier(
        model,
        threads=s.threads,
        providers=s.provider if s.provider else providers_for_device(device),
        class_names=s.classes,
        input_size=s.input_size,
        mean=s.mean,
        std=s.std,
        batch_size=batch_size,
        caller="cli",
    )
    k = min(topk, classifier.num_classes)
    threshold = _threshold(s, classifier, model)
    writer = csv.writer(sys.stdout, lineterminator="\n") if fmt == "csv" else None
    if writer is not None:
        writer.writerow(_csv_header(k, threshold is not None))
    rows: list[tuple[str, Prediction]] = []
    failed = 0
    bar = tqdm(
        total=len(paths),
        unit="img",
        file=sys.stderr,
        disable=quiet or len(paths) <= batch_size or not sys.stderr.isatty(),
    )
    with bar:
        predictions = classifier.iter_predict(paths, topk=topk, batch_size=batch_size, skip_errors=True)
        for path, prediction in zip(paths, predictions, strict=True):
            failed += not prediction.ok
            shown = str(path)
            if fmt == "json":
                click.echo(_json_line(shown, prediction, threshold))
            elif writer is not None:
                writer.writerow(_csv_row(shown, prediction, k, threshold))
            else:
                rows.append((shown, prediction))
            bar.update()
    if fmt == "table":
        click.echo(_table(rows, k, threshold))
    sys.stdout.flush()
    if failed:
        click.echo(
            f"Error: {failed} of {len(paths)} inputs could not be classified (see their error entries)",
            err=True,
        )
        click.get_current_context().exit(1)
