"""A job's predicted training time and analysis rate (eq. 9): the model's terms put together.

Per mode (Tab. II plus the baselines): who waits for whom (waiting.py), what the
exchange costs (rings.py), and how many ranks share a node's compute slots. The
per-epoch time is simulated over at most ``SIM_EPOCHS`` epochs (whole outer
periods) and extrapolated to the job's epochs; the training time is the slowest
rank's, as in summary.json.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sagips.config import MODES
from sagips.equations import analysis_rate
from sagips.networks import Generator
from sagips.scaling_model.rings import (
    Network,
    Payload,
    allreduce_time,
    ring_time,
    shared_window_time,
)
from sagips.scaling_model.waiting import EpochWork, cpu_slowdown, simulate_groups

SIM_EPOCHS = 2000
GROUPED = ("arar_arar", "rma_arar_arar")  # Tab. II: inner groups and an outer ring
SIM_DRAWS = 4_000_000  # per-epoch times drawn at once (memory) and, over trials, for one prediction
MAX_TRIALS = 16


@dataclass(frozen=True)
class Machine:
    """Where a job runs: its network, one rank's compute and how ranks share a node."""

    name: str
    network: Network
    compute: EpochWork  # one rank's epoch at ``ref_events`` discriminator events, no jitter
    ref_events: int
    node_ranks: int | None  # ranks placed on one node; None: every rank on one machine
    slots: float  # compute units of a node (GPUs, or CPU cores free for this job)


@dataclass(frozen=True)
class Job:
    """The settings of one ``sagips`` run that its time depends on (keys of conf/config.yaml)."""

    mode: str
    ranks: int
    ranks_per_node: int = 1  # inner group size
    h: int = 1000
    staleness: int = 0  # transport.max_staleness (rma_arar_arar)
    epochs: int = 100_000
    disc_batch: int = 102_400  # N_disc = param_samples x events_per_sample
    fuse: bool = False
    weights_only: bool = True
    algorithm: str = "ring"
    jitter_s: float = 0.0

    @property
    def groups(self) -> int:
        return self.ranks // self.group_size

    @property
    def group_size(self) -> int:
        return 1 if self.mode == "ensemble" else min(self.ranks_per_node, self.ranks)


@dataclass(frozen=True)
class Prediction:
    job: Job
    epoch_s: float  # mean time per epoch of the slowest rank
    compute_s: float  # compute per epoch, node sharing included
    exchange_s: float  # exchange per epoch (the outer ring's share included)

    @property
    def wait_s(self) -> float:
        """Jitter plus waiting for peers, per epoch."""
        return max(0.0, self.epoch_s - self.compute_s - self.exchange_s)

    @property
    def train_time_s(self) -> float:
        return self.job.epochs * self.epoch_s

    @property
    def analysis_rate(self) -> float:
        return analysis_rate(self.job.ranks, self.job.disc_batch, self.job.epochs, self.train_time_s)


def payload(job: Job) -> Payload:
    """The generator gradients a mode exchanges: weights only for the rings (section V-C), all for
    allreduce; one message per step when fused, else one per tensor."""
    all_params = job.mode == "allreduce" or not job.weights_only
    sizes = [p.numel() for p in Generator().parameters() if all_params or p.ndim > 1]
    return Payload(sum(sizes), 1 if job.fuse else len(sizes))


