"""Run under mpiexec -n N (2-4): no reader ever gets a half-written contribution.

Rank 0 publishes WRITES contributions as fast as it can, each a large vector filled
with its epoch; the other ranks read rank 0's newest slot in a tight loop meanwhile.
Every read the slots accept must be one whole contribution: every value equal to the
epoch the slot claims. Reads that met the writer are refused (counted), never torn.
Both windows. Prints ``slots-stress OK N reads R refused F`` on rank 0.
"""

import numpy as np
from mpi4py import MPI

from sagips.transport.slots import PassiveSlots, SharedSlots

VALUES = 1 << 20  # 4 MB: a copy takes long enough for the writer to overtake it
WRITES = 300


def main() -> None:
    comm = MPI.COMM_WORLD
    rank = comm.Get_rank()
    totals = np.zeros(2, dtype=np.int64)  # accepted reads, refused reads
    for kind in (SharedSlots, PassiveSlots):
        slots = kind(comm, VALUES)
        done = np.zeros(1, dtype=np.int64)
        if rank == 0:
            buf = np.empty(VALUES, dtype=np.float32)
            for epoch in range(1, WRITES + 1):
                buf.fill(epoch)
                slots.publish(epoch, [buf])
            done[0] = 1
        else:
            out = np.empty(VALUES, dtype=np.float32)
            seen = set()
            last = 0
            while last < WRITES:
                stamps = slots.epochs(0)
                k = int(np.argmax(stamps))
                if stamps[k] < 1:
                    continue
                got = slots.read(0, k, out)
                if got is None:
                    totals[1] += 1
                    continue
                assert out.min() == out.max() == got, (kind.__name__, got, out.min(), out.max())
                totals[0] += 1
                seen.add(got)
                last = max(last, got)
            assert len(seen) > 1, seen
        slots.free()
    comm.Allreduce(MPI.IN_PLACE, totals, op=MPI.SUM)
    if rank == 0:
        print(f"slots-stress OK {comm.Get_size()} reads {totals[0]} refused {totals[1]}", flush=True)


if __name__ == "__main__":
    main()
