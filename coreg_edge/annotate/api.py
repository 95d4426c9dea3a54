"""`annotate()`: DATA + class names -> one annotation file. The CLI and notebooks both call this."""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from coreg_edge import __version__
from coreg_edge.annotate.classes import resolve_classes
from coreg_edge.annotate.clip import weights_identity
from coreg_edge.annotate.job import AnnotateJob, AnnotatorResult, Skips
from coreg_edge.annotate.journal import Journal, items_fingerprint
from coreg_edge.annotate.registry import Annotator, claimed_options, get_annotator
from coreg_edge.annotate.shards import parse_shard, shard_block, shard_path, shard_rows
from coreg_edge.annotate.voters import vote_items
from coreg_edge.annotation_file import Annotation, check_output_name
from coreg_edge.cpu import available_cpus
from coreg_edge.data import ImageSource, open_source
from coreg_edge.errors import UserError
from coreg_edge.locks import locks_output
from coreg_edge.runtime.image import pixel_limit
from coreg_edge.settings.annotate import AnnotateSettings
from coreg_edge.settings.fields import build, cli_flag, execution_keys
from coreg_edge.utils import resolve_device, resolve_function


def _warn_ignored(annotator: Any, s: AnnotateSettings) -> None:
    """One warning naming the options given for other annotators (they would be silently ignored)."""
    defaults = {f.name: f.default for f in dataclasses.fields(AnnotateSettings)}
    others = sorted(claimed_options() - set(annotator.options))
    given = [cli_flag(name) for name in others if getattr(s, name) != defaults[name]]
    if given:
        warnings.warn(f"the {annotator.name} annotator ignores {', '.join(given)}", stacklevel=3)


def annotate(
    data: str,
    out: str | Path | None = None,
    settings: AnnotateSettings | None = None,
    *,
    quiet: bool = False,
    resume: bool = False,
    overwrite: bool = False,
    **options: Any,
) -> Annotation:
    """Annotate DATA with candidate-label sets and (when `out` is given) write the file atomically.

    With `out`, a streaming annotator (clip) keeps its finished votes in OUT.partial/ as it goes, and
    `resume=True` continues a killed call from them (annotate/journal.py). `shard="K/N"` annotates the K-th
    of N parts of DATA into a shard file (annotate/shards.py; merge_shards joins them).

    `settings` (an AnnotateSettings) and/or its fields as keywords (keywords win):
    `annotator="clip"`: open_clip zero-shot votes of every template, combined by `mode`.
    `annotator="synthetic"`: the benchmark protocol (needs ground truth): partial rate q, noise rate eta.
    `annotator="simulated"`: an instance-dependent CLIP stand-in (needs ground truth): `preset` ("easy" or
    "hard"), each knob (`shots`, `sim_templates`, `template_bias`, `item_noise`, `temperature`,
    `feature_size`) overriding the preset's value unless None.
    `wording` ("number {}") is how a class name reads in prompts; the file keeps the plain names.
    An existing `out` is refused unless `overwrite=True`.
    """
    s = build(AnnotateSettings, settings, options)
    return _annotate(data, _shard_out(out, s), s, quiet=quiet, resume=resume, overwrite=overwrite)


@locks_output("out", "annotation file")
def _annotate(
    data: str, out: str | Path | None, s: AnnotateSettings, *, quiet: bool, resume: bool, overwrite: bool
) -> Annotation:
    with pixel_limit(s.max_image_pixels):  # restored afterwards: the limit is this call's, not the process's
        if out is not None:
            check_output_name(out, overwrite=overwrite)
        source = open_source(data, download=s.download, data_dir=s.data_dir, channels=s.channels)
        class_names, prompt_names, labels = resolve_classes(s.classes, source, s.wording)
        skips = Skips(s.strict)
        annotator = get_annotator(s.annotator)
        _warn_ignored(annotator, s)
        if annotator.needs_labels and not (labels >= 0).all():
            raise UserError(
                f"the {annotator.name} annotator needs ground truth, and {data} has none "
                "(use a folder with one sub-folder per class, or a built-in dataset)"
            )
        s = _bounded_workers(s)
        rows, shard = _shard(s, len(source), annotator)
        journal = _journal(out, s, source, class_names, prompt_names, shard, resume, annotator)
        job = AnnotateJob(data, source, class_names, prompt_names, labels, s, skips, quiet, rows, journal)
        result = _run(annotator, job)
        identity: dict[str, Any] = {"kind": s.annotator, "model": None, "pretrained": None, "mode": None,
                                    "k": None, "ratio": None, "partial_rate": None, "noise_rate": None,
                                    "seed": s.seed, **result.identity}  # fmt: skip

        keep = np.asarray([i for i in job.item_rows if i not in skips.indices], dtype=np.int64)
        if len(keep) == 0 and shard is None:  # a shard may be empty: the merge still needs its file
            raise UserError(f"{data}: no readable images")
        before = keep
        keep, rejected = _reject(keep, result, s.reject if "reject" in annotator.options else None, source)
        if len(keep) == 0 and shard is None:
            best = float(result.probs[before - result.first_row].max())
            kept = (f" (the votes are kept in {journal.folder}: the same command with --resume and a lower --reject "
                    "reuses them)") if journal is not None else ""  # fmt: skip
            raise UserError(f"--reject {s.reject}: every item was rejected (the best zero-shot probability of any "
                            f"item is {best:.3f}); lower it{kept}")  # fmt: skip
        at = keep - result.first_row  # positions in the result's arrays
        annotation = Annotation(
            candidates=result.candidates[at],
            labels=labels[keep],
            item_ids=[source.item_ids[i] for i in keep],
            class_names=class_names,
            votes=result.votes[at],
            zero_shot_probs=result.probs[at],
            voters=result.voters,
            annotator=identity,
            # a raised pixel limit travels with the data: training and export decode the same images
            data={
                **source.describe(),
                **({"max_image_pixels": s.max_image_pixels} if s.max_image_pixels else {}),
            },
            skipped=skips.items,
            rejected=rejected,
            extra={"prompt_names": prompt_names, "coreg_edge_version": __version__,
                   **({"shard": shard} if shard else {})},
        )  # fmt: skip
        if out is not None:
            annotation.save(out)
        if journal is not None:
            journal.finish()
        return annotation


