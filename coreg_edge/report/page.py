"""The report page: one self-contained HTML file (PNG pictures inline as data: URIs, CSS inline; one line
of script only counts the pictures that loaded, for a headless browser to read), written atomically. Each section says plainly what it lacks when the input has no such part."""

from __future__ import annotations

import base64
import html
import os
import re
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from coreg_edge import __version__
from coreg_edge.annotation_file import load
from coreg_edge.errors import MissingExtraError, UserError
from coreg_edge.formats import FORMATS, REJECTED_SUFFIX, file_passed
from coreg_edge.locks import check_writable
from coreg_edge.report.evaluation import eval_answers
from coreg_edge.report.sources import ReportSources, find_sources
from coreg_edge.runtime.describe import describe_onnx
from coreg_edge.training.run_folder import metrics_rows
from coreg_edge.utils import atomic_path, one_line

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 1100px;
       color: #222; padding: 0 1rem; }
h1 { font-size: 1.5rem; margin-bottom: 0.2rem; } h2 { font-size: 1.15rem; margin-top: 2rem; }
.meta { color: #666; font-size: 0.9rem; } .missing { color: #8a6d3b; background: #fcf8e3; padding: 0.5rem; }
table { border-collapse: collapse; font-size: 0.9rem; margin: 0.5rem 0; }
th, td { border: 1px solid #ddd; padding: 0.3rem 0.6rem; text-align: right; }
th { background: #f5f5f5; } td.l, th.l { text-align: left; } .fail { color: #b00; font-weight: bold; }
.ok { color: #080; } figure { margin: 1rem 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.85rem; }
"""


# body data-images / data-loaded: how many pictures the page has and how many the browser decoded
COUNT_LOADED = """<script>
window.addEventListener("load", () => { const images = Array.from(document.images);
  document.body.dataset.images = images.length;
  document.body.dataset.loaded = images.filter((i) => i.complete && i.naturalWidth > 0).length; });
</script>"""


def _e(value: Any) -> str:
    return html.escape(str(value))


def _num(value: Any, spec: str = ".4f") -> str:
    return "n/a" if not isinstance(value, (int, float)) or isinstance(value, bool) else format(value, spec)


def _figure(key: str, png: bytes, caption: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (f'<figure id="{key}"><img alt="{_e(caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{_e(caption)}</figcaption></figure>")  # fmt: skip


def _missing(text: str) -> str:
    return f'<p class="missing">{_e(text)}</p>'


def _table(header: list[str], rows: list[list[str]], left: int = 1) -> str:
    head = "".join(f'<th class="l">{_e(h)}</th>' if i < left else f"<th>{_e(h)}</th>" for i, h in enumerate(header))
    body = "".join(
        "<tr>" + "".join(f'<td class="l">{c}</td>' if i < left else f"<td>{c}</td>" for i, c in enumerate(row)) + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _training(sources: ReportSources, plots: Any, quiet: bool) -> list[str]:

    parts = ["<h2>Training</h2>"]
    if sources.run is None:
        if sources.export is not None and not (sources.export / "parity.json").is_file():
            return [*parts, _missing("no training run here (without parity.json, an export folder does not say "
                                     "which run it came from)")]  # fmt: skip
        return [*parts, _missing("no training run here (its folder, named in parity.json, is gone)")]
    metrics, skipped = metrics_rows(sources.run / "metrics.jsonl")
    if skipped:
        note = f"{sources.run / 'metrics.jsonl'}: left out {describe_skipped(skipped)}"
        warnings.warn(note, UserWarning, stacklevel=2)
        parts.append(_missing(note))
    config = sources.read("config") or {}
    selection = sources.read("selection") or {}
    peers = sorted(k for k in (metrics[-1].get("holdout") or {}) if k != "ensemble") if metrics else []
    accuracy = selection.get("test_accuracy") or {}
    parts.append(
        f"<p>{_e(config.get('method'))} on {_e((config.get('network') or {}).get('backbone'))}, "
        f"{len(metrics)} epochs. Selected: <b>{_e(selection.get('selected'))}</b> ({_e(selection.get('reason'))}); "
        f"test accuracy {', '.join(f'{_e(k)} {_num(v)}' for k, v in accuracy.items())}.</p>"
    )
    if metrics:
        parts.append(_figure("curves", plots.training_curves(metrics, peers),
                             "per epoch and network: loss, held-out hit rate, test accuracy, share of items in P"))  # fmt: skip
    else:
        parts.append(_missing("metrics.jsonl is empty: no finished epoch"))
    answers, why = eval_answers(sources.run, quiet=quiet)
    if answers is None:
        parts.append(_missing(f"no confusion matrix: {why}"))
    else:
        caption = f"the selected network ({answers.peer}) on {answers.source}: confusion and per-class accuracy"
        parts.append(_figure("confusion", plots.confusion(answers.predicted, answers.labels, answers.class_names), caption))
    return parts


# Marks a page as this command's: a report rewrites its own page, never another file (README: outputs).
GENERATOR = '<meta name="generator" content="coreg-edge report">'
def describe_skipped(skipped: list[tuple[int, str]]) -> str:
    """'line 3 (not JSON), line 9 (cut short: ...)', lines with the same reason grouped."""
    reasons: dict[str, list[int]] = {}
    for number, why in skipped:
        reasons.setdefault(why, []).append(number)
    parts = []
    for why, numbers in reasons.items():
        if numbers == [0]:
            parts.append(f"the whole file ({why})")
            continue
        shown = ", ".join(map(str, numbers[:10])) + (f" and {len(numbers) - 10} more" if len(numbers) > 10 else "")
        parts.append(f"line{'s' if len(numbers) > 1 else ''} {shown} ({why})")
    return "; ".join(parts)


def _deployable(sources: ReportSources, summary: dict[str, Any]) -> list[str]:
    """The pipeline's deployable model, claimed only while its file is there."""
    named = summary.get("deployable")
    if not isinstance(named, str) or not named:
        return []
    if (sources.path / named).is_file():
        return [f"<p>Deployable model: <b>{_e(named)}</b></p>"]
    note = f"summary.json names {named} as the deployable model, but {sources.path / named} is not there"
    warnings.warn(note, UserWarning, stacklevel=2)
    return [_missing(f"No deployable model: {note} (export again: coreg-edge run with the same --out)")]


def _annotation(sources: ReportSources, plots: Any) -> list[str]:
    parts = ["<h2>Annotation</h2>"]
    if sources.annotation is None:
        return [*parts, _missing("the annotation file this run trained on is not here")]
    try:
        ann = load(sources.annotation)
    except UserError as exc:
        return [*parts, _missing(f"the annotation file cannot be read: {exc}")]
    stats = ann.stats()
    sizes = ann.candidates.sum(1).astype(np.int64)
    known = ann.labels >= 0
    rows = np.flatnonzero(known)
    covered = ann.candidates[rows, ann.labels[rows]] if len(rows) else None
    kind = ann.annotator.get("kind")
    parts.append(
        f"<p>{stats['num_items']} items, {stats['num_classes']} classes, annotator {_e(kind)}, "
        f"{stats['num_voters']} voters; mean set size {stats['mean_candidates']:.2f}; "
        f"coverage {_num(stats['coverage'], '.1%')}; zero-shot accuracy {_num(stats['zero_shot_accuracy'], '.1%')}; "
        f"{stats['rejected_items']} rejected, {stats['skipped_items']} unreadable.</p>"
    )
    parts.append(_figure("candidates", plots.candidate_sets(sizes, covered, ann.num_classes, sizes[rows]),
                         "candidate-set sizes, and how often the true class is in the set"))  # fmt: skip
    return parts


def _formats(sources: ReportSources, plots: Any) -> list[str]:
    parts = ["<h2>Export: every format</h2>"]
    parity = sources.read("parity")
    if parity is None:
        if sources.export is not None and (sources.export / "parity.json").is_file():
            return [*parts, _missing(f"{sources.export / 'parity.json'} is unreadable (not a JSON object)")]
        if sources.export is not None:  # the model files without their parity report: show what is there
            return [*parts, *_files_without_parity(sources, plots)]
        return [*parts, _missing("no export here: coreg-edge export RUN --out DIR --formats all")]
    if not all(isinstance(parity.get(key) or {}, dict) for key in ("checks", "files", "test_accuracy", "images")):
        return [*parts, _missing("parity.json is not in the layout coreg-edge export writes")]
    bench = sources.read("bench") or {}
    p50 = _latency_table(bench)
    sizes = sorted({size for times in p50.values() for size in times})
    accuracy = parity.get("test_accuracy") or {}
    rows = []
    for row in FORMATS:
        checks = (parity.get("checks") or {}).get(row.file_name)
        if checks is None:
            continue
        entry = (parity.get("files") or {}).get(row.file_name) or {}
        ok = file_passed(parity, row.file_name)
        mark = '<span class="ok">ok</span>' if ok else '<span class="fail">FAIL</span>'
        size = entry.get("bytes")
        rows.append([_e(row.name), _e(row.file_name), _num(size / 1e6 if size else None, ".2f"),
                     _num(accuracy.get(row.name)), mark,
                     *[_num((p50.get(row.name) or {}).get(b), ".3f") for b in sizes]])  # fmt: skip
    header = ["format", "file", "MB", "test acc", "parity", *[f"p50 ms b{b}" for b in sizes]]
    parts.append(_table(header, rows, left=2))
    parts += _latency(bench, p50, plots)
    parts.append("<h2>Parity against PyTorch</h2>")
    images = parity.get("images") or {}
    parts.append(f"<p>{_e(images.get('count'))} images ({_e(', '.join(images.get('sources') or []))}), "
                 f"peer {_e(parity.get('peer'))}: {'passed' if parity.get('ok') else 'FAILED: ' + _e(parity.get('reason'))}"
                 "</p>")  # fmt: skip
    check_rows = [
        [_e(name), _e(check), _num(result.get("value"), ".6g"), _e(f"{result.get('op')} {result.get('threshold')}"),
         '<span class="ok">ok</span>' if result.get("ok") else '<span class="fail">FAIL</span>']
        for name, checks in (parity.get("checks") or {}).items() for check, result in checks.items()
    ]  # fmt: skip
    parts.append(_table(["file", "check", "value", "limit", "result"], check_rows, left=2))
    if (parity.get("int8") or {}).get("note"):
        parts.append(f'<p class="meta">int8: {_e(parity["int8"]["note"])}</p>')
    return parts


def _latency_table(bench: dict[str, Any]) -> dict[Any, dict[int, float]]:
    """bench.json's p50 per format and batch size ({} when it has none, or is in another layout)."""
    formats = bench.get("formats")
    rows_timed = [row for row in formats if isinstance(row, dict)] if isinstance(formats, list) else []
    return {row.get("format"): {r["batch_size"]: r["p50_ms"] for r in row.get("results") or []
                                if isinstance(r, dict) and "batch_size" in r and "p50_ms" in r}
            for row in rows_timed}  # fmt: skip


def _latency(bench: dict[str, Any], p50: dict[Any, dict[int, float]], plots: Any) -> list[str]:
    if not any(p50.values()):
        return [_missing("no latencies: bench.json (a pipeline run's, or coreg-edge bench EXPORT_DIR --json > "
                         "EXPORT_DIR/bench.json) is missing or in the single-model layout")]  # fmt: skip
    cpu = bench.get("cpu") or "this CPU"
    timed = [{"format": name, "results": [{"batch_size": b, "p50_ms": ms} for b, ms in sorted(times.items())]}
             for name, times in p50.items() if times]  # fmt: skip
    return [f'<p class="meta">latency on {_e(cpu)}, {_e(bench.get("provider"))}, '
            f"{_e(bench.get('threads'))} threads, all formats interleaved</p>",
            _figure("latency", plots.latency(timed, cpu), "latency against batch size, per format")]  # fmt: skip


def _files_without_parity(sources: ReportSources, plots: Any) -> list[str]:
    """An export folder with its model files but no parity.json: each file's size and the test accuracy its
    own metadata records, parity unknown."""
    folder = sources.export
    assert folder is not None
    bench = sources.read("bench") or {}
    p50 = _latency_table(bench)
    sizes = sorted({size for times in p50.values() for size in times})
    rows = []
    for row in FORMATS:
        for name in (row.file_name, row.file_name + REJECTED_SUFFIX):
            path = folder / name
            if not path.is_file():
                continue
            try:
                accuracy = _num(describe_onnx(path).get("test_accuracy"))
            except UserError as exc:
                accuracy = f'<span class="fail">unreadable: {_e(exc)}</span>'
            mark = '<span class="fail">rejected</span>' if name.endswith(REJECTED_SUFFIX) else "unknown"
            rows.append([_e(row.name), _e(name), _num(path.stat().st_size / 1e6, ".2f"), accuracy, mark,
                         *[_num((p50.get(row.name) or {}).get(b), ".3f") for b in sizes]])  # fmt: skip
    header = ["format", "file", "MB", "test acc (its metadata)", "parity", *[f"p50 ms b{b}" for b in sizes]]
    return [_missing(f"no parity.json in {folder}: these files' parity against PyTorch is unknown here "
                     "(coreg-edge export RUN --out DIR --check-only checks them again and writes it)"),
            _table(header, rows, left=2), *_latency(bench, p50, plots)]  # fmt: skip


def build_page(sources: ReportSources, quiet: bool = True) -> str:
    """The whole HTML text."""
    try:
        import matplotlib  # noqa: F401  # lazy: optional dependency (the report extra)

        from coreg_edge.report import plots
    except ImportError as exc:
        raise MissingExtraError("coreg-edge report", "matplotlib", extra="report") from exc
    summary = sources.read("summary") or {}
    title = f"coreg-edge report: {sources.path.resolve().name}"
    body = [f"<h1>{_e(title)}</h1>",
            f'<p class="meta">{_e(sources.kind)} {_e(sources.path.resolve())}; '
            f"coreg-edge {_e(__version__)}; {_e(time.strftime('%Y-%m-%d %H:%M %Z'))}</p>"]  # fmt: skip
    body += _deployable(sources, summary)
    body += _annotation(sources, plots)
    body += _training(sources, plots, quiet)
    body += _formats(sources, plots)
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">{GENERATOR}<title>{_e(title)}</title>'
            f"<style>{CSS}</style></head><body>{''.join(body)}{COUNT_LOADED}</body></html>\n")  # fmt: skip


def write_report(
    path: str | os.PathLike[str], out: str | os.PathLike[str] | None = None, *, quiet: bool = True
) -> Path:
    """Report RUN_OR_EXPORT_OR_PIPELINE_RUN to `out` (default: report.html inside it), atomically."""
    sources = find_sources(path)
    target = Path(out) if out is not None else sources.path / "report.html"
    shown = f"--out {target}" if out is not None else str(target)
    if target.is_dir():
        raise UserError(f"{shown}: is a folder; give a file name such as {target / 'report.html'}")
    if target.suffix.lower() not in (".html", ".htm"):
        raise UserError(f"{shown}: a report is an .html file (did you mean {target}.html?)")
    if target.is_file() and not _is_our_report(target):
        raise UserError(f"{shown}: exists and is not a coreg-edge report; choose a new name, or delete it first "
                        "(nothing was overwritten)")  # fmt: skip
    _probe_writable(target, shown)  # before any rendering: an unwritable place must not cost the evaluation pass
    page = build_page(sources, quiet=quiet)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(target) as tmp:
            Path(tmp).write_text(page, encoding="utf-8")
    except OSError as exc:  # full disk, read-only file system, a folder gone meanwhile: one line, no temp name
        raise UserError(f"{shown}: cannot be written there ({exc.strerror or one_line(exc)})") from None
    return target


def _is_our_report(path: Path) -> bool:
    """A page this command wrote (its generator tag near the top; before the tag, the version line under its
    title): the one file a report may replace."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(1 << 16)
    except OSError:
        return False
    return GENERATOR.encode() in head or re.search(rb'<p class="meta">[^<]*; coreg-edge [0-9]', head) is not None


def _probe_writable(target: Path, shown: str) -> None:
    """Fail in one line, creating nothing, when `target` cannot be written: its nearest existing folder
    gets the probe every output uses (locks.check_writable: a real temporary file, made and removed)."""
    folder = target.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise UserError(f"{shown}: cannot be written there ({folder} is a file)")
    try:
        check_writable(folder)
    except UserError as exc:
        raise UserError(f"{shown}: cannot be written there ({exc})") from None


def figure_ids(page: str) -> list[str]:
    """The pictures a page holds, by id (tests and the CLI's summary line)."""
    return re.findall(r'<figure id="([^"]+)">', page)

