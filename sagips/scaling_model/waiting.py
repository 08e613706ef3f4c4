"""Compute, jitter and waiting: what an epoch costs a rank before its exchange, and what it waits for.

A rank's epoch is its compute c (the GAN step), then the delay of
``train.straggler.jitter_ms`` (exponential with mean m, drawn per rank and epoch),
then the exchange. A synchronous exchange (an ARAR ring, MPI.Allreduce) cannot end
before the last rank of its group arrives, so every epoch costs the group the
*maximum* of its members' times; an asynchronous (stale-synchronous) group pays
about the mean plus the waits its staleness bound forces (docs/scaling-model.md).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np


def harmonic(k: int) -> float:
    """H_k = 1 + 1/2 + ... + 1/k (H_2 = 1.5, H_4 = 2.083, H_400 = 6.57)."""
    return float(np.sum(1.0 / np.arange(1, k + 1)))


def expected_max_exponential(mean_s: float, k: int) -> float:
    """E[max of k independent exponential delays of mean m] = m * H_k.

    The gaps between the order statistics of k exponentials are exponential with
    means m/k, m/(k-1), ..., m (memorylessness); their sum is the maximum.
    """
    return mean_s * harmonic(k)


def expected_max(draws: np.ndarray) -> float:
    """Monte Carlo E[max over the last axis], for any distribution: ``draws`` is (trials, ..., k)."""
    return float(np.max(draws, axis=-1).mean())


@dataclass(frozen=True)
class EpochWork:
    """One rank's time per epoch before its exchange: compute (with its spread) plus jitter.

    ``compute_s`` is the mean compute with a compute slot (core or GPU) to itself,
    calibrated from a 1-rank run (``metrics/rank0.csv``) or ``sagips-bench epoch``.
    ``spread`` holds per-epoch compute times relative to their mean (mean 1, drawn
    by bootstrap), as measured; ``None`` for a steady compute. ``jitter_s`` is the
    mean m of the exponential delay of ``train.straggler.jitter_ms``.
    """

    compute_s: float
    jitter_s: float = 0.0
    spread: np.ndarray | None = None

    @property
    def steady(self) -> bool:
        return self.spread is None

    def scaled(self, factor: float) -> EpochWork:
        """The same work with compute ``factor`` times longer (CPU sharing, another batch size)."""
        return EpochWork(self.compute_s * factor, self.jitter_s, self.spread)

    def draw(self, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        """Per-epoch times before the exchange, independent per rank and epoch."""
        if self.spread is None:
            times = np.full(shape, self.compute_s)
        else:
            times = self.compute_s * rng.choice(self.spread, size=shape)
        if self.jitter_s:
            times += rng.exponential(self.jitter_s, size=shape)
        return times

    def synchronous_epoch(self, k: int, rng: np.random.Generator, trials: int = 4000) -> float:
        """E[max over a synchronous group of k ranks of compute + jitter].

        Closed form c + m H_k for a steady compute; Monte Carlo over ``trials`` epochs otherwise.
        """
        if self.steady:
            return self.compute_s + expected_max_exponential(self.jitter_s, k)
        return expected_max(self.draw(rng, (trials, k)))


def cpu_slowdown(aligned: int, others: int, p_busy: float, slots: float) -> float:
    """Expected factor on a rank's compute when the ranks of a node share ``slots`` compute units.

    Processor sharing: k busy ranks on s slots each run at min(1, s/k) of full speed,
    so compute takes max(1, k/s) times longer. While a rank computes, the ``aligned``
    ranks (its synchronous group on the node, itself included) compute too; each of
    the ``others`` (out of step with it) is busy, computing or spinning in an MPI
    wait, with probability ``p_busy`` and asleep (jitter) otherwise. With
    B ~ Binomial(others, p_busy): factor = E[max(1, (aligned + B) / s)].
    On a GPU node with one rank per GPU, aligned + others <= slots and the factor is 1.
    """
    factor = 0.0
    for b in range(others + 1):
        weight = math.comb(others, b) * p_busy**b * (1 - p_busy) ** (others - b)
        factor += weight * max(1.0, (aligned + b) / slots)
    return factor


def simulate_groups(
    work: np.ndarray | Iterable[np.ndarray],
    staleness: int | None,
    inner_s: float,
    outer_every: int = 0,
    outer_s: float = 0.0,
) -> np.ndarray:
    """Finish time of every rank after the epochs of ``work``: stale-synchronous inner groups.

    ``work`` is (trials, groups, ranks per group, epochs), each rank's compute plus
    jitter per epoch, or an iterable of such arrays that follow each other in time
    (to bound memory). At epoch e (1-based) a rank is ready at its previous finish
    plus its work; on an outer epoch (e % outer_every == 0) the groups' first
    members then run a synchronous ring together: each is ready at the latest of
    them plus ``outer_s``. It publishes, then waits until every peer of its group
    has published epoch e - s, and spends ``inner_s`` exchanging:

        done[r, e] = max(ready[r, e], max over peers q of ready[q, e - s]) + inner_s

    s = 0 is a synchronous inner ring (the group's maximum every epoch), s = None
    never waits (each rank's own sum: the mean for a long run). Returns (trials,
    groups, ranks per group).
    """
    done: np.ndarray | None = None
    ready_at = np.empty(0)
    start = 0
    for chunk in [work] if isinstance(work, np.ndarray) else work:
        trials, groups, k, epochs = chunk.shape
        if done is None:
            done = np.zeros((trials, groups, k))
            depth = 1 if staleness is None else staleness + 1
            ready_at = np.full((depth, trials, groups, k), -np.inf)
        coupled = outer_every and groups > 1
        if staleness is None and not coupled:
            done = done + chunk.sum(axis=-1) + epochs * inner_s
        elif staleness == 0 and not coupled:
            done = done + chunk.max(axis=2, keepdims=True).sum(axis=-1) + epochs * inner_s
        else:
            for i in range(epochs):
                e = start + i
                ready = done + chunk[..., i]
                if coupled and (e + 1) % outer_every == 0:
                    ready[:, :, 0] = ready[:, :, 0].max(axis=1, keepdims=True) + outer_s
                if staleness is None:
                    done = ready + inner_s
                    continue
                ready_at[e % len(ready_at)] = ready
                needed = ready_at[(e - staleness) % len(ready_at)].max(axis=2, keepdims=True)
                done = np.maximum(ready, needed) + inner_s
        start += epochs
    if done is None:
        raise ValueError("no epochs to simulate")
    return done
