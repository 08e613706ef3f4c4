"""What ``sagips-analyze`` writes, and reading it back: tables (CSV) and figures (PNG) of an Analysis.

Two steps that need nothing from each other but the CSVs: ``write_tables``
(run folders -> tables) and ``write_report`` (tables -> Tab. IV and figures).
``read_tables`` reads a folder written earlier, so ``sagips-analyze --from-tables``
and the notebooks redraw every figure from committed tables alone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from sagips.analysis import figures
from sagips.analysis.ensemble import SUBSAMPLE_COLS
from sagips.analysis.pipeline import MIN_SUBSAMPLE_MEMBERS, Analysis, analyze
from sagips.analysis.predictions import DEFAULT_NOISE
from sagips.analysis.runs import NoRunsError, find_run_dirs
from sagips.analysis.tables import sigma_note, single_member_groups, table4, table4_markdown

log = logging.getLogger(__name__)

# Analysis field -> file; residuals.csv marks a folder of tables.
TABLE_FILES = {
    "runs": "runs.csv",
    "checkpoints": "checkpoints.csv",
    "residuals": "residuals.csv",
    "scaling": "scaling.csv",
    "subsamples": "subsamples.csv",
}
NEEDED = ("residuals", "scaling", "subsamples")  # what the figures are drawn from: always written
READ_NEEDED = ("residuals", "scaling")  # and read: without subsamples.csv, Figs. 9/10 are skipped
MARKER = TABLE_FILES["residuals"]
TEXT_COLS = {"study": str, "group": str, "mode": str, "run": str, "command": str}


@dataclass(frozen=True)
class FigureSpec:
    """One output figure: its file, what runs it needs, whether they are there, how to draw it."""

    filename: str
    needs: str
    available: Callable[[Analysis], bool]
    draw: Callable[[Analysis, int], Figure]  # (tables, parameter index of Figs. 8, 10, 13/14)


def _n_models(a: Analysis) -> int:
    return len(figures.model_points(a.residuals)[["generator_params", "disc_batch"]].drop_duplicates())


ENOUGH_MEMBERS = f"a group with at least {MIN_SUBSAMPLE_MEMBERS} members (seeds, or ranks in mode=ensemble)"
FIGURES = (
    FigureSpec(
        "fig08_models.png",
        "ensemble-mode groups that differ in model size or batch size",
        lambda a: _n_models(a) > 1,
        lambda a, i: figures.model_study(a.residuals, i),
    ),
    FigureSpec(
        "fig09_rmse_sigma.png",
        ENOUGH_MEMBERS,
        lambda a: not a.subsamples.empty,
        lambda a, i: figures.rmse_sigma_contours(a.subsamples),
    ),
    FigureSpec(
        "fig10_ensemble_size.png",
        ENOUGH_MEMBERS,
        lambda a: not a.subsamples.empty,
        lambda a, i: figures.ensemble_size(a.subsamples, i),
    ),
    FigureSpec(
        "fig11_total_time.png",
        "runs at two or more rank counts",
        lambda a: a.scaling["ranks"].nunique() > 1,
        lambda a, i: figures.total_time_vs_ranks(a.scaling, a.model),
    ),
    FigureSpec(
        "fig12_analysis_rate.png",
        "a single-rank run and runs with more ranks",
        lambda a: a.scaling["ranks"].min() == 1 and a.scaling["ranks"].max() > 1,
        lambda a, i: figures.analysis_rate_vs_ranks(a.scaling, a.model),
    ),
    FigureSpec(
        "fig13_14_residual_vs_time.png",
        "at least one run group",
        lambda a: not a.residuals.empty,
        lambda a, i: figures.residual_vs_time(a.residuals, i),
    ),
    FigureSpec(
        "fig15_16_mean_sigma_vs_time.png",
        "runs of a distributed mode (not mode=ensemble) with more than one rank",
        lambda a: not figures.distributed(a.residuals).empty,
        lambda a, i: figures.mean_sigma_vs_time(a.residuals),
    ),
)
FIGURE_FILES = tuple(f.filename for f in FIGURES)


def draw(analysis: Analysis, filename: str, param: int = 0) -> Figure | None:
    """The figure saved as ``filename``, or None (and one log line) when the runs do not allow it.

    ``param`` picks the residual r_param of Figs. 8, 10 and 13/14 (0..5).
    """
    spec = next(f for f in FIGURES if f.filename == filename)
    if not spec.available(analysis):
        log.warning("skipping %s: needs %s", spec.filename, spec.needs)
        return None
    return spec.draw(analysis, param)


def write_tables(analysis: Analysis, out: Path) -> list[Path]:
    """Write the CSVs the figures are drawn from (and runs.csv, checkpoints.csv) into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for field, name in TABLE_FILES.items():
        table: pd.DataFrame = getattr(analysis, field)
        if field in NEEDED or not table.empty:
            table.to_csv(out / name, index=False)
            written.append(out / name)
    return written


