"""Post-training analysis (section VI): run folders -> residuals, tables and figures.

Reads only run folders (resolved configs, generator checkpoints, summaries); it
needs neither MPI nor live training objects. ``analyze`` is what ``sagips-analyze``
and the notebooks call; ``sagips.analysis.figures`` draws from its tables.
"""

from sagips.analysis.pipeline import Analysis, analyze, default_out, write_outputs
from sagips.analysis.runs import NoRunsError

__all__ = ["Analysis", "NoRunsError", "analyze", "default_out", "write_outputs"]
