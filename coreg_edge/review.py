"""The review loop (`coreg-edge review`): a person checks a sample of a run's labels, and the corrected sample
becomes a labelled `--val` set that selects the peer by accuracy on it.

The sample is stratified: about `sample / C` items per predicted class, the least confident first (where the
run is most likely wrong). It is written as one folder per predicted class holding copies of the images (move
a wrong one into its right folder) and a self-contained `index.html` (thumbnails embedded) to look at them.
`review.json` records what was sampled. `train ANN --val review/` then reads the folder as labelled data.

What that accuracy is: the sample is drawn from the training items (the annotated ones the run learnt from),
the least confident first, so accuracy on it is a pessimistic, biased check of the labels, not an unbiased
held-out estimate of accuracy on new images (one from a held-out random sample is a later issue's work).
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from coreg_edge.classes import class_folders
from coreg_edge.errors import UserError
from coreg_edge.labels import LabelTable, labels_of_run, place_image
from coreg_edge.locks import locks_output
from coreg_edge.outputs import check_new_folder, new_folder
from coreg_edge.settings.fields import build
from coreg_edge.settings.labels import ReviewSettings

PAGE = "index.html"
MANIFEST = "review.json"


def stratified_sample(table: LabelTable, sample: int) -> list[int]:
    """Row indices, round-robin over the predicted classes, each class's least confident first, until
    `sample` rows or none are left: about sample / C per class, more from the others when a class runs out.
    Returned grouped by class, in class order."""
    queues = []
    for c in range(len(table.class_names)):
        rows = np.flatnonzero(table.labels == c)
        queues.append(list(rows[np.argsort(table.confidence[rows], kind="stable")]))
    picked: list[list[int]] = [[] for _ in queues]
    total, depth = 0, 0
    while total < sample and any(depth < len(q) for q in queues):
        for c, queue in enumerate(queues):
            if depth < len(queue) and total < sample:
                picked[c].append(int(queue[depth]))
                total += 1
        depth += 1
    return [row for rows in picked for row in rows]


def _thumbnail(image: Any, size: int) -> str:
    thumb = image.convert("RGB")
    thumb.thumbnail((size, size))
    if max(thumb.size) < size:  # tiny images (digits are 8 px): scale up, blocky, so a person can see them
        scale = size // max(thumb.size)
        thumb = thumb.resize((thumb.width * scale, thumb.height * scale), resample=0)
    buffer = io.BytesIO()
    thumb.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _page(entries: list[dict[str, Any]], class_names: list[str], run: str, out: Path, origin: str) -> str:
    sections = []
    for name, folder in zip(class_names, class_folders(class_names), strict=True):
        cards = [
            f'<figure><img alt="{html.escape(e["item"])}" src="data:image/png;base64,{e["thumbnail"]}">'
            f'<figcaption>{html.escape(e["file"])}<br>{e["confidence"]:.2f}</figcaption></figure>'
            for e in entries if e["label"] == name
        ]  # fmt: skip
        sections.append(
            f'<section><h2>{html.escape(name)} <small>({len(cards)}; folder {html.escape(folder)}/)</small>'
            f'</h2><div class="grid">{"".join(cards)}</div></section>'
        )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>coreg-edge review: {html.escape(run)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5rem; color: #222; }}
.grid {{ display: flex; flex-wrap: wrap; gap: .6rem; }}
figure {{ margin: 0; text-align: center; font-size: .75rem; }}
img {{ display: block; image-rendering: pixelated; border: 1px solid #ccc; }}
small {{ color: #666; font-weight: normal; }}
</style></head><body>
<h1>Review of {html.escape(run)}</h1>
<p>{len(entries)} items labelled by {html.escape(origin)}, per predicted class, the least confident first (the
number under each image is the network's confidence). Move each wrongly labelled image into the folder of its
true class, then select with your corrected set:
<code>coreg-edge train ANNOTATION --val {html.escape(str(out))} ...</code></p>
<p>These are training items, the least confident first: accuracy on them is a pessimistic, biased check of the
labels, not an unbiased held-out estimate of accuracy on new images.</p>
{"".join(sections)}
<script>
window.addEventListener("load", () => {{
  const images = [...document.images];
  document.body.dataset.loaded = images.filter((i) => i.complete && i.naturalWidth > 0).length;
  document.body.dataset.images = images.length;
}});
</script>
</body></html>
"""


@locks_output("out", "review folder")
def write_review(
    run: str | os.PathLike[str],
    out: str | os.PathLike[str],
    settings: ReviewSettings | None = None,
    *,
    quiet: bool = False,
    **options: Any,
) -> dict[str, Any]:
    """Write the review folder of RUN into `out` (new or empty); returns the summary."""
    s = build(ReviewSettings, settings, options)
    run, out = Path(run), check_new_folder(out)  # before any work
    if not (run / "config.json").exists():
        raise UserError(f"{run}: not a run folder (no config.json); review needs a trained run")
    table = labels_of_run(run, s, quiet, out)  # refuses an `out` inside the run's images
    folders = dict(zip(table.class_names, class_folders(table.class_names), strict=True))
    picked = stratified_sample(table, s.sample)
    entries = []
    path_of = getattr(table.source, "path", None)
    with new_folder(out, "review") as staging:
        for folder in folders.values():
            (staging / folder).mkdir()
        for row in picked:
            label = table.class_names[int(table.labels[row])]
            file = place_image(table, row, staging / folders[label], copy=True)  # copies: meant to be moved
            original = path_of(int(table.indices[row])) if path_of is not None else None
            entries.append({"item": table.item_ids[row], "label": label, "confidence": float(table.confidence[row]),
                            "file": f"{folders[label]}/{file}", "original": None if original is None else str(original),
                            "thumbnail": _thumbnail(table.source.load(int(table.indices[row])), s.thumbnail)})  # fmt: skip
        (staging / PAGE).write_text(_page(entries, table.class_names, str(run), out, table.origin), encoding="utf-8")
        manifest = {"run": str(run), "labelled_by": table.origin, "class_names": table.class_names,
                    "items": [{k: v for k, v in e.items() if k != "thumbnail"} for e in entries]}  # fmt: skip
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    per_class = {name: sum(e["label"] == name for e in entries) for name in table.class_names}
    return {"out": str(out), "page": str(out / PAGE), "items": len(entries), "per_class": per_class,
            "labelled_by": table.origin}  # fmt: skip