def table4_text(analysis: Analysis) -> str:
    """``table4.md``: Tab. IV of the analysis as markdown."""
    members = dict(zip(analysis.residuals["group"], analysis.residuals["members"]))
    return table4_markdown(table4(analysis.residuals), members, analysis.studies)


def write_report(analysis: Analysis, out: Path, param: int = 0) -> list[Path]:
    """Tab. IV (``table4.md``, ``table4.csv``) and every figure the tables allow, into ``out``.

    Replaces only files of these names; a figure the tables no longer allow is removed.
    """
    out.mkdir(parents=True, exist_ok=True)
    if lonely := single_member_groups(analysis.residuals):
        log.warning("%s", sigma_note(lonely))
    table4(analysis.residuals).to_csv(out / "table4.csv")
    (out / "table4.md").write_text(table4_text(analysis))
    written = [out / "table4.csv", out / "table4.md"]
    for spec in FIGURES:
        path = out / spec.filename
        fig = draw(analysis, spec.filename, param)
        if fig is None:
            path.unlink(missing_ok=True)  # an older run of ours may have left it
            continue
        fig.savefig(path, dpi=120)
        written.append(path)
    return written


def write_outputs(analysis: Analysis, out: Path, param: int = 0) -> list[Path]:
    """Tables, Tab. IV and figures: everything ``sagips-analyze`` writes for one analysis."""
    return write_tables(analysis, out) + write_report(analysis, out, param)


def _read(path: Path) -> pd.DataFrame:
    table = pd.read_csv(path, dtype=TEXT_COLS)
    if "command" in table:
        table["command"] = table["command"].fillna("")
    return table


def read_tables(folder: Path | str) -> Analysis:
    """The tables a ``sagips-analyze`` run wrote into ``folder``; NoRunsError when some are missing."""
    folder = Path(folder)
    if lacking := [TABLE_FILES[f] for f in READ_NEEDED if not (folder / TABLE_FILES[f]).is_file()]:
        raise NoRunsError(f"{folder} holds no tables of sagips-analyze (no {', '.join(lacking)})")
    tables = {f: _read(folder / name) if (folder / name).is_file() else pd.DataFrame()
              for f, name in TABLE_FILES.items()}  # fmt: skip
    if tables["subsamples"].empty:
        tables["subsamples"] = pd.DataFrame(columns=SUBSAMPLE_COLS)
    return Analysis(**tables)


def table_dirs(inputs: Sequence[Path | str]) -> list[Path]:
    """Every folder at or below the inputs that holds tables of sagips-analyze."""
    found: set[Path] = set()
    for item in inputs:
        root = Path(item)
        if not root.is_dir():
            raise NoRunsError(f"{root} is not a folder")
        found |= {p.parent.resolve() for p in root.rglob(MARKER)}
    return sorted(found)


def open_results(path: Path | str, noise: int = DEFAULT_NOISE) -> Analysis:
    """Run folders at or below ``path`` analysed afresh, else the tables in ``path`` (for the notebooks)."""
    path = Path(path)
    if not path.is_dir():
        raise NoRunsError(f"{path.resolve()} is not a folder: no results there yet (analysis/README.md)")
    if find_run_dirs([path]):
        return analyze([path], noise=noise)
    return read_tables(path)