def spans_nodes(members: list[int], node_ranks: int | None) -> bool:
    """Whether a ring over ``members`` crosses a node boundary (ranks fill nodes in order)."""
    return node_ranks is not None and len({r // node_ranks for r in members}) > 1


def exchange_costs(job: Job, machine: Machine) -> tuple[float, float]:
    """(inner exchange every epoch, outer ring every h epochs) in seconds, for ``job.mode``."""
    net, load, n, k = machine.network, payload(job), job.ranks, job.group_size
    everyone = list(range(n))
    if job.mode == "ensemble":
        return 0.0, 0.0
    if job.mode == "arar":
        return ring_time(net, n, spans_nodes(everyone, machine.node_ranks), load, job.algorithm), 0.0
    if job.mode == "allreduce":
        return allreduce_time(net, n, spans_nodes(everyone, machine.node_ranks), load), 0.0
    groups = [list(range(g * k, (g + 1) * k)) for g in range(job.groups)]
    inner_spans = any(spans_nodes(g, machine.node_ranks) for g in groups)
    outer = [g[0] for g in groups]
    outer_s = ring_time(net, len(outer), spans_nodes(outer, machine.node_ranks), load, job.algorithm)
    if job.mode == "rma_arar_arar" and not inner_spans:
        return shared_window_time(net, k, load), outer_s
    return ring_time(net, k, inner_spans, load, job.algorithm), outer_s


def _in_step(job: Job, node: int) -> int:
    """Ranks of a node that compute at the same moments as a given one (it included)."""
    if job.mode in ("arar", "allreduce"):
        return node
    if job.mode == "ensemble" or (job.mode == "rma_arar_arar" and job.staleness > 0):
        return 1
    return min(job.group_size, node)


def _simulated_epochs(job: Job) -> int:
    """At most SIM_EPOCHS epochs, but whole outer periods (at least one) where groups couple."""
    if job.mode in GROUPED and job.groups > 1:
        return min(job.epochs, job.h * max(1, SIM_EPOCHS // job.h))
    return min(job.epochs, SIM_EPOCHS)


def _epoch_time(job: Job, work: EpochWork, inner_s: float, outer_s: float, rng: np.random.Generator) -> float:
    """Mean epoch time of the slowest rank (see waiting.simulate_groups)."""
    if job.mode in ("arar", "allreduce"):
        return work.synchronous_epoch(job.ranks, rng) + inner_s
    epochs, k = _simulated_epochs(job), job.group_size
    trials = int(np.clip(SIM_DRAWS // (job.ranks * epochs), 1, MAX_TRIALS))
    per_chunk = max(1, SIM_DRAWS // (trials * job.ranks))
    chunks = (work.draw(rng, (trials, job.groups, k, min(per_chunk, epochs - start)))
              for start in range(0, epochs, per_chunk))  # fmt: skip
    staleness = None if job.mode == "ensemble" else (job.staleness if job.mode == "rma_arar_arar" else 0)
    done = simulate_groups(chunks, staleness, inner_s, job.h if job.mode in GROUPED else 0, outer_s)
    # The job's time is the slowest rank's. Its lead over the mean rank is bounded where ranks
    # couple (rings, staleness bound), but grows as sqrt(epochs) where they never do (ensemble).
    mean, slowest = done.mean(axis=(1, 2)), done.max(axis=(1, 2))
    lead = (slowest - mean) * (np.sqrt(job.epochs / epochs) if job.mode == "ensemble" else 1.0)
    return float((mean * job.epochs / epochs + lead).mean()) / job.epochs


def predict(job: Job, machine: Machine, seed: int = 0) -> Prediction:
    """Training time and analysis rate of ``job`` on ``machine``."""
    if job.mode not in MODES:
        raise ValueError(f"mode={job.mode!r} is not one of {', '.join(MODES)}")
    if job.ranks % job.group_size:
        raise ValueError(f"ranks_per_node={job.ranks_per_node} does not divide ranks={job.ranks}")
    rng = np.random.default_rng(seed)
    inner_s, outer_s = exchange_costs(job, machine)
    node = job.ranks if machine.node_ranks is None else min(job.ranks, machine.node_ranks)
    aligned = _in_step(job, node)
    base = EpochWork(machine.compute.compute_s * job.disc_batch / machine.ref_events, job.jitter_s,
                     machine.compute.spread)  # fmt: skip
    # Ranks out of step share the node only while busy: find the busy share and the slowdown together.
    # Asleep (jitter) is never busy; waiting is busy in an MPI ring (MPICH polls) but not in the
    # RMA inner group, whose waits yield the core (sagips.transport.rma).
    p_busy, epoch_s, factor = 1.0, 0.0, 1.0
    for _ in range(4 if aligned < node and node > machine.slots else 1):
        factor = cpu_slowdown(aligned, node - aligned, p_busy, machine.slots)
        compute_s = base.scaled(factor).compute_s
        epoch_s = _epoch_time(job, base.scaled(factor), inner_s, outer_s, rng)
        busy_s = compute_s + inner_s if job.mode == "rma_arar_arar" else epoch_s - job.jitter_s
        p_busy = float(np.clip(busy_s / epoch_s, 0.0, 1.0))
    exchange_s = inner_s + (outer_s / job.h if job.groups > 1 and job.mode in GROUPED else 0.0)
    return Prediction(job, epoch_s, base.compute_s * factor, exchange_s)
