"""RMA-ARAR (section IV-B3, Fig. 5): the inner ring moves gradients through MPI windows.

Each rank exposes one window, allocated once per run. Ring step s has its own slot
and every exchanged tensor its own region inside the slot, each region led by a
stamp (the epoch its contribution was computed in), so no two tensors ever share
a displacement. At step s a rank puts the contribution it holds into slot s of its
right neighbour's window and reads slot s of its own window, filled by its left.

``sync=True`` closes every step with a fence: exactly the ARAR result.
``sync=False`` never waits for a slower neighbour: puts and local reads are
guarded by exclusive passive-target locks, and a rank uses whatever contribution
its left neighbour published last; the age of the oldest one used is the
staleness reported for the epoch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from mpi4py import MPI

from sagips.transport.ring import mean_of_rows

NEVER = -1.0  # stamp of a slot no contribution has reached yet
_F32 = np.dtype(np.float32).itemsize


class RmaRingReducer:
    def __init__(self, comm: MPI.Comm, sizes: Sequence[int], sync: bool) -> None:
        self.comm, self.sync = comm, sync
        self.n, self.rank = comm.Get_size(), comm.Get_rank()
        self.sizes = list(sizes)
        region = [1 + s for s in self.sizes]  # stamp + values, per tensor
        self.offsets = np.concatenate(([0], np.cumsum(region)[:-1])).astype(int)
        self.slot = int(sum(region))
        n_slots = max(self.n - 1, 1)
        self.win = MPI.Win.Allocate(n_slots * self.slot * _F32, disp_unit=_F32, comm=comm)
        self.local = np.frombuffer(self.win.tomemory(), dtype=np.float32)
        self.win.Lock(self.rank, MPI.LOCK_EXCLUSIVE)
        self.local[:] = NEVER
        self.win.Unlock(self.rank)
        # contributions by source rank, each with its stamp in column 0
        self.parts = [np.full((self.n, 1 + s), NEVER, dtype=np.float32) for s in self.sizes]
        comm.Barrier()

    def _disp(self, step: int, k: int) -> int:
        return (step - 1) * self.slot + int(self.offsets[k])

    def _put(self, step: int, src: int) -> None:
        right = (self.rank + 1) % self.n
        for k, part in enumerate(self.parts):
            self.win.Put(part[src], right, target=(self._disp(step, k), part.shape[1], MPI.FLOAT))

    def _read(self, step: int, src: int) -> None:
        for k, part in enumerate(self.parts):
            d = self._disp(step, k)
            part[src] = self.local[d : d + part.shape[1]]

    def reduce(self, bufs: Sequence[np.ndarray], epoch: int) -> float:
        if self.n == 1:
            return 0.0
        for part, buf in zip(self.parts, bufs):
            part[self.rank, 0] = epoch
            part[self.rank, 1:] = buf
        right = (self.rank + 1) % self.n
        for step in range(1, self.n):
            send_src, recv_src = (self.rank - step + 1) % self.n, (self.rank - step) % self.n
            if self.sync:
                self.win.Fence()
                self._put(step, send_src)
                self.win.Fence()
                self._read(step, recv_src)
            else:
                self.win.Lock(right, MPI.LOCK_EXCLUSIVE)
                self._put(step, send_src)
                self.win.Unlock(right)
                self.win.Lock(self.rank, MPI.LOCK_EXCLUSIVE)
                self._read(step, recv_src)
                self.win.Unlock(self.rank)
        staleness = 0.0
        for part, buf in zip(self.parts, bufs):
            stamps = part[:, 0]
            seen = stamps >= 0
            mean_of_rows([part[r, 1:] for r in np.flatnonzero(seen)], buf)
            staleness = max(staleness, float(epoch - stamps[seen].min()))
        return staleness

    def close(self) -> None:
        self.comm.Barrier()
        self.win.Free()
