"""Post-training analysis (section VI): run folders -> residuals, tables and figures.

Reads only run folders (resolved configs, generator checkpoints, summaries); it
needs neither MPI nor live training objects. ``analyze``, ``draw`` and
``write_outputs`` are what ``sagips-analyze`` and the notebooks call.
"""

from sagips.analysis.pipeline import Analysis, analyze, default_out, draw, write_outputs
from sagips.analysis.runs import NoRunsError

__all__ = ["Analysis", "NoRunsError", "analyze", "default_out", "draw", "write_outputs"]
