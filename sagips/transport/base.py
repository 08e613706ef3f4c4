"""The one gradient-transport interface; the modes of Tab. II are its configurations.

The trainer hands over the generator's parameters once and calls ``exchange``
after each backward pass. The transport copies the exchanged gradients into host
buffers (gradient off-loading, section IV-B6), runs the reducers the mode
prescribes (an inner ring every epoch, an outer ring every h epochs) and writes
the averaged gradients back onto the device.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch


@dataclass
class ExchangeStats:
    comm_s: float = 0.0
    staleness: float = 0.0  # age in epochs of the oldest contribution used (RMA-ARAR inner group)


class Reducer(Protocol):
    """Replaces each buffer by the mean over a communicator's ranks, in place."""

    def reduce(self, bufs: Sequence[np.ndarray], epoch: int) -> float:
        """Returns the staleness (in epochs) of the contributions used."""
        ...

    def close(self) -> None: ...


@dataclass
class OuterRound:
    """The outer group of section IV-B4: every ``h`` epochs, one column of ranks runs a ring."""

    reducers: dict[int, Reducer]  # column index -> ring over that column (only this rank's)
    h: int
    choose_column: Callable[[int], int]


def exchanged_parameters(params: Sequence[torch.nn.Parameter], weights_only: bool) -> list:
    """The paper exchanges weight gradients only (bias gradients are 1-d tensors)."""
    return [p for p in params if not (weights_only and p.ndim == 1)]


class GradientTransport:
    def __init__(
        self,
        params: Sequence[torch.nn.Parameter],
        *,
        weights_only: bool = True,
        fuse: bool = True,
        inner: Reducer | None = None,
        outer: OuterRound | None = None,
        local_column: int = 0,
    ) -> None:
        self.params = exchanged_parameters(params, weights_only)
        sizes = [p.numel() for p in self.params]
        # One contiguous host buffer; per-tensor views when fusion is off.
        self.flat = np.zeros(sum(sizes), dtype=np.float32)
        self.views = np.split(self.flat, np.cumsum(sizes)[:-1]) if sizes else []
        self.bufs = [self.flat] if fuse else self.views
        self.inner = inner
        self.outer = outer
        self.local_column = local_column

    @property
    def active(self) -> bool:
        return self.inner is not None or self.outer is not None

    @property
    def n_values(self) -> int:
        return self.flat.size

    def exchange(self, epoch: int) -> ExchangeStats:
        """Average the exchanged gradients of this epoch with the peers the mode prescribes."""
        stats = ExchangeStats()
        if not self.active:
            return stats
        for p, view in zip(self.params, self.views):
            view[:] = p.grad.detach().reshape(-1).cpu().numpy()
        start = time.perf_counter()
        if self.outer is not None and epoch % self.outer.h == 0:
            # Outer ring first, so the inner ring then spreads the cross-node
            # information to the whole node and inner groups stay replicas.
            column = self.outer.choose_column(epoch)
            if column == self.local_column:
                stats.staleness = self.outer.reducers[column].reduce(self.bufs, epoch)
        if self.inner is not None:
            stats.staleness = max(stats.staleness, self.inner.reduce(self.bufs, epoch))
        stats.comm_s = time.perf_counter() - start
        for p, view in zip(self.params, self.views):
            p.grad.copy_(torch.from_numpy(view).view_as(p.grad))
        return stats

    def close(self) -> None:
        for reducer in self._reducers():
            reducer.close()

    def _reducers(self) -> list[Reducer]:
        found = [self.inner] if self.inner is not None else []
        if self.outer is not None:
            found += list(self.outer.reducers.values())
        return found
