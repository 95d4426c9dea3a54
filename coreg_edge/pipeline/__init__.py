"""`run_recipe()`: a recipe -> one run folder, stage by stage, resumable (the library behind `coreg-edge run`).

    RUN/recipe.json       the resolved recipe (overrides applied) this folder was last run with
    RUN/annotation.npz    annotate
    RUN/train/            train + label-free peer selection (a `coreg-edge train` run folder)
    RUN/export/           export every [export] formats row with parity: model.onnx, model.int8.onnx, ..., parity.json
    RUN/bench.json        bench: every format's file timed interleaved (`coreg-edge bench RUN/export --json`)
    RUN/stages.json       per stage: status, fingerprint, resolved settings, input and output digests
    RUN/summary.json      the headline numbers and where the deployable model is
    RUN/report.html       the run in pictures (`coreg-edge report RUN`, written last)

Why fingerprints: a paper run is days of GPU time and a demo is minutes of CPU, and both get interrupted
or re-run with one setting changed. A stage is skipped when its record in stages.json says done, its
fingerprint (sha256 of its resolved settings + its inputs' digests) is unchanged, and every output it
recorded is still there with the same digest. Inputs are the previous stage's outputs (and the data), so a
change anywhere re-runs exactly the stages downstream of it. Settings that change how, not what, is
computed (device, workers, compile, channels_last, batch size of annotation, download, data_dir) are left
out of fingerprints. Training that stopped part-way (a checkpoint, no selection.json) with an unchanged
fingerprint resumes from its last epoch instead of starting over.

One job per module:

    layout        the run folder's file names, the execution-only keys, the JSON reader
    fingerprints  input fingerprints, settings + inputs -> fingerprint, StageState (RUN/stages.json)
    calls         recipe -> the keyword arguments of annotate(), train(), export_run(), run_bench()
    stages        _Run: each stage skipped, resumed or run, and recorded
    summary       build_summary (RUN/summary.json) and format_summary (the table `coreg-edge run` prints)
    runner        run_recipe: the entry point, the run-folder guard, interruptions
"""

from coreg_edge.errors import UserError
from coreg_edge.pipeline.calls import annotate_call, bench_call, export_call, train_call
from coreg_edge.pipeline.fingerprints import StageState, fingerprint, input_fingerprint
from coreg_edge.pipeline.layout import (
    ANNOTATION_FILE,
    BENCH_FILE,
    EXPORT_DIR,
    RECIPE_FILE,
    STAGES,
    STATE_FILE,
    STATE_FORMAT_VERSION,
    SUMMARY_FILE,
    TEMPLATES_FILE,
    TRAIN_DIR,
)
from coreg_edge.pipeline.runner import PipelineInterrupted, run_recipe
from coreg_edge.pipeline.summary import build_summary, format_summary

__all__ = [
    "ANNOTATION_FILE",
    "BENCH_FILE",
    "EXPORT_DIR",
    "RECIPE_FILE",
    "STAGES",
    "STATE_FILE",
    "STATE_FORMAT_VERSION",
    "SUMMARY_FILE",
    "TEMPLATES_FILE",
    "TRAIN_DIR",
    "PipelineInterrupted",
    "StageState",
    "UserError",
    "annotate_call",
    "bench_call",
    "build_summary",
    "export_call",
    "fingerprint",
    "format_summary",
    "input_fingerprint",
    "run_recipe",
    "train_call",
]
