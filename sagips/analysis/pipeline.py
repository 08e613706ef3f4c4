"""From run folders to the results of section VI: one call for the CLI and the notebooks.

``analyze`` computes the tables; ``draw`` gives one figure when the runs allow it;
``write_outputs`` writes everything INTERFACE.md names.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from sagips.analysis import figures
from sagips.analysis.ensemble import SUBSAMPLE_COLS, align, residual_table, subsample_table
from sagips.analysis.predictions import (
    DEFAULT_NOISE,
    NOISE_SEED,
    RunPredictions,
    checkpoint_table,
    predict_run,
)
from sagips.analysis.runs import (
    Group,
    NoRunsError,
    RunError,
    find_run_dirs,
    group_runs,
    load_runs,
)
from sagips.analysis.tables import scaling_table, table4, table4_markdown

log = logging.getLogger(__name__)

MIN_SUBSAMPLE_MEMBERS = 3
TABLES = ("checkpoints.csv", "residuals.csv", "table4.md", "table4.csv", "scaling.csv")


@dataclass(frozen=True)
class Analysis:
    """Everything ``sagips-analyze`` writes, as DataFrames (see INTERFACE.md for the columns)."""

    groups: list[Group]
    checkpoints: pd.DataFrame
    residuals: pd.DataFrame
    scaling: pd.DataFrame
    subsamples: pd.DataFrame  # Fig. 9/10, groups with at least MIN_SUBSAMPLE_MEMBERS members


def analyze(
    inputs: Sequence[Path | str], noise: int = DEFAULT_NOISE, noise_seed: int = NOISE_SEED
) -> Analysis:
    """Read every run folder at or below ``inputs`` and compute the tables of section VI.

    Raises NoRunsError when no run folder can be used.
    """
    paths = find_run_dirs(inputs)
    if not paths:
        raise NoRunsError(f"no run folder (with .hydra/config.yaml) under {', '.join(map(str, inputs))}")
    preds: dict[str, RunPredictions] = {}
    for run in load_runs(paths):
        log.info("reading %s (%d ranks x %d checkpoints)", run.name, run.ranks, len(run.epochs))
        try:
            preds[run.name] = predict_run(run, noise, noise_seed)
        except RunError as exc:
            log.warning("skipping run %s: %s", run.path, exc)
    groups = group_runs([p.run for p in preds.values()])
    if not groups:
        raise NoRunsError(f"none of the {len(paths)} run folders found can be used")
    ensembles = [align(g, [preds[r.name] for r in g.runs]) for g in groups]
    big = [e for e in ensembles if len(e.predictions) >= MIN_SUBSAMPLE_MEMBERS]
    return Analysis(
        groups=groups,
        checkpoints=checkpoint_table(groups, preds),
        residuals=pd.concat([residual_table(e) for e in ensembles], ignore_index=True),
        scaling=scaling_table(groups),
        subsamples=pd.concat([subsample_table(e) for e in big], ignore_index=True)
        if big
        else pd.DataFrame(columns=SUBSAMPLE_COLS),
    )


def default_out(inputs: Sequence[Path | str]) -> Path:
    """Beside the inputs: ``NAME_analysis`` next to a single input, else ``analysis`` in their parent."""
    paths = [Path(p).resolve() for p in inputs]
    if len(paths) == 1:
        return paths[0].parent / f"{paths[0].name}_analysis"
    return Path(os.path.commonpath(paths)) / "analysis"


def write_outputs(analysis: Analysis, out: Path) -> list[Path]:
    """Write the tables and figures into ``out``, replacing only files of these names."""
    out.mkdir(parents=True, exist_ok=True)
    t4 = table4(analysis.residuals)
    analysis.checkpoints.to_csv(out / "checkpoints.csv", index=False)
    analysis.residuals.to_csv(out / "residuals.csv", index=False)
    analysis.scaling.to_csv(out / "scaling.csv", index=False)
    t4.to_csv(out / "table4.csv")
    (out / "table4.md").write_text(table4_markdown(t4))
    return [out / name for name in TABLES] + write_figures(analysis, out)


@dataclass(frozen=True)
class FigureSpec:
    """One output figure: its file, what runs it needs, whether they are there, how to draw it."""

    filename: str
    needs: str
    available: Callable[[Analysis], bool]
    draw: Callable[[Analysis], Figure]


def _n_models(a: Analysis) -> int:
    return len(figures.model_points(a.residuals)[["generator_params", "disc_batch"]].drop_duplicates())


ENOUGH_MEMBERS = f"a group with at least {MIN_SUBSAMPLE_MEMBERS} members (seeds, or ranks in mode=ensemble)"
FIGURES = (
    FigureSpec(
        "fig08_models.png",
        "ensemble-mode groups that differ in model size or batch size",
        lambda a: _n_models(a) > 1,
        lambda a: figures.model_study(a.residuals),
    ),
    FigureSpec(
        "fig09_rmse_sigma.png",
        ENOUGH_MEMBERS,
        lambda a: not a.subsamples.empty,
        lambda a: figures.rmse_sigma_contours(a.subsamples),
    ),
    FigureSpec(
        "fig10_ensemble_size.png",
        ENOUGH_MEMBERS,
        lambda a: not a.subsamples.empty,
        lambda a: figures.ensemble_size(a.subsamples),
    ),
    FigureSpec(
        "fig11_total_time.png",
        "runs at two or more rank counts",
        lambda a: a.scaling["ranks"].nunique() > 1,
        lambda a: figures.total_time_vs_ranks(a.scaling),
    ),
    FigureSpec(
        "fig12_analysis_rate.png",
        "a single-rank run and runs with more ranks",
        lambda a: a.scaling["ranks"].min() == 1 and a.scaling["ranks"].max() > 1,
        lambda a: figures.analysis_rate_vs_ranks(a.scaling),
    ),
    FigureSpec(
        "fig13_14_residual_vs_time.png",
        "at least one run group",
        lambda a: not a.residuals.empty,
        lambda a: figures.residual_vs_time(a.residuals),
    ),
    FigureSpec(
        "fig15_16_mean_sigma_vs_time.png",
        "runs of a distributed mode (not mode=ensemble) with more than one rank",
        lambda a: not figures.distributed(a.residuals).empty,
        lambda a: figures.mean_sigma_vs_time(a.residuals),
    ),
)


def draw(analysis: Analysis, filename: str) -> Figure | None:
    """The figure saved as ``filename``, or None (and one log line) when the runs do not allow it."""
    spec = next(f for f in FIGURES if f.filename == filename)
    if not spec.available(analysis):
        log.warning("skipping %s: needs %s", spec.filename, spec.needs)
        return None
    return spec.draw(analysis)


def write_figures(analysis: Analysis, out: Path) -> list[Path]:
    """Save every figure the runs allow; log one line for each one they do not."""
    written = []
    for spec in FIGURES:
        path = out / spec.filename
        fig = draw(analysis, spec.filename)
        if fig is None:
            path.unlink(missing_ok=True)  # an older run of ours may have left it
            continue
        fig.savefig(path, dpi=120)
        written.append(path)
    return written
