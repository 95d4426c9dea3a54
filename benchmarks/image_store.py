"""Peak memory and data-path time of the two image stores against the number of images (issue #15).

For each N, a folder of N generated 96 px photos-like PNGs is made once; then, each in a fresh process,
the memory store and the disk store are built (decode + cache) and one epoch of shuffled batches is
fetched and turned into weak views, as a training epoch does. The training arithmetic is the same for
both stores (they give the same bytes: tests/training/test_image_store.py), so the data path is what
differs. Prints one table and writes it as JSON (`--out`).

    python benchmarks/image_store.py --sizes 10000,50000 --out benchmarks/results/image_store.json
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import log, machine_line, parser, write_result

CHILD = r"""
import json, resource, sys, time
import numpy as np, torch
from coreg_edge.data import open_source
from coreg_edge.training.data import preprocess_for
from coreg_edge.training.image_store import build_store
from coreg_edge.training.views import ViewConfig, Views

folder, kind, size, batch = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
source = open_source(folder)
config = preprocess_for(source, size, 3)
began = time.perf_counter()
store = build_store(source, np.arange(len(source)), config, torch.device("cpu"), cache=kind, quiet=True, workers=2)
built = time.perf_counter() - began
views = Views(ViewConfig(size, 3, (0.5,) * 3, (0.5,) * 3, flip=True, strong="weak"), seed=0)
order = torch.randperm(len(store), generator=torch.Generator().manual_seed(0))
began = time.perf_counter()
for start in range(0, len(order), batch):
    views.weak(store.fetch(order[start : start + batch]))
epoch = time.perf_counter() - began
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB -> MB on Linux
print(json.dumps({"build_s": built, "epoch_s": epoch, "peak_rss_mb": rss}))
"""


def make_folder(folder: Path, count: int, size: int) -> None:
    """`count` PNGs of smooth colour fields with noise (decode cost like small photos)."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    have = len(list(folder.glob("*.png")))
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 1, size, dtype=np.float32)
    for i in range(have, count):
        colour = rng.random(3, dtype=np.float32) * 255
        field = (ramp[None, :, None] * colour + rng.normal(0, 12, (size, size, 3))).clip(0, 255)
        Image.fromarray(field.astype(np.uint8)).save(folder / f"{i:07d}.png", compress_level=1)


def measure(folder: Path, kind: str, size: int, batch: int, cache: Path) -> dict:
    env = {**os.environ, "COREG_EDGE_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(folder), kind, str(size), str(batch)],
        capture_output=True, text=True, env=env, cwd=tempfile.gettempdir(), check=True,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = parser(__doc__, name="image_store")
    p.add_argument("--sizes", default="10000,50000", help="numbers of images, comma-separated")
    p.add_argument("--image-size", type=int, default=96)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--work", default=None, help="folder for the generated images and caches (kept)")
    args = p.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="coreg-edge-store-bench-"))
    rows = []
    for count in (int(part) for part in args.sizes.split(",")):
        folder = work / f"images-{count}"
        began = time.perf_counter()
        make_folder(folder, count, args.image_size)
        log(f"N={count}: folder ready in {time.perf_counter() - began:.0f} s")
        for kind in ("memory", "disk"):
            result = measure(folder, kind, args.image_size, args.batch_size, work / f"cache-{count}")
            rows.append({"n": count, "cache": kind, **result})
            log(f"  {kind}: {result}")
    print(machine_line(1, load=True))  # the measuring children run with OMP_NUM_THREADS=1
    print(f"image stores, {args.image_size} px, batch {args.batch_size}")
    print(f"{'N':>8} {'cache':>7} {'build s':>8} {'epoch s':>8} {'peak RSS MB':>12} {'epoch vs memory':>16}")
    for row in rows:
        base = next(r for r in rows if r["n"] == row["n"] and r["cache"] == "memory")
        ratio = row["epoch_s"] / base["epoch_s"] if base["epoch_s"] else float("nan")
        print(f"{row['n']:>8} {row['cache']:>7} {row['build_s']:>8.1f} {row['epoch_s']:>8.2f} "
              f"{row['peak_rss_mb']:>12.0f} {ratio:>15.2f}x")  # fmt: skip
    write_result(args.out, {"image_size": args.image_size, "batch_size": args.batch_size, "rows": rows}, args)


if __name__ == "__main__":
    main()
