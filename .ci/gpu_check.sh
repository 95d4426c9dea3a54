#!/bin/bash
# The GPU checks, ready for a session that is lent a device machine (CI never has a GPU). From this machine:
#   device run, command "bash .ci/gpu_check.sh", timeout_s 540 (carry ".whl" when open_clip's wheels are
#   needed: docs/ENVIRONMENT.md#the-gpu-machine). What it writes under $OUT comes back: log.txt, summary.json.
# It checks the CUDA paths the CPU tests cannot: training with --compile/--amp/--channels-last auto (on for
# CUDA), the ensemble and selection on CUDA, export from a CUDA-trained run (fp32, fp16 parity), int8's
# quantization-aware fine-tuning on CUDA, and the
# pytest suite's CUDA-marked tests. Each step's time is in the log; nothing here is a benchmark.
set -o pipefail
export PYTHONUNBUFFERED=1 OUT=${OUT:-/tmp/gpu-check-out}
mkdir -p "$OUT"
work=$(mktemp -d)
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
  fi
  python3 -m pip install -q --no-deps --no-build-isolation -e . || { echo "install failed"; exit 1; }
  python3 - <<'PY'
import importlib
for name in ("torch", "timm", "onnx", "onnxruntime", "click", "safetensors", "sklearn", "open_clip", "matplotlib"):
    try:
        module = importlib.import_module(name)
        print(f"{name} {getattr(module, '__version__', '?')}")
    except ImportError as exc:
        print(f"{name} MISSING ({exc})")
import torch
print("cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
PY
  set -x
  time coreg-edge annotate digits --annotator synthetic --out "$work/ann.npz" -q
  time coreg-edge train "$work/ann.npz" --backbone resnet18 --image-size 32 --epochs 6 --warmup 3 \
    --device cuda --eval digits:test --out "$work/run" --json > "$OUT/summary.json"
  time coreg-edge export "$work/run" --formats fp32,fp16,int8 --out "$work/dist"
  # quantization-aware fine-tuning on CUDA (exporters/qat.py): forced, on the same run
  time coreg-edge export "$work/run" --int8 --qat force --qat-epochs 1 --device cuda --out "$work/dist-qat" --json \
    | python3 -c "import json,sys; a=json.load(sys.stdin)['int8']['attempts'][-1]; print('qat', a['settings_text'], a['prepared']['device'], a['ok'])"
  coreg-edge info "$work/run" --json
  time pytest -q -p no:cacheprovider -x tests -k "cuda or gpu or amp or compile" --durations=10
} 2>&1 | tee "$OUT/log.txt"
