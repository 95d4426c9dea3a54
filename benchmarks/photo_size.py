"""Time and memory of a photo-size run: a generated class folder at 96 px, a pretrained-shaped backbone.

    python benchmarks/photo_size.py [--backbone mobilenetv3_large_100] [--size 96] [--items 400]
                                    [--epochs 3] [--out benchmarks/results/photo_size.json]

No accuracy claim: the images are generated (coloured shapes on noise) and the "pretrained" weights are the
architecture's random initialisation saved as a local checkpoint (these machines are offline), so the run
exercises exactly the `--pretrained-backbone FILE` path, its preprocessing and its cost, not transfer.
Each stage runs as its own child process (`coreg-edge ...`), so the peak resident memory of each is its own.
Prints one table: stage, wall seconds, seconds per epoch, peak RSS; and the CPU it ran on.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from harness import machine_line, parser, write_result
from PIL import Image

CLASSES = ("circle", "square", "triangle", "cross")


def make_folder(root: Path, items: int, size: int, seed: int = 0) -> None:
    """One sub-folder per class of JPEG photos (size x size * 4/3): a coloured shape on a noisy background."""
    rng = np.random.default_rng(seed)
    h, w = size, size * 4 // 3
    yy, xx = np.mgrid[0:h, 0:w]
    for i in range(items):
        label = CLASSES[i % len(CLASSES)]
        image = rng.integers(0, 96, (h, w, 3), dtype=np.uint8)
        cy, cx, r = rng.integers(h // 3, 2 * h // 3), rng.integers(w // 3, 2 * w // 3), rng.integers(h // 6, h // 3)
        if label == "circle":
            mask = (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
        elif label == "square":
            mask = (abs(yy - cy) < r) & (abs(xx - cx) < r)
        elif label == "triangle":
            mask = (yy > cy - r) & (yy < cy + r) & (abs(xx - cx) < (yy - (cy - r)) / 2)
        else:
            mask = (abs(yy - cy) < r // 3) & (abs(xx - cx) < r) | (abs(xx - cx) < r // 3) & (abs(yy - cy) < r)
        image[mask] = rng.integers(128, 256, 3, dtype=np.uint8)
        folder = root / label
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{i:05d}.jpg", quality=90)


def save_random_checkpoint(backbone: str, path: Path) -> None:
    """The architecture's own initialisation as a timm checkpoint file (a stand-in for downloaded weights),
    written by a child: this process stays small, since Linux carries a parent's peak RSS into its children."""
    code = (
        "import sys, timm, torch\nfrom safetensors.torch import save_file\ntorch.manual_seed(0)\n"
        "model = timm.create_model(sys.argv[1], pretrained=False)\n"
        "save_file({k: v.contiguous() for k, v in model.state_dict().items()}, sys.argv[2])\n"
    )
    subprocess.run([sys.executable, "-c", code, backbone, str(path)], check=True)


# The child reports its own peak RSS when it exits (atexit runs after click's sys.exit).
_CHILD = (
    "import atexit, resource, sys\n"
    "atexit.register(lambda: print(f'PEAK_RSS_KIB {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}', "
    "file=sys.stderr))\n"
    "from coreg_edge.cli import main\n"
    "sys.argv = ['coreg-edge', *sys.argv[1:]]\n"
    "main()\n"
)


def stage(name: str, argv: list[str], work: Path, may_fail: bool = False) -> dict:
    """Run `coreg-edge ARGV` in a child; wall seconds and that child's own peak RSS (MiB). `may_fail`: a
    non-zero exit is recorded (its last line) instead of ending the benchmark."""
    began = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _CHILD, *argv], cwd=work, capture_output=True, text=True)
    seconds = time.perf_counter() - began
    if done.returncode and not may_fail:
        raise SystemExit(f"{name} failed:\n{done.stderr[-2000:]}")
    lines = done.stderr.strip().splitlines()
    failed = next((line for line in lines if line.startswith("Error:")), "exit code") if done.returncode else None
    peak = next((int(line.split()[1]) for line in reversed(lines) if line.startswith("PEAK_RSS_KIB")), None)
    return {"stage": name, "seconds": seconds, "peak_rss_mib": peak / 1024 if peak else None, "failed": failed,
            "stderr_tail": [line for line in lines if not line.startswith("PEAK_RSS_KIB")][-3:]}  # fmt: skip


def main() -> None:
    p = parser(__doc__, name="photo_size")
    p.add_argument("--backbone", default="mobilenetv3_large_100")
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--items", type=int, default=400)
    p.add_argument("--epochs", type=int, default=3)
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="coreg-photo-"))
    make_folder(work / "photos", args.items, args.size)
    save_random_checkpoint(args.backbone, work / "backbone.safetensors")
    rows = [
        stage("annotate (simulated)", ["annotate", "photos", "--annotator", "simulated", "--preset", "easy",
                                       "--out", "ann.npz", "-q"], work),
        stage("train (Co-Reg)", ["train", "ann.npz", "--backbone", args.backbone, "--pretrained-backbone",
                                 "backbone.safetensors", "--image-size", str(args.size), "--epochs",
                                 str(args.epochs), "--warmup", "1", "--out", "run"], work),
        stage("export (fp32 + int8)", ["export", "run", "--int8", "--parity-images", "128", "--out", "dist", "-q"],
              work, may_fail=True),
        stage("bench (fp32)", ["bench", "dist/model.onnx", "--batch-sizes", "1,8", "--json"], work),
    ]  # fmt: skip
    metrics = [json.loads(line) for line in (work / "run" / "metrics.jsonl").read_text().splitlines()]
    per_phase: dict[str, list[float]] = {}
    for record in metrics:
        per_phase.setdefault(record["phase"], []).append(record["seconds"])
    config = json.loads((work / "run" / "config.json").read_text())
    result = {"stages": rows, "epoch_seconds": per_phase, "preprocess": config["preprocess"],
              "chosen": config.get("chosen")}  # fmt: skip
    write_result(args.out, result, args)
    print(machine_line(load=True))
    print(f"{args.items} generated {args.size} px photos, {args.backbone}, {args.epochs} epochs")
    print("\n| stage | wall seconds | peak RSS (MiB) | note |\n|---|---|---|---|")
    for row in rows:
        rss = f"{row['peak_rss_mib']:.0f}" if row["peak_rss_mib"] else "-"
        print(f"| {row['stage']} | {row['seconds']:.1f} | {rss} | {row['failed'] or ''} |")
    for phase, values in per_phase.items():
        print(f"{phase} epoch: {np.mean(values):.1f} s (mean of {len(values)})")


if __name__ == "__main__":
    main()
