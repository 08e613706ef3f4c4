"""Generator checkpoints to parameter predictions p_hat, over a fixed batch of noise vectors.

Every generator of every run sees the same k noise vectors (fixed seed), so that
figures are reproducible and eqs. (7)/(8) compare the members on equal inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig

from sagips import checkpoints
from sagips.analysis.runs import Group, Run, RunError, first_line
from sagips.networks import Generator, n_trainable
from sagips.proxy import N_PARAMS

DEFAULT_NOISE = 1000
NOISE_SEED = 1234
ENSEMBLE_MODE = "ensemble"


def noise_batch(k: int, noise_dim: int, seed: int = NOISE_SEED) -> torch.Tensor:
    """The k noise vectors n ~ N(0, 1) of section VI-A, the same for every generator."""
    return torch.randn(k, noise_dim, generator=torch.Generator().manual_seed(seed))


def build_generator(cfg: DictConfig) -> Generator:
    """An untrained generator shaped as the run's config says."""
    return Generator(
        noise_dim=int(cfg.model.noise_dim),
        n_params=N_PARAMS,
        hidden=int(cfg.model.hidden),
        blocks=int(cfg.model.blocks),
    )


def generator_params(cfg: DictConfig) -> int:
    """Trainable parameters of the run's generator (51,206 at the paper's sizes)."""
    return n_trainable(build_generator(cfg))


def load_checkpoint(run: Run, rank: int, epoch: int) -> dict[str, Any]:
    """One generator checkpoint (tensors and numbers only); RunError when it cannot be read."""
    path = checkpoints.generator_path(run.path, rank, epoch)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - truncated, corrupt or foreign files alike
        raise RunError(f"unreadable checkpoint {path.name} of rank {rank} ({first_line(exc)})") from exc


@dataclass(frozen=True)
class RunPredictions:
    """What one run's generators predict at each of its C checkpoints (R ranks, k noise vectors).

    ``members`` holds the run's ensemble members, per noise vector. In the
    distributed modes that is one member, the mean of its ranks' predictions
    (section VI-A); in ``mode=ensemble`` every rank trains its own GAN (section
    IV-A) and is a member by itself.
    """

    run: Run
    epochs: np.ndarray  # (C,)
    timestamp: np.ndarray  # (R, C) Unix time at save
    train_time_s: np.ndarray  # (R, C) accumulated training time
    rank_mean: np.ndarray  # (R, C, P) each rank's p_hat, averaged over the noise batch
    members: np.ndarray  # (m, C, k, P) with m = R in mode=ensemble, else 1

    @property
    def member_time_s(self) -> np.ndarray:
        """(m, C) training time of each member: its rank's, or the slowest rank's for a distributed run."""
        if independent_ranks(self.run):
            return self.train_time_s
        return self.train_time_s.max(axis=0, keepdims=True)


def independent_ranks(run: Run) -> bool:
    """Whether the run's ranks are separate GANs (``mode=ensemble``) rather than one distributed GAN."""
    return run.mode == ENSEMBLE_MODE


def predict_run(run: Run, k: int = DEFAULT_NOISE, seed: int = NOISE_SEED) -> RunPredictions:
    """Physical predictions of every generator checkpoint of ``run`` on the fixed noise batch."""
    net = build_generator(run.cfg).eval()
    proxy = run.proxy()
    noise = noise_batch(k, int(run.cfg.model.noise_dim), seed)
    shape = (run.ranks, len(run.epochs))
    timestamp, train_time = np.empty(shape), np.empty(shape)
    rank_mean = np.empty((*shape, N_PARAMS))
    independent = independent_ranks(run)
    members = np.zeros((run.ranks if independent else 1, len(run.epochs), k, N_PARAMS))
    for r in range(run.ranks):
        slot, weight = (r, 1.0) if independent else (0, 1.0 / run.ranks)
        for c, epoch in enumerate(run.epochs):
            ckpt = load_checkpoint(run, r, epoch)
            try:
                net.load_state_dict(ckpt["state_dict"])
                timestamp[r, c] = float(ckpt["timestamp"])
                train_time[r, c] = float(ckpt["train_time_s"])
            except (KeyError, RuntimeError, TypeError, ValueError) as exc:
                raise RunError(
                    f"malformed checkpoint of rank {r} at epoch {epoch} ({first_line(exc)})"
                ) from exc
            with torch.no_grad():
                p_hat = proxy.to_physical(net(noise)).double().numpy()
            rank_mean[r, c] = p_hat.mean(axis=0)
            members[slot, c] += weight * p_hat
    return RunPredictions(run, np.asarray(run.epochs), timestamp, train_time, rank_mean, members)


def checkpoint_table(groups: Sequence[Group], preds: dict[str, RunPredictions]) -> pd.DataFrame:
    """``checkpoints.csv``: a row per (run, rank, checkpoint) with p_hat_0..5 over the noise batch."""
    rows = []
    for group in groups:
        for run in group.runs:
            pr = preds[run.name]
            for r in range(run.ranks):
                for c, epoch in enumerate(pr.epochs):
                    rows.append(
                        {
                            "study": run.study,
                            "run": run.name,
                            "group": group.label,
                            "mode": run.mode,
                            "ranks": run.ranks,
                            "seed": run.seed,
                            "rank": r,
                            "checkpoint": c,
                            "epoch": int(epoch),
                            "timestamp": pr.timestamp[r, c],
                            "train_time_s": pr.train_time_s[r, c],
                            **{f"p_hat_{i}": pr.rank_mean[r, c, i] for i in range(N_PARAMS)},
                        }
                    )
    return pd.DataFrame(rows)
