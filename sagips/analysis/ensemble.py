"""Ensemble responses (section VI-A): residuals and spread vs training time, sub-ensembles (Fig. 9).

The members of a group are aligned by checkpoint index (they share
``train.checkpoint_every``); the time of an index is the members' mean training time.
For the distributed modes a run is one member, the mean over its ranks; in
``mode=ensemble`` each rank is a member (see predictions.RunPredictions).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from sagips.analysis.predictions import RunPredictions, generator_params
from sagips.analysis.runs import Group
from sagips.equations import ensemble_mean_sigma, residual
from sagips.proxy import N_PARAMS

log = logging.getLogger(__name__)

SUBSAMPLE_DRAWS = 300
SUBSAMPLE_SEED = 4321
R_COLS = [f"r_{i}" for i in range(N_PARAMS)]
SIGMA_COLS = [f"sigma_{i}" for i in range(N_PARAMS)]
SUBSAMPLE_COLS = ["study", "group", "M", "draw", "rmse", "mean_sigma", *R_COLS, *SIGMA_COLS]
# Eq. (8) of a single member is 0 by construction, not a spread: it is reported as n/a.
MIN_SIGMA_MEMBERS = 2


@dataclass(frozen=True)
class Ensemble:
    """The M members of one group on a common checkpoint axis (M >= runs in mode=ensemble)."""

    group: Group
    epochs: np.ndarray  # (C,)
    time_s: np.ndarray  # (C,)
    predictions: np.ndarray  # (M, C, k, P): each member's prediction per noise vector

    @property
    def p_true(self) -> np.ndarray:
        return self.group.first.p_true


def align(group: Group, runs: Sequence[RunPredictions]) -> Ensemble:
    """Stack the members of the group's runs by checkpoint index, keeping the indices all have."""
    n = min(len(p.epochs) for p in runs)
    if any(len(p.epochs) != n for p in runs):
        log.warning("group %s: runs have different checkpoint counts; using the first %d", group.label, n)
    return Ensemble(
        group,
        runs[0].epochs[:n],
        np.concatenate([p.member_time_s[:, :n] for p in runs]).mean(axis=0),
        np.concatenate([p.members[:, :n] for p in runs]),
    )


def residual_sigma(p_true: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """Eq. (8)'s spread on the scale of eq. (6): sigma_r_i = sigma_i / |p_i|."""
    return np.asarray(sigma, dtype=float) / np.abs(np.asarray(p_true, dtype=float))


def ensemble_residuals(p_true: np.ndarray, predictions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eq. (6) of the eq. (7) ensemble mean, and its eq. (8) spread, for (M, k, P) predictions.

    The spread is NaN (n/a) for fewer than MIN_SIGMA_MEMBERS members.
    """
    p_hat, sigma = ensemble_mean_sigma(predictions)
    if len(predictions) < MIN_SIGMA_MEMBERS:
        sigma = np.full_like(sigma, np.nan)
    return residual(p_true, p_hat), residual_sigma(p_true, sigma)


def residual_table(ens: Ensemble) -> pd.DataFrame:
    """Rows of ``residuals.csv`` for one group: r_0..5 and sigma_0..5 at each checkpoint."""
    run = ens.group.first
    rows = []
    for c, epoch in enumerate(ens.epochs):
        r, s = ensemble_residuals(ens.p_true, ens.predictions[:, c])
        rows.append(
            {
                "study": ens.group.study,
                "group": ens.group.label,
                "mode": run.mode,
                "ranks": run.ranks,
                "members": len(ens.predictions),
                "generator_params": generator_params(run.cfg),
                "disc_batch": run.summary.get("disc_batch"),
                "checkpoint": c,
                "epoch": int(epoch),
                "time_s": ens.time_s[c],
                **dict(zip(R_COLS, r)),
                **dict(zip(SIGMA_COLS, s)),
            }
        )
    return pd.DataFrame(rows)


def rmse(r: np.ndarray) -> float:
    """Root mean square of the residuals over the parameters (Fig. 9's x axis)."""
    return float(np.sqrt(np.mean(np.square(r))))


def subsample_table(ens: Ensemble, draws: int = SUBSAMPLE_DRAWS, seed: int = SUBSAMPLE_SEED) -> pd.DataFrame:
    """Fig. 9/10: for every size M = 2..members, ``draws`` random sub-ensembles at the last checkpoint.

    Each row holds the RMSE of the eq. (6) residuals of the sub-ensemble's eq. (7)
    mean, the mean eq. (8) spread over the parameters, and every r_i and sigma_i.
    """
    final = ens.predictions[:, -1]
    rng = np.random.default_rng(seed)
    rows = []
    for size in range(2, len(final) + 1):
        for draw in range(draws):
            pick = rng.choice(len(final), size=size, replace=False)
            r, s = ensemble_residuals(ens.p_true, final[pick])
            rows.append((ens.group.study, ens.group.label, size, draw, rmse(r), float(s.mean()), *r, *s))
    return pd.DataFrame(rows, columns=SUBSAMPLE_COLS)


@dataclass(frozen=True)
class Ellipse:
    center: tuple[float, float]
    width: float
    height: float
    angle_deg: float


def confidence_ellipse(x: np.ndarray, y: np.ndarray, level: float = 0.95) -> Ellipse:
    """The ``level`` contour of a 2D Gaussian fitted to the (x, y) cloud (Fig. 9).

    Semi-axes are sqrt(chi2_2(level) * lambda) for the eigenvalues lambda of the
    sample covariance, where chi2_2(level) = -2 ln(1 - level) (5.99 at 95 %).
    """
    points = np.stack([np.asarray(x, dtype=float), np.asarray(y, dtype=float)])
    cov = np.cov(points) if points.shape[1] > 1 else np.zeros((2, 2))
    eigval, eigvec = np.linalg.eigh(cov)
    scale = np.sqrt(-2.0 * np.log(1.0 - level) * np.clip(eigval, 0.0, None))
    major = eigvec[:, 1]
    return Ellipse(
        center=(float(points[0].mean()), float(points[1].mean())),
        width=float(2 * scale[1]),
        height=float(2 * scale[0]),
        angle_deg=float(np.degrees(np.arctan2(major[1], major[0]))),
    )
