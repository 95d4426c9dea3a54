"""Where a Co-Reg epoch's time goes: train_cost.py's run sampled by py-spy, the samples of the Co-Reg epochs
split by the part of the step they fall in (#15: the measured reason behind the Co-Reg / supervised ratio).

    pip install py-spy   # a sampling profiler (not a dependency of coreg-edge)
    python benchmarks/epoch_profile.py [--backbone test_resnet] [--image-size 8] [--warmup 10] [--rate 200]
                                       [--out benchmarks/results/epoch_profile_test_resnet_8px.json]

Every sample inside `coreg_epoch` or `divide_items` counts; it goes to the first part (in PARTS' order) whose
function is on its stack, so views made inside the MixUp forward count as views. Prints one table and the CPU.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from harness import machine_line, parser, write_result

HERE = Path(__file__).resolve().parent
# (part, what it is, functions that mark it: "name (file" prefixes of py-spy's frames)
PARTS = (
    ("views", "weak / strong views of the batch (flip, crop, RandAugment, normalise)", ("views.py", "randaugment.py")),
    ("fetch", "the batch's uint8 images from the store", ("image_store.py",)),
    ("division", "eval forward of every item, GMM split (once per epoch)", ("divide_items (",)),
    ("co-pseudo-labels", "no-grad: own 4 weak views of P+U, the partner's 2 of U", ("_co_pseudo_targets (",)),
    ("key encoder + memories", "no-grad key forward, queue and prototype updates", ("_update_memories (", "_all_keys (", "enqueue (")),
    ("MixUp forward", "the gradient forward (2 strong views of P+U, + queries with L_cont)", ("_mixup_forward (",)),
    ("representation losses", "prototype and contrastive losses", ("_representation_losses (",)),
    ("backward", "loss.backward()", ("backward (torch/_tensor.py", "backward (torch/autograd")),
    ("optimizer", "SGD step", ("torch/optim/",)),
)  # fmt: skip
EPOCH = ("coreg_epoch (", "divide_items (")


def attribute(stacks: dict[str, int]) -> Counter:
    """Samples per part, for the stacks inside a Co-Reg epoch; the rest of the epoch is "other"."""
    parts: Counter = Counter()
    for stack, count in stacks.items():
        frames = stack.split(";")
        if not any(f.startswith(EPOCH) for f in frames):
            continue
        part = next((name for name, _, marks in PARTS if any(m in f for f in frames for m in marks)), "other")
        parts[part] += count
    return parts


def read_raw(path: Path) -> dict[str, int]:
    """py-spy's raw (collapsed) format: 'frame;frame;... count' per line."""
    stacks: dict[str, int] = {}
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks[stack] = stacks.get(stack, 0) + int(count)
    return stacks


def main() -> None:
    p = parser(__doc__, name="epoch_profile", suffix="{backbone}_{image_size}px")
    p.add_argument("--backbone", default="test_resnet")
    p.add_argument("--image-size", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    args = p.parse_args()
    spy = shutil.which("py-spy")
    if spy is None:
        raise SystemExit("py-spy is not installed: pip install py-spy")
    raw = Path(tempfile.mkdtemp(prefix="coreg-profile-")) / "stacks.txt"
    # train_cost's own result goes beside the samples, not over its file in benchmarks/results/.
    cost = [sys.executable, str(HERE / "train_cost.py"), "--backbone", args.backbone, "--image-size",
            str(args.image_size), "--batch-size", str(args.batch_size), "--warmup", str(args.warmup), "--json",
            "--out", str(raw.parent / "train_cost.json")]  # fmt: skip
    subprocess.run([spy, "record", "--format", "raw", "--rate", str(args.rate), "--nonblocking", "-o", str(raw),
                    "--", *cost], check=True, stdout=subprocess.DEVNULL)  # fmt: skip
    parts = attribute(read_raw(raw))
    total = sum(parts.values())
    rows = [(name, what, parts.get(name, 0) / max(total, 1)) for name, what, _ in PARTS]
    rows.append(("other", "the step's own arithmetic on targets and losses, statistics, Python", parts.get("other", 0) / max(total, 1)))
    write_result(args.out, {"samples": total, "shares": {name: share for name, _, share in rows}}, args)
    print(machine_line(load=True))
    print(f"{args.backbone} at {args.image_size} px, batch {args.batch_size}; {total} samples "
          f"of the 2 Co-Reg epochs at {args.rate}/s")  # fmt: skip
    print("| part of the Co-Reg epoch | what | share |\n|---|---|---|")
    for name, what, share in rows:
        print(f"| {name} | {what} | {share:.0%} |")


if __name__ == "__main__":
    main()