def _run(annotator: Annotator, job: AnnotateJob) -> AnnotatorResult:
    """The annotator's result for the job: its protocol's, or its panel's voters driven batch by batch (the
    registry row only names them)."""
    if annotator.protocol is not None:
        return resolve_function(annotator.protocol)(job)
    return vote_items(job, resolve_function(annotator.panel)(job))


def _bounded_workers(s: AnnotateSettings) -> AnnotateSettings:
    """--workers at most this machine's cores, said once (torch's DataLoader warns about more in 300 characters,
    once per loader, and the extra processes only compete for the same cores)."""
    cores = available_cpus()
    if s.workers <= cores:
        return s
    warnings.warn(f"--workers {s.workers}: this machine has {cores} CPU core(s) for this process; using {cores}",
                  stacklevel=3)  # fmt: skip
    return dataclasses.replace(s, workers=cores)


def _shard_out(out: str | Path | None, s: AnnotateSettings) -> str | Path | None:
    """--out with {shard} filled in (one file per rank under torchrun: --shard auto --out 'ann-{shard}.npz').
    --shard auto without {shard} is refused before any work: every rank would write the one file."""
    if out is not None and s.shard and s.shard.strip() == "auto" and "{shard}" not in str(out):
        raise UserError(f"--shard auto --out {out}: every rank would write this one file; put {{shard}} in the "
                        "name (e.g. --out 'ann-{shard}.npz') so each rank writes its own")  # fmt: skip
    if out is None or "{shard}" not in str(out):
        return out
    if not s.shard:
        raise UserError(f"--out {out}: {{shard}} is filled in only with --shard K/N or --shard auto")
    return shard_path(out, *parse_shard(s.shard))


def _shard(s: AnnotateSettings, total: int, annotator: Any) -> tuple[np.ndarray | None, dict[str, Any] | None]:
    """The rows of --shard K/N and the shard block the file records (None, None: all of DATA)."""
    if not s.shard:
        return None, None
    if annotator.protocol is not None:
        raise UserError(f"--shard: the {annotator.name} annotator has no voters to share out; annotate it in one go")
    if not annotator.streaming:
        raise UserError(f"--shard needs a streaming annotator (clip); the {annotator.name} annotator fits its "
                        "voters on the whole set at once")  # fmt: skip
    index, count = parse_shard(s.shard)
    rows = shard_rows(total, index, count, s.batch_size)
    return rows, shard_block(index, count, rows, total, s.batch_size, s.reject if "reject" in annotator.options else None)


def _journal(
    out: str | Path | None, s: AnnotateSettings, source: ImageSource, class_names: list[str],
    prompt_names: list[Any], shard: dict[str, Any] | None, resume: bool, annotator: Any,
) -> Any:  # fmt: skip
    """OUT.partial/'s journal for a voting annotator writing a file; None otherwise."""
    if out is None or annotator.panel is None or not annotator.streaming:
        if resume:
            raise UserError(f"--resume needs a streaming annotator (clip) writing --out; the {annotator.name} "
                            "annotator fits or draws on the whole set at once, so there is nothing to resume: "
                            "run it again without --resume")  # fmt: skip
        return None
    # --reject only filters the finished votes: a resumed call may change it (after "every item was rejected")
    settings = {k: v for k, v in dataclasses.asdict(s).items()
                if k not in execution_keys(AnnotateSettings) and k != "reject"}  # fmt: skip
    shard = None if shard is None else {k: v for k, v in shard.items() if k != "reject"}
    # batch size and device too: other batch boundaries or another arithmetic would change the last digits
    identity = {"settings": settings, "data": source.describe(), "items": len(source),
                "item_files": items_fingerprint(source), "weights": weights_identity(s), "classes": class_names,
                "prompt_names": prompt_names, "shard": shard, "batch_size": s.batch_size,
                "device": resolve_device(s.device).split(":")[0], "coreg_edge_version": __version__}  # fmt: skip
    return Journal(out, identity, resume=resume)


def _reject(
    keep: np.ndarray, result: AnnotatorResult, threshold: float | None, source: ImageSource
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Items whose best zero-shot probability is below `threshold` leave the annotation (listed instead)."""
    if threshold is None or result.probs.shape[1] == 0 or not len(keep):  # nothing to reject on
        return keep, []
    score = result.probs[keep - result.first_row].max(1)
    out = score < threshold
    rejected = [{"item": source.item_ids[int(i)], "score": round(float(p), 6)} for i, p in zip(keep[out], score[out], strict=True)]
    return keep[~out], rejected
