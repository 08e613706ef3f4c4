"""The paper's closed-form quantities, each a small pure function on arrays.

Shared by the trainer (eqs. 9, 10) and the analysis (eqs. 6-8); nothing here
touches torch, MPI or files.
"""

from __future__ import annotations

import numpy as np

PARAM_SAMPLES_PAPER = 1024


def residual(p_true: np.ndarray, p_hat: np.ndarray) -> np.ndarray:
    """Eq. (6): normalised residual r_i = (p_i - p_hat_i) / p_i (broadcasts over leading axes)."""
    p_true = np.asarray(p_true, dtype=float)
    return (p_true - np.asarray(p_hat, dtype=float)) / p_true


def ensemble_mean_sigma(predictions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eqs. (7) and (8) averaged over the noise batch.

    ``predictions`` has shape (M, k, P): M generators, the same k noise vectors,
    P parameters. For each noise vector, eq. (7) is the mean over the M members
    and eq. (8) their (population) standard deviation; both are then averaged
    over the k noise vectors, as in section VI-A. Returns two arrays of shape (P,).
    """
    predictions = np.asarray(predictions, dtype=float)
    if predictions.ndim != 3:
        raise ValueError(f"predictions must be (M, k, P), got shape {predictions.shape}")
    p_hat = predictions.mean(axis=0)
    sigma = np.sqrt(((predictions - p_hat) ** 2).mean(axis=0))
    return p_hat.mean(axis=0), sigma.mean(axis=0)


def analysis_rate(ranks: int, disc_batch: int, epochs: int, total_train_time_s: float) -> float:
    """Eq. (9): events analysed per second, N_ranks * N_disc * N_epochs / total training time."""
    return ranks * disc_batch * epochs / total_train_time_s


def param_samples_per_rank(ranks: int, base: int = PARAM_SAMPLES_PAPER) -> int:
    """Eq. (10): floor(base / N_ranks) parameter samples per rank (base = 1024 in the paper)."""
    return base // ranks
