"""`annotate()`: DATA + class names -> one annotation file. The CLI and notebooks both call this."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from coreg_edge import __version__
from coreg_edge.annotate.classes import resolve_classes
from coreg_edge.annotate.job import AnnotateJob, AnnotatorResult, Skips
from coreg_edge.annotate.registry import get_annotator
from coreg_edge.annotation_file import Annotation
from coreg_edge.data import ImageSource, open_source
from coreg_edge.errors import UserError
from coreg_edge.locks import locks_output
from coreg_edge.runtime.image import pixel_limit
from coreg_edge.settings.annotate import AnnotateSettings
from coreg_edge.settings.fields import build


def _warn_ignored(annotator: Any, s: AnnotateSettings) -> None:
    """One warning naming the options given for other annotators (they would be silently ignored)."""
    import dataclasses

    from coreg_edge.annotate.registry import claimed_options
    from coreg_edge.settings.fields import cli_flag

    defaults = {f.name: f.default for f in dataclasses.fields(AnnotateSettings)}
    others = sorted(claimed_options() - set(annotator.options))
    given = [cli_flag(name) for name in others if getattr(s, name) != defaults[name]]
    if given:
        warnings.warn(f"the {annotator.name} annotator ignores {', '.join(given)}", stacklevel=3)


@locks_output("out", "annotation file")
def annotate(
    data: str,
    out: str | Path | None = None,
    settings: AnnotateSettings | None = None,
    *,
    quiet: bool = False,
    **options: Any,
) -> Annotation:
    """Annotate DATA with candidate-label sets and (when `out` is given) write the file atomically.

    `settings` (an AnnotateSettings) and/or its fields as keywords (keywords win):
    `annotator="clip"`: open_clip zero-shot votes of every template, combined by `mode`.
    `annotator="synthetic"`: the benchmark protocol (needs ground truth): partial rate q, noise rate eta.
    `annotator="simulated"`: an instance-dependent CLIP stand-in (needs ground truth): `preset` ("easy" or
    "hard"), each knob (`shots`, `sim_templates`, `template_bias`, `item_noise`, `temperature`,
    `feature_size`) overriding the preset's value unless None.
    `wording` ("number {}") is how a class name reads in prompts; the file keeps the plain names.
    """
    s = build(AnnotateSettings, settings, options)
    with pixel_limit(s.max_image_pixels):  # restored afterwards: the limit is this call's, not the process's
        if out is not None and Path(out).suffix != ".npz":
            raise UserError(f"--out {out}: an annotation file ends in .npz (did you mean {out}.npz?)")
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
        result = annotator.annotate(AnnotateJob(data, source, class_names, prompt_names, labels, s, skips, quiet))
        identity: dict[str, Any] = {"kind": s.annotator, "model": None, "pretrained": None, "mode": None,
                                    "k": None, "ratio": None, "partial_rate": None, "noise_rate": None,
                                    "seed": s.seed, **result.identity}  # fmt: skip

        keep = np.asarray([i for i in range(len(source)) if i not in skips.indices], dtype=np.int64)
        if len(keep) == 0:
            raise UserError(f"{data}: no readable images")
        keep, rejected = _reject(keep, result, s.reject if "reject" in annotator.options else None, source)
        if len(keep) == 0:
            raise UserError(f"--reject {s.reject}: every item was rejected; lower it")
        annotation = Annotation(
            candidates=result.candidates[keep],
            labels=labels[keep],
            item_ids=[source.item_ids[i] for i in keep],
            class_names=class_names,
            votes=result.votes[keep],
            zero_shot_probs=result.probs[keep],
            voters=result.voters,
            annotator=identity,
            # a raised pixel limit travels with the data: training and export decode the same images
            data={
                **source.describe(),
                **({"max_image_pixels": s.max_image_pixels} if s.max_image_pixels else {}),
            },
            skipped=skips.items,
            rejected=rejected,
            extra={"prompt_names": prompt_names, "coreg_edge_version": __version__},
        )
        if out is not None:
            annotation.save(out)
        return annotation


def _reject(
    keep: np.ndarray, result: AnnotatorResult, threshold: float | None, source: ImageSource
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Items whose best zero-shot probability is below `threshold` leave the annotation (listed instead)."""
    if threshold is None or result.probs.shape[1] == 0:  # nothing to reject on
        return keep, []
    score = result.probs[keep].max(1)
    out = score < threshold
    rejected = [{"item": source.item_ids[int(i)], "score": round(float(p), 6)} for i, p in zip(keep[out], score[out], strict=True)]
    return keep[~out], rejected
