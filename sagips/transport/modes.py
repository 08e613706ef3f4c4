"""The modes of Tab. II (plus the ensemble and the allreduce baseline) as transports."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from mpi4py import MPI

from sagips.grouping import grouping
from sagips.modes import MODES
from sagips.transport.base import GradientTransport, OuterRound, exchanged_parameters
from sagips.transport.ring import AllreduceReducer, RingReducer
from sagips.transport.rma import RmaInnerGroup


def make_transport(
    mode: str,
    comm: MPI.Comm,
    params: Sequence[torch.nn.Parameter],
    *,
    ranks_per_node: int,
    h: int,
    seed: int,
    weights_only: bool = True,
    fuse: bool = True,
    algorithm: str = "ring",
    outer_member: str = "first",
    max_staleness: int = 0,
    rma_window: str = "auto",
) -> GradientTransport:
    """Build the transport for ``mode``; collective over ``comm`` (every rank must call it)."""
    if mode not in MODES:
        raise ValueError(f"mode={mode!r} is not one of {', '.join(MODES)}")
    common = dict(weights_only=weights_only, fuse=fuse)
    if mode == "ensemble":
        return GradientTransport(params, **common)
    if mode == "arar":
        return GradientTransport(params, inner=RingReducer(comm, algorithm), **common)
    if mode == "allreduce":
        return GradientTransport(params, inner=AllreduceReducer(comm), **common)

    g = grouping(comm.Get_rank(), comm.Get_size(), ranks_per_node)
    inner_comm = comm.Split(color=g.inner_group, key=g.local_rank)
    column_comm = comm.Split(color=g.local_rank, key=g.inner_group)
    if mode == "arar_arar":
        inner = RingReducer(inner_comm, algorithm)
    else:
        n_values = sum(p.numel() for p in exchanged_parameters(params, weights_only))
        inner = RmaInnerGroup(inner_comm, n_values, max_staleness, rma_window)
    if outer_member == "first":
        choose = lambda epoch: 0  # noqa: E731 - the paper's fixed choice
    elif outer_member == "random":
        # The same draw on every rank: a function of (seed, epoch) only.
        choose = lambda epoch: int(np.random.default_rng([seed, epoch]).integers(ranks_per_node))  # noqa: E731
    else:
        raise ValueError(f"transport.outer_member={outer_member!r} is not one of first, random")
    outer = OuterRound({g.local_rank: RingReducer(column_comm, algorithm)}, h, choose)
    return GradientTransport(params, inner=inner, outer=outer, local_column=g.local_rank, **common)
