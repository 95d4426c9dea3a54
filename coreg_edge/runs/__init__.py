"""A finished training run as one object: its config, selection, preprocessing and networks, read once.

`labels`, `review`, `report` and the exporter ask a `FinishedRun` instead of reading the run folder's files
(training/run_folder.py, the format training writes) and loading peers each their own way:

    run = FinishedRun("runs/digits")
    run.class_names, run.preprocess, run.resolve_peer("selected")
    run.network("ensemble")                      # the mean of both peers' logits, one nn.Module
    run.probabilities(source, indices)           # softmax of the selected network on the evaluation view
"""

from coreg_edge.runs.finished import FinishedRun, PeerEnsemble

__all__ = ["FinishedRun", "PeerEnsemble"]
