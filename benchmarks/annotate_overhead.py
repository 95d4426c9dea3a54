"""Annotation overhead: bare `encode_image` vs encode + all template votes, same model, same images.

    python benchmarks/annotate_overhead.py [--model ViT-B-32|CONFIG.json] [--passes 10000] [--batch-size 64]
                                           [--templates default] [--classes 10]
                                           [--out benchmarks/results/annotate_overhead.json]

Random weights (no download; the cost does not depend on the weights). The text features for every
(template, class) prompt are computed once and reported separately; then both loops run interleaved, batch
by batch, over the same preprocessed images until each has done `--passes` image passes. The 27 templates
should cost < 10% extra per image (docs/FORMATS.md#benchmarks).
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import torch
from harness import machine_line, parser, write_result

from coreg_edge.annotate.clip import ClipEmbedder, TextPromptVoters, load_clip
from coreg_edge.annotate.templates import load_templates

SMALL_VIT = {
    "embed_dim": 256,
    "vision_cfg": {"image_size": 64, "layers": 4, "width": 256, "head_width": 64, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 256, "heads": 4, "layers": 4},
}


def main() -> None:
    p = parser(__doc__, name="annotate_overhead")
    p.add_argument("--model", default="small", help="open_clip name, a config JSON, or 'small' (built in)")
    p.add_argument("--passes", type=int, default=10000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--templates", default="default")
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--json", action="store_true", help="print the result as JSON, no table")
    args = p.parse_args()
    model = args.model
    if model == "small":
        model = str(Path(tempfile.mkdtemp()) / "small-vit-clip.json")
        Path(model).write_text(json.dumps(SMALL_VIT))
    torch.manual_seed(0)
    bundle = load_clip(model, pretrained=None, device="cpu")
    templates = load_templates(args.templates)
    embedder = ClipEmbedder(bundle)
    voters = TextPromptVoters(bundle, templates, [f"class {i}" for i in range(args.classes)])
    began = time.perf_counter()
    voters.class_features()
    text_s = time.perf_counter() - began
    size = bundle.model.visual.image_size
    size = size if isinstance(size, int) else size[0]
    images = torch.randn(args.batch_size, 3, size, size)
    voters.vote(embedder.encode(images))  # warm-up both paths once
    bare = full = 0.0
    done = 0
    while done < args.passes:
        start = time.perf_counter()
        embedder.encode(images)
        bare += time.perf_counter() - start
        start = time.perf_counter()
        voters.vote(embedder.encode(images))
        full += time.perf_counter() - start
        done += args.batch_size
    bare_ms, full_ms = 1000 * bare / done, 1000 * full / done
    result = {
        "model": args.model, "templates": len(templates), "classes": args.classes, "passes": done,
        "text_features_s": text_s, "encode_image_ms_per_image": bare_ms, "annotate_ms_per_image": full_ms,
        "overhead": full_ms / bare_ms - 1.0,
    }  # fmt: skip
    write_result(args.out, result, args)
    if args.json:
        print(json.dumps(result))
        return
    print(machine_line(load=True))
    print(f"model {args.model}, {len(templates)} templates x {args.classes} classes, {done} image passes each, "
          f"batch {args.batch_size}, CPU threads {torch.get_num_threads()}")  # fmt: skip
    print("| path | ms / image | images / s |")
    print("|---|---|---|")
    print(f"| bare encode_image | {bare_ms:.3f} | {1000 / bare_ms:.0f} |")
    print(f"| encode_image + {len(templates)} template votes | {full_ms:.3f} | {1000 / full_ms:.0f} |")
    print(f"overhead of the templates: {100 * result['overhead']:+.1f}% per image "
          f"(one-off text features for {len(templates) * args.classes} prompts: {text_s:.2f} s)")  # fmt: skip


if __name__ == "__main__":
    main()
