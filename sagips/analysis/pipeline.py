"""From run folders to the tables of section VI: one call for the CLI and the notebooks.

``analyze`` reads run folders into an ``Analysis`` (DataFrames only); ``by_study``
does so once per study. Drawing the figures needs nothing but those tables
(see outputs.py), so committed CSVs redraw every figure without the checkpoints.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from sagips.analysis.ensemble import SUBSAMPLE_COLS, align, residual_table, subsample_table
from sagips.analysis.names import plural
from sagips.analysis.predictions import (
    DEFAULT_NOISE,
    NOISE_SEED,
    RunPredictions,
    checkpoint_table,
    predict_run,
)
from sagips.analysis.runs import NoRunsError, Run, RunError, find_run_dirs, group_runs, load_runs
from sagips.analysis.tables import runs_table, scaling_table

log = logging.getLogger(__name__)

MIN_SUBSAMPLE_MEMBERS = 3


@dataclass(frozen=True)
class Analysis:
    """The tables ``sagips-analyze`` writes, as DataFrames (analysis/README.md lists the columns).

    ``runs`` and ``checkpoints`` may be empty when the tables were read from a
    folder without ``runs.csv`` or ``checkpoints.csv``; no figure needs them.
    """

    runs: pd.DataFrame
    checkpoints: pd.DataFrame
    residuals: pd.DataFrame
    scaling: pd.DataFrame
    subsamples: pd.DataFrame  # Fig. 9/10, groups with at least MIN_SUBSAMPLE_MEMBERS members
    model: str | None = None  # --model: a scaling-model profile drawn beside Figs. 11/12 (not a table)

    @property
    def studies(self) -> list[str]:
        return list(dict.fromkeys(self.residuals["study"].astype(str)))


def _predict(runs: Sequence[Run], noise: int, noise_seed: int) -> dict[str, RunPredictions]:
    preds: dict[str, RunPredictions] = {}
    for run in runs:
        size = f"{plural(run.ranks, 'rank')} x {plural(len(run.epochs), 'checkpoint')}"
        log.info("reading %s (%s)", run.name, size)
        try:
            preds[run.name] = predict_run(run, noise, noise_seed)
        except RunError as exc:
            log.warning("skipping run %s: %s", run.path, exc)
    return preds


def _tables(runs: Sequence[Run], noise: int, noise_seed: int) -> Analysis:
    preds = _predict(runs, noise, noise_seed)
    groups = group_runs([p.run for p in preds.values()])
    if not groups:
        raise NoRunsError(f"none of the {plural(len(runs), 'run folder')} found can be used")
    ensembles = [align(g, [preds[r.name] for r in g.runs]) for g in groups]
    big = [e for e in ensembles if len(e.predictions) >= MIN_SUBSAMPLE_MEMBERS]
    return Analysis(
        runs=runs_table(groups, preds),
        checkpoints=checkpoint_table(groups, preds),
        residuals=pd.concat([residual_table(e) for e in ensembles], ignore_index=True),
        scaling=scaling_table(groups),
        subsamples=pd.concat([subsample_table(e) for e in big], ignore_index=True)
        if big
        else pd.DataFrame(columns=SUBSAMPLE_COLS),
    )


def _load(inputs: Sequence[Path | str]) -> list[Run]:
    paths = find_run_dirs(inputs)
    if not paths:
        raise NoRunsError(f"no run folder (with .hydra/config.yaml) under {', '.join(map(str, inputs))}")
    runs = load_runs(paths)
    if not runs:
        raise NoRunsError(f"none of the {plural(len(paths), 'run folder')} found can be used")
    return runs


def analyze(
    inputs: Sequence[Path | str], noise: int = DEFAULT_NOISE, noise_seed: int = NOISE_SEED
) -> Analysis:
    """Read every run folder at or below ``inputs`` and compute the tables of section VI.

    Raises NoRunsError when no run folder can be used.
    """
    return _tables(_load(inputs), noise, noise_seed)


def by_study(
    inputs: Sequence[Path | str], noise: int = DEFAULT_NOISE, noise_seed: int = NOISE_SEED
) -> dict[str, Analysis]:
    """``analyze`` once per study (an experiment's ``study``, else the sweep folder's name)."""
    studies: dict[str, list[Run]] = defaultdict(list)
    for run in _load(inputs):
        studies[run.study].append(run)
    found = {}
    for study, runs in studies.items():
        try:
            found[study] = _tables(runs, noise, noise_seed)
        except NoRunsError as exc:
            log.warning("skipping study %s: %s", study, exc)
    if not found:
        raise NoRunsError(f"none of the {plural(len(studies), 'study', 'studies')} found can be used")
    return found


def default_out(inputs: Sequence[Path | str]) -> Path:
    """Beside the inputs: ``NAME_analysis`` next to a single input, else ``analysis`` in their parent."""
    paths = [Path(p).resolve() for p in inputs]
    if len(paths) == 1:
        return paths[0].parent / f"{paths[0].name}_analysis"
    return Path(os.path.commonpath(paths)) / "analysis"
