"""RMA-ARAR (section IV-B3, Fig. 5): an inner group that never waits for a busy rank.

"The gradients to be transferred are just written to memory and then fetched by
the other rank whenever it is ready." At epoch e a rank publishes its
contribution into its slot of the group's window (``sagips.transport.slots``)
and goes on; it averages its own contribution with the newest one every peer
has published, and waits for a peer only while that peer's newest contribution
is more than ``max_staleness`` epochs old (stale-synchronous parallel, Ho et al.
2013). ``max_staleness=0`` waits for every peer's contribution of epoch e itself:
exactly the ARAR ring's result, bit for bit.

Why reading the group's slots is the ring of Algorithm 1: after N-1 ring steps
every rank holds every member's contribution and averages them; here every rank
reads the N-1 contributions from the peers' slots and averages them in the same
(rank) order. The bytes each rank moves are the same (N-1 contributions), and
inside one node's shared memory a ring would only add N-2 forwarding hops; what
changes is who may go on without whom (docs/fidelity.md).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import numpy as np
from mpi4py import MPI

from sagips.transport.ring import mean_of_rows
from sagips.transport.slots import DEPTH, NEVER, PassiveSlots, SharedSlots, on_one_node

log = logging.getLogger(__name__)
WINDOWS = ("auto", "shared", "passive")
_SPINS = 200  # polls that only yield the core before a waiting rank starts to sleep
_MAX_NAP_S = 1e-3


class _Backoff:
    """Waiting politely: yield the core first, then sleep up to 1 ms, so a waiting rank
    never takes the core from the peer it waits for (ranks may outnumber cores)."""

    def __init__(self) -> None:
        self.polls = 0

    def wait(self) -> None:
        self.polls += 1
        time.sleep(0 if self.polls < _SPINS else min(_MAX_NAP_S, 1e-5 * (self.polls - _SPINS + 1)))


class RmaInnerGroup:
    """The RMA-ARAR inner group with bounded staleness; a ``Reducer`` (``sagips.transport.base``).

    ``window``: ``shared`` (one node), ``passive`` (any placement; a read may wait
    for a busy peer) or ``auto`` (shared when the group lives on one node).
    After ``reduce``, ``used`` holds the epoch of every member's contribution that
    went into the mean (this rank's own: the current epoch).
    """

    def __init__(self, comm: MPI.Comm, n_values: int, max_staleness: int, window: str = "auto") -> None:
        if window not in WINDOWS:
            raise ValueError(f"transport.rma_window={window!r} is not one of {', '.join(WINDOWS)}")
        if not (isinstance(max_staleness, int) and max_staleness >= 0):
            raise ValueError(f"transport.max_staleness={max_staleness!r} must be an integer >= 0")
        self.comm, self.max_staleness = comm, max_staleness
        self.n, self.rank = comm.Get_size(), comm.Get_rank()
        shared = window == "shared" or (window == "auto" and on_one_node(comm))
        if window == "auto" and not shared and self.rank == 0:
            log.warning(
                "an RMA-ARAR inner group spans several nodes: passive-target RMA, where a "
                "read may wait until a busy peer enters MPI (is ranks_per_node > ranks per node?)"
            )
        self.slots = (SharedSlots if shared else PassiveSlots)(comm, n_values)
        self.rows = np.zeros((self.n, n_values), dtype=np.float32)  # newest contribution of each member
        self.used = np.full(self.n, NEVER, dtype=np.int64)
        self.mean = np.empty(n_values, dtype=np.float32)

    def reduce(self, bufs: Sequence[np.ndarray], epoch: int) -> float:
        """Average with the peers' newest contributions; returns the age in epochs of the oldest used."""
        if self.n == 1:
            return 0.0
        self.slots.publish(epoch, bufs)
        np.concatenate([b.reshape(-1) for b in bufs], out=self.rows[self.rank])
        self.used[self.rank] = epoch
        for peer in range(self.n):
            if peer != self.rank:
                self._fetch(peer, epoch)
        mean_of_rows(list(self.rows), self.mean)
        pos = 0
        for buf in bufs:
            buf.reshape(-1)[:] = self.mean[pos : pos + buf.size]
            pos += buf.size
        return float(max(0, epoch - int(self.used.min())))

    def _fetch(self, peer: int, epoch: int) -> None:
        """Bring ``rows[peer]`` up to the peer's newest contribution, waiting only while it is too old."""
        exact = self.max_staleness == 0
        oldest = max(epoch - self.max_staleness, NEVER + 1)  # a peer must have published something
        backoff = _Backoff()
        while True:
            stamps = self.slots.epochs(peer)
            k = epoch % DEPTH if exact else int(np.argmax(stamps))
            if stamps[k] >= oldest and (stamps[k] == epoch or not exact):
                if stamps[k] == self.used[peer]:
                    return  # the newest is the one already held
                self.used[peer] = NEVER  # rows[peer] is about to change
                got = self.slots.read(peer, k, self.rows[peer])
                if got is not None and got >= oldest and (got == epoch or not exact):
                    self.used[peer] = got
                    return
            backoff.wait()

    def close(self) -> None:
        self.slots.free()
