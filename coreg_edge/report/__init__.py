"""`coreg-edge report`: one self-contained HTML page of a run's pictures (docs/FORMATS.md#report).

sources.py finds what a path holds (a training run, an export folder, a pipeline run); plots.py draws each
picture with matplotlib (the `report` extra) as PNG bytes; page.py lays them out with the parity table.
"""

from coreg_edge.report.page import write_report
from coreg_edge.report.sources import ReportSources, find_sources

__all__ = ["ReportSources", "find_sources", "write_report"]
