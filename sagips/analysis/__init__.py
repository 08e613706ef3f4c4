"""Post-training analysis (section VI): run folders -> tables (CSV) -> Tab. IV and figures.

Reads only run folders (resolved configs, generator checkpoints, summaries); it
needs neither MPI nor live training objects. The figures need only the tables,
so ``read_tables`` / ``open_results`` redraw them from committed CSVs.
``analyze``, ``draw`` and ``write_outputs`` are what ``sagips-analyze`` and the
notebooks call.
"""

from sagips.analysis.outputs import (
    draw,
    open_results,
    read_tables,
    table4_text,
    write_outputs,
    write_report,
    write_tables,
)
from sagips.analysis.pipeline import Analysis, analyze, by_study, default_out
from sagips.analysis.runs import NoRunsError

__all__ = [
    "Analysis",
    "NoRunsError",
    "analyze",
    "by_study",
    "default_out",
    "draw",
    "open_results",
    "read_tables",
    "table4_text",
    "write_outputs",
    "write_report",
    "write_tables",
]
