"""Asynchronous ring-all-reduce (ARAR, Algorithm 1) and its baselines over mpi4py.

All calls are the buffer-based, upper-case ones on contiguous float32 NumPy
arrays; every buffer stays untouched until its request has completed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from mpi4py import MPI


class _Scratch:
    """Receive buffers kept per shape, so the hot path allocates nothing."""

    def __init__(self) -> None:
        self._arrays: dict[tuple, np.ndarray] = {}

    def get(self, key: tuple, shape: tuple[int, ...]) -> np.ndarray:
        arr = self._arrays.get(key)
        if arr is None or arr.shape != shape:
            arr = self._arrays[key] = np.empty(shape, dtype=np.float32)
        return arr


def mean_of_rows(rows: Sequence[np.ndarray], out: np.ndarray) -> None:
    """``out`` = the mean of ``rows``, added in their order, so every rank gets the same bits.

    np.mean(axis=0) on a (ranks, values) array runs about 5x slower than these
    row-by-row additions, which made the average cost more than the transfer.
    """
    if len(rows) == 1:
        np.copyto(out, rows[0])
    else:
        np.add(rows[0], rows[1], out=out)
    for row in rows[2:]:
        out += row
    out /= len(rows)


def ring_allreduce(comm: MPI.Comm, bufs: Sequence[np.ndarray], scratch: _Scratch) -> None:
    """Algorithm 1: N-1 steps, each rank sends to its right and receives from its left.

    At step s a rank passes on the contribution it received at step s-1 (its own
    gradient at s = 1) with non-blocking Isend/Irecv, so after N-1 steps it holds
    every rank's gradient. Contributions are kept by source and averaged in rank
    order, which makes the result bit-identical on all ranks and the replicas of
    the generator stay equal.
    """
    n, rank = comm.Get_size(), comm.Get_rank()
    if n == 1:
        return
    right, left = (rank + 1) % n, (rank - 1) % n
    parts = [scratch.get(("ring", k), (n, buf.size)) for k, buf in enumerate(bufs)]
    for buf, part in zip(bufs, parts):
        part[rank] = buf
    for step in range(1, n):
        send_src, recv_src = (rank - step + 1) % n, (rank - step) % n
        reqs = []
        for k, part in enumerate(parts):
            reqs.append(comm.Irecv(part[recv_src], source=left, tag=k))
            reqs.append(comm.Isend(part[send_src], dest=right, tag=k))
        MPI.Request.Waitall(reqs)
    for buf, part in zip(bufs, parts):
        mean_of_rows(part, buf)


def chunked_allreduce(comm: MPI.Comm, bufs: Sequence[np.ndarray], scratch: _Scratch) -> None:
    """Bandwidth-optimal ring: reduce-scatter then all-gather over N chunks.

    Each rank moves 2 (N-1)/N of the buffer instead of (N-1) times all of it. Every
    chunk is reduced by one owner and then copied out, so all ranks end bit-identical.
    """
    n, rank = comm.Get_size(), comm.Get_rank()
    if n == 1:
        return
    right, left = (rank + 1) % n, (rank - 1) % n
    chunks = [np.array_split(buf, n) for buf in bufs]
    tmp = [scratch.get(("chunk", k), (max(c.size for c in cs),)) for k, cs in enumerate(chunks)]

    def step(send_idx: int, recv_idx: int) -> list[np.ndarray]:
        reqs, landed = [], []
        for k, cs in enumerate(chunks):
            recv = tmp[k][: cs[recv_idx].size]
            reqs.append(comm.Irecv(recv, source=left, tag=k))
            reqs.append(comm.Isend(cs[send_idx], dest=right, tag=k))
            landed.append(recv)
        MPI.Request.Waitall(reqs)
        return landed

    for s in range(n - 1):  # reduce-scatter
        recv_idx = (rank - s - 1) % n
        for cs, recv in zip(chunks, step((rank - s) % n, recv_idx)):
            cs[recv_idx] += recv
    owned = (rank + 1) % n
    for cs in chunks:
        cs[owned] /= n
    for s in range(n - 1):  # all-gather
        recv_idx = (rank - s) % n
        for cs, recv in zip(chunks, step((rank - s + 1) % n, recv_idx)):
            cs[recv_idx][:] = recv


class RingReducer:
    """ARAR over one communicator: ``algorithm`` is ``ring`` (Algorithm 1) or ``chunked``."""

    def __init__(self, comm: MPI.Comm, algorithm: str = "ring") -> None:
        self.comm = comm
        self._run = {"ring": ring_allreduce, "chunked": chunked_allreduce}[algorithm]
        self._scratch = _Scratch()

    def reduce(self, bufs: Sequence[np.ndarray], epoch: int) -> float:
        self._run(self.comm, bufs, self._scratch)
        return 0.0

    def close(self) -> None:
        pass


class AllreduceReducer:
    """Synchronous ``MPI.Allreduce`` of every buffer: the Horovod-style baseline ("hvd", Tab. IV)."""

    def __init__(self, comm: MPI.Comm) -> None:
        self.comm = comm

    def reduce(self, bufs: Sequence[np.ndarray], epoch: int) -> float:
        n = self.comm.Get_size()
        for buf in bufs:
            self.comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
            buf /= n
        return 0.0

    def close(self) -> None:
        pass
