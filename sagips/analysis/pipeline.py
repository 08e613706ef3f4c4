"""From run folders to the results of section VI: one call for the CLI and the notebooks."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

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
    return [out / name for name in TABLES] + figures.write_figures(analysis, out)
