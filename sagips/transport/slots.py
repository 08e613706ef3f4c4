"""Contribution slots in an MPI window: what RMA-ARAR writes to and reads from (section IV-B3, Fig. 5).

Every rank of a group owns ``DEPTH`` slots in one window. The contribution of
epoch e goes into slot ``e % DEPTH``, led by a header of two int64, ``seq`` and
``epoch``. ``seq`` is a sequence lock: odd while the owner writes, even when the
slot is complete. A reader copies the slot, then checks that ``seq`` was even and
did not change, so it never uses a half-written contribution. With two slots the
newest complete contribution stays intact while the owner writes the next one.

Two windows, one protocol:

- ``SharedSlots``: an MPI-3 shared-memory window (``Win.Allocate_shared`` on a
  group that lives on one node). A peer's slot is a NumPy view of its memory, so
  a read is a memory copy and needs no progress from the peer: a busy peer never
  delays a reader. ``Win.Sync`` is the memory barrier around writes and reads.
- ``PassiveSlots``: a passive-target window (``Win.Allocate``, ``Lock``/``Get``)
  for a group that spans nodes. The owner writes its slot under an exclusive
  lock and a reader fetches it under a shared lock. Most MPI libraries grant a
  lock on a busy peer only when that peer next enters MPI, so here a read may
  wait for the peer (see docs/fidelity.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from mpi4py import MPI

DEPTH = 2  # slots per rank: the newest complete one and the one being written
NEVER = -1  # the epoch of a slot nothing was written to
_HEADER_BYTES = 16  # int64 seq, int64 epoch
_F32 = np.dtype(np.float32).itemsize


def slot_bytes(n_values: int) -> int:
    """Header plus float32 values, rounded up to 8 bytes so every header stays aligned."""
    return -(-(_HEADER_BYTES + n_values * _F32) // 8) * 8


def _split(raw: np.ndarray, n_values: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(header, values) views of each slot in a rank's raw bytes."""
    size = slot_bytes(n_values)
    views = []
    for k in range(DEPTH):
        base = k * size
        header = raw[base : base + _HEADER_BYTES].view(np.int64)
        values = raw[base + _HEADER_BYTES : base + _HEADER_BYTES + n_values * _F32].view(np.float32)
        views.append((header, values))
    return views


class _Slots:
    """The protocol shared by both windows; subclasses say where a slot's bytes are."""

    win: MPI.Win

    def __init__(self, comm: MPI.Comm, n_values: int) -> None:
        self.comm, self.n_values = comm, n_values
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.bytes = DEPTH * slot_bytes(n_values)

    # -- where the bytes are -------------------------------------------------
    def _own(self) -> list[tuple[np.ndarray, np.ndarray]]:
        raise NotImplementedError

    def _peer(self, peer: int, k: int | None) -> list[tuple[np.ndarray, np.ndarray]]:
        """Views of ``peer``'s slots; ``k`` names the one about to be read (None: headers only)."""
        raise NotImplementedError

    def _begin_write(self) -> None:
        """Make this rank's slots writable (a lock where the window needs one)."""

    def _end_write(self) -> None:
        """Make the write visible to readers."""

    def _barrier(self) -> None:
        self.win.Sync()

    def _start(self) -> None:
        """Every rank's slots are empty before anyone reads: collective."""
        self._begin_write()
        for header, _ in self._own():
            header[:] = (0, NEVER)
        self._end_write()
        self.comm.Barrier()

    # -- the protocol ----------------------------------------------------------
    def publish(self, epoch: int, bufs: Sequence[np.ndarray]) -> None:
        """Write this rank's contribution of ``epoch`` (``bufs`` concatenated) into its slot."""
        header, values = self._own()[epoch % DEPTH]
        self._begin_write()
        header[0] += 1  # odd: being written
        self._barrier()
        pos = 0
        for buf in bufs:
            values[pos : pos + buf.size] = buf.reshape(-1)
            pos += buf.size
        header[1] = epoch
        self._barrier()
        header[0] += 1  # even: complete
        self._end_write()

    def epochs(self, peer: int) -> np.ndarray:
        """The epochs ``peer``'s slots hold, without copying them (a hint: a slot may be mid-write)."""
        return np.array([int(h[1]) for h, _ in self._peer(peer, None)])

    def read(self, peer: int, k: int, out: np.ndarray) -> int | None:
        """Copy ``peer``'s slot ``k`` into ``out``; its epoch, or None when the owner wrote meanwhile."""
        header, values = self._peer(peer, k)[k]
        seq = int(header[0])
        if seq % 2:
            return None
        self._barrier()
        epoch = int(header[1])
        np.copyto(out, values)
        self._barrier()
        return epoch if int(header[0]) == seq else None

    def free(self) -> None:
        """Collective; a second call is harmless (the window is then ``WIN_NULL``)."""
        if self.win != MPI.WIN_NULL:
            self.comm.Barrier()  # a rank that finished first keeps its slots readable until here
            self._unlock()
            self.win.Free()

    def _unlock(self) -> None:
        pass


