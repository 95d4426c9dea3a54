"""Settings that say where and how a stage runs, never what it computes: one list for every stage.

`coreg-edge run` leaves them out of its stage fingerprints (changing them re-runs nothing), and
`train --resume` accepts them from the new call (the same run on another machine, or with its images
moved). Everything else decides the result and may not change under a finished or resumed stage.
"""

from __future__ import annotations

# Training: the machine and its speed-ups (amp included: a CPU resume has no bf16, the run goes on in
# fp32), decoding threads, where the images are now.
TRAIN_EXECUTION = frozenset({"device", "compile", "amp", "channels_last", "workers", "data", "download"})

# Any stage: chatter, the dataset cache folder, whether unreadable images are an error.
EXECUTION_KEYS = TRAIN_EXECUTION | {"quiet", "data_dir", "strict"}
