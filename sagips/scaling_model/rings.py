"""Communication: what one gradient exchange of each mode costs (section IV-B, Tab. II).

Every ring step costs ``step_s`` (the Python loop and Waitall of sagips' ring) plus,
per message, ``message_s`` (an mpi4py Irecv + Isend) and the link's latency, plus
the step's bytes over the link's bandwidth. A ring step is synchronous around the
ring, so a ring with any link between nodes pays the inter-node figures. Averaging
N contributions reads N buffers at the host's memory bandwidth. The Python/mpi4py
costs and the shared-memory link are calibrated on this machine with
``sagips-bench comm``; the inter-node link comes from a profile.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

F32 = 4  # bytes per exchanged value


@dataclass(frozen=True)
class Link:
    """One hop: ``latency_s`` per message, ``bandwidth_Bps`` bytes per second."""

    latency_s: float
    bandwidth_Bps: float


@dataclass(frozen=True)
class Network:
    """The figures every exchange is built from (see the module docstring)."""

    step_s: float  # per ring step: the Python loop and MPI.Request.Waitall
    message_s: float  # per message of a step: mpi4py Irecv + Isend
    call_s: float  # per MPI.Allreduce call, besides its transfers
    reduce_Bps: float  # host memory bandwidth of the averaging (bytes read per second)
    intra: Link  # between ranks of one node (shared memory)
    inter: Link  # between nodes

    def link(self, spans_nodes: bool) -> Link:
        return self.inter if spans_nodes else self.intra


@dataclass(frozen=True)
class Payload:
    """What one exchange moves: ``values`` float32 in ``messages`` messages per step (fused: 1)."""

    values: int
    messages: int

    @property
    def nbytes(self) -> int:
        return self.values * F32


def step_time(net: Network, link: Link, messages: int, nbytes: float) -> float:
    """One ring step: step_s + messages * (message_s + latency) + bytes / bandwidth."""
    return net.step_s + messages * (net.message_s + link.latency_s) + nbytes / link.bandwidth_Bps


def average_time(net: Network, rows: int, nbytes: float) -> float:
    """Averaging ``rows`` contributions of ``nbytes`` each: rows * bytes / reduce bandwidth."""
    return rows * nbytes / net.reduce_Bps if rows > 1 else 0.0


def ring_time(net: Network, n: int, spans_nodes: bool, payload: Payload, algorithm: str = "ring") -> float:
    """One all-reduce over n ranks by sagips' rings (``transport.algorithm``).

    ring (Algorithm 1): N-1 steps, each moving the whole buffer, then the average of N rows.
    chunked (reduce-scatter + all-gather): 2(N-1) steps of 1/N of the buffer, N-1 additions of 1/N.
    """
    if n == 1:
        return 0.0
    link, size = net.link(spans_nodes), payload.nbytes
    if algorithm == "ring":
        return (n - 1) * step_time(net, link, payload.messages, size) + average_time(net, n, size)
    if algorithm == "chunked":
        steps = 2 * (n - 1) * step_time(net, link, payload.messages, size / n)
        return steps + average_time(net, n, size / n)
    raise ValueError(f"transport.algorithm={algorithm!r} is not one of ring, chunked")


def allreduce_time(net: Network, n: int, spans_nodes: bool, payload: Payload) -> float:
    """MPI.Allreduce of every buffer (mode allreduce), as MPICH runs long messages.

    Rabenseifner's reduce-scatter + all-gather: 2 ceil(log2 N) rounds of latency per
    call, 2 (N-1)/N of the buffer over the link and (N-1)/N of it reduced, plus the
    per-call cost measured here; one call per tensor unless fused.
    """
    if n == 1:
        return 0.0
    link, size = net.link(spans_nodes), payload.nbytes
    rounds = 2 * math.ceil(math.log2(n))
    per_call = net.call_s + rounds * link.latency_s
    moved = 2 * (n - 1) / n * size / link.bandwidth_Bps
    return payload.messages * per_call + moved + average_time(net, n, size / n)


def shared_window_time(net: Network, k: int, payload: Payload) -> float:
    """One asynchronous RMA-ARAR inner exchange through an MPI-3 shared-memory window.

    Publish the own contribution (one copy), copy each of the k-1 peers' newest
    slots (no network, no progress from the peer) and average the k rows: about
    (1 + (k-1) + k) buffer passes at memory bandwidth plus one step's overhead.
    """
    if k == 1:
        return 0.0
    return net.step_s + average_time(net, 2 * k, payload.nbytes)