class SharedSlots(_Slots):
    """Slots in an MPI-3 shared-memory window: every member maps every peer's slots."""

    def __init__(self, comm: MPI.Comm, n_values: int) -> None:
        super().__init__(comm, n_values)
        self.win = MPI.Win.Allocate_shared(self.bytes, disp_unit=1, comm=comm)
        self.views = []
        for r in range(self.size):
            memory, _ = self.win.Shared_query(r)
            self.views.append(_split(np.frombuffer(memory, dtype=np.uint8), n_values))
        # One passive epoch for the whole run; Win.Sync orders the loads and stores inside it.
        self.win.Lock_all(MPI.MODE_NOCHECK)
        self._start()

    def _own(self) -> list[tuple[np.ndarray, np.ndarray]]:
        return self.views[self.rank]

    def _peer(self, peer: int, k: int | None) -> list[tuple[np.ndarray, np.ndarray]]:
        self.win.Sync()
        return self.views[peer]

    def _end_write(self) -> None:
        self.win.Sync()

    def _unlock(self) -> None:
        self.win.Unlock_all()


class PassiveSlots(_Slots):
    """Slots in a passive-target window: written under an exclusive lock, fetched with ``Get``."""

    def __init__(self, comm: MPI.Comm, n_values: int) -> None:
        super().__init__(comm, n_values)
        self.win = MPI.Win.Allocate(self.bytes, disp_unit=1, comm=comm)
        self.mine = _split(np.frombuffer(self.win.tomemory(), dtype=np.uint8), n_values)
        self.fetched = np.zeros(self.bytes, dtype=np.uint8)  # a snapshot taken under the peer's lock
        self.snapshot = _split(self.fetched, n_values)
        self._start()

    def _own(self) -> list[tuple[np.ndarray, np.ndarray]]:
        return self.mine

    def _peer(self, peer: int, k: int | None) -> list[tuple[np.ndarray, np.ndarray]]:
        size = slot_bytes(self.n_values)
        # Headers only, or one whole slot: a consistent snapshot, since the owner writes under LOCK_EXCLUSIVE.
        spans = [(j * size, _HEADER_BYTES) for j in range(DEPTH)] if k is None else [(k * size, size)]
        self.win.Lock(peer, MPI.LOCK_SHARED)
        for start, length in spans:
            self.win.Get([self.fetched[start : start + length], MPI.BYTE], peer,
                         target=(start, length, MPI.BYTE))  # fmt: skip
        self.win.Unlock(peer)
        return self.snapshot

    def _begin_write(self) -> None:
        self.win.Lock(self.rank, MPI.LOCK_EXCLUSIVE)

    def _end_write(self) -> None:
        self.win.Unlock(self.rank)

    def _barrier(self) -> None:
        pass  # the locks order everything


def on_one_node(comm: MPI.Comm) -> bool:
    """Whether every member of ``comm`` shares one node's memory (collective)."""
    node = comm.Split_type(MPI.COMM_TYPE_SHARED)
    whole = node.Get_size() == comm.Get_size()
    node.Free()
    return bool(comm.allreduce(whole, op=MPI.LAND))
