"""Run under mpiexec: every reducer's result equals the NumPy mean of all ranks' inputs.

Checks ARAR ring and chunked, fused (one buffer) and per-tensor (several buffers whose
sizes do not divide by N), RMA-ARAR with max_staleness=0 (both windows) and Allreduce;
results must also be bit-identical on every rank. Prints ``ring-check OK N`` on rank 0.
"""

import numpy as np
from mpi4py import MPI

from sagips.transport.ring import AllreduceReducer, RingReducer
from sagips.transport.rma import RmaInnerGroup

SIZES = [1, 7, 128, 1031, 3]


def inputs(rank: int) -> list[np.ndarray]:
    rng = np.random.default_rng(rank)
    return [rng.standard_normal(s).astype(np.float32) for s in SIZES]


def main() -> None:
    comm = MPI.COMM_WORLD
    n, rank = comm.Get_size(), comm.Get_rank()
    expected = [np.mean([inputs(r)[k] for r in range(n)], axis=0) for k in range(len(SIZES))]
    reducers = {
        "ring": lambda fuse: RingReducer(comm, "ring"),
        "chunked": lambda fuse: RingReducer(comm, "chunked"),
        "allreduce": lambda fuse: AllreduceReducer(comm),
        "rma_shared": lambda fuse: RmaInnerGroup(comm, sum(SIZES), max_staleness=0, window="shared"),
        "rma_passive": lambda fuse: RmaInnerGroup(comm, sum(SIZES), max_staleness=0, window="passive"),
    }
    results = {}
    for name, make in reducers.items():
        for fuse in (True, False):
            reducer = make(fuse)
            for epoch in (1, 2):  # twice: buffers and windows are reused
                mine = inputs(rank)
                bufs = [np.concatenate(mine)] if fuse else mine
                stale = reducer.reduce(bufs, epoch)
                got = np.concatenate(bufs)
                want = np.concatenate(expected)
                assert np.allclose(got, want, rtol=1e-5, atol=1e-6), (name, fuse, n)
                assert stale == 0.0, (name, stale)
                results[name, fuse, epoch] = got.tobytes()
                everyone = comm.allgather(got.tobytes())
                if name != "allreduce":
                    assert all(b == everyone[0] for b in everyone), f"{name} differs between ranks"
            reducer.close()
            if name.startswith("rma"):
                assert reducer.slots.win == MPI.WIN_NULL, "window not freed"
                reducer.close()  # a second close is harmless
    for (name, fuse, epoch), got in results.items():
        if name.startswith("rma"):  # max_staleness=0: the ARAR ring's result, bit for bit
            assert got == results["ring", fuse, epoch], (name, fuse, epoch)
    if rank == 0:
        print(f"ring-check OK {n}", flush=True)


if __name__ == "__main__":
    main()
