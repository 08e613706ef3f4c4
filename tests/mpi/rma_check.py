"""Run under mpiexec -n N (2-4): the asynchronous RMA-ARAR inner group uses what peers really published.

Rank r's contribution of epoch e is the known vector ``contribution(r, e)`` (distinct for
every rank and epoch). Ranks sleep a random few milliseconds per epoch, so they drift
apart. After every exchange, for both windows and bounds 0, 1 and 3:

- ``used`` names, for every member, the epoch of the contribution that went into the mean;
  the result equals the mean of exactly those contributions (bit for bit, in rank order);
- a peer's contribution is never older than the bound allows, nor newer than a peer can be
  (at most bound + 1 epochs ahead), and with bound 0 it is always the current epoch's;
- in the shared-memory window, a rank that sleeps long does not hold the others back: they
  complete ``bound`` more epochs meanwhile, using its old contribution (the passive-target
  window cannot promise that: MPICH grants a lock on a sleeping rank only when it wakes);
- the window is freed exactly once.

Prints ``rma-check OK N`` on rank 0.
"""

import time

import numpy as np
from mpi4py import MPI

from sagips.transport.ring import mean_of_rows
from sagips.transport.rma import RmaInnerGroup

SIZES = [5, 1031, 2]  # per-tensor buffers whose sizes do not divide by N
EPOCHS = 40
SLEEPER, NAP_EPOCH, NAP_S = 1, 10, 0.5


def contribution(rank: int, epoch: int) -> np.ndarray:
    """Distinct for every (rank, epoch): exact in float32."""
    return (rank * 1000 + epoch + np.arange(sum(SIZES)) / 1024).astype(np.float32)


def run(comm: MPI.Comm, window: str, bound: int, nap: bool) -> list[np.ndarray]:
    n, rank = comm.Get_size(), comm.Get_rank()
    group = RmaInnerGroup(comm, sum(SIZES), max_staleness=bound, window=window)
    rng = np.random.default_rng([rank, bound])
    used_log = []
    for epoch in range(1, EPOCHS + 1):
        time.sleep(rng.uniform(0, 0.004))
        if nap and rank == SLEEPER and epoch == NAP_EPOCH:
            time.sleep(NAP_S)
        flat = contribution(rank, epoch)
        bufs = np.split(flat, np.cumsum(SIZES)[:-1])
        stale = group.reduce(bufs, epoch)
        used = group.used.copy()
        assert used[rank] == epoch
        want = np.empty(sum(SIZES), dtype=np.float32)
        mean_of_rows([contribution(p, int(used[p])) for p in range(n)], want)
        assert np.concatenate(bufs).tobytes() == want.tobytes(), (window, bound, epoch, rank, used)
        assert (used >= epoch - bound).all() and (used <= epoch + bound + 1).all(), (bound, epoch, used)
        if bound == 0:
            assert (used == epoch).all(), used
        assert stale == max(0, epoch - used.min())
        used_log.append(used)
    group.close()
    assert group.slots.win == MPI.WIN_NULL
    group.close()  # harmless
    return used_log


def main() -> None:
    comm = MPI.COMM_WORLD
    n, rank = comm.Get_size(), comm.Get_rank()
    for window in ("shared", "passive"):
        for bound in (0, 1, 3):
            run(comm, window, bound, nap=False)
        # The sleeper naps at epoch NAP_EPOCH; the others go on for `bound` more epochs, using its
        # contribution of NAP_EPOCH - 1 (the last it published before the nap).
        bound = 3
        log = run(comm, window, bound, nap=True)
        if rank != SLEEPER and window == "shared":
            waited_for = [e for e, used in enumerate(log, 1) if used[SLEEPER] == NAP_EPOCH - 1]
            assert max(waited_for) >= NAP_EPOCH - 1 + bound, (window, waited_for)
        comm.Barrier()
    if rank == 0:
        print(f"rma-check OK {n}", flush=True)


if __name__ == "__main__":
    main()
