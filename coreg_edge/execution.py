"""Settings that say where and how a stage runs rather than what it computes, in one place.

Two lists, on purpose:
- `EXECUTION_KEYS`: left out of `coreg-edge run`'s stage fingerprints, so changing them re-runs nothing.
  Only what cannot change a stage's output belongs here: `amp` does not (bf16 changes the numbers, and a
  recipe that turns it off after a divergence must start a new run), nor does where the images are.
- `TRAIN_EXECUTION`: what `train --resume` takes from the new call, i.e. the same run continued on another
  machine or with its images moved: the device and its speed-ups (amp included: a CPU has no bf16),
  decoding threads, the images' new place.
"""

from __future__ import annotations

TRAIN_EXECUTION = frozenset({"device", "compile", "amp", "channels_last", "workers", "data", "download"})

EXECUTION_KEYS = frozenset(
    {"device", "workers", "compile", "channels_last", "quiet", "download", "data_dir", "strict"}
)
