"""Calibration from what sagips measures: ``sagips-bench comm``'s JSON line and a run's metrics.

``sagips-bench comm`` times, on n ranks of one node, one exchange of each ring
variant (ARAR and chunked, fused and one message per tensor) and MPI.Allreduce.
Each ring time is linear in the unknown costs (rings.ring_time):

    t - averaging = steps * step_s + messages * message_s + bytes / bandwidth

so, with the averaging's memory bandwidth measured apart, a non-negative least
squares fit over the four variants (the fastest of each one's times: timing noise
only ever adds, so the minimum is the least disturbed by other load) gives the per-step and per-message
Python/mpi4py costs and the shared-memory bandwidth; the allreduce then gives the
per-call cost. The design matrix is read off ``ring_time`` itself, so the fit and
the model cannot drift apart.
"""

from __future__ import annotations

import csv
import itertools
import math
from pathlib import Path

import numpy as np

from sagips.scaling_model.rings import Link, Network, Payload, allreduce_time, ring_time
from sagips.scaling_model.waiting import EpochWork

RING_VARIANTS = {  # sagips-bench comm's names -> (transport.algorithm, fused)
    "arar fused": ("ring", True),
    "arar per-tensor": ("ring", False),
    "chunked fused": ("chunked", True),
    "chunked per-tensor": ("chunked", False),
}


def nonnegative_lstsq(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """min |a x - b| subject to x >= 0, by trying every set of free columns (a has few)."""
    best, best_res = np.zeros(a.shape[1]), float(np.sum(b**2))
    for k in range(1, a.shape[1] + 1):
        for cols in itertools.combinations(range(a.shape[1]), k):
            x_sub = np.linalg.lstsq(a[:, cols], b, rcond=None)[0]
            if np.all(x_sub >= 0):
                x = np.zeros(a.shape[1])
                x[list(cols)] = x_sub
                res = float(np.sum((a @ x - b) ** 2))
                if res < best_res:
                    best, best_res = x, res
    return best


def _ring_terms(n: int, load: Payload, algorithm: str, reduce_Bps: float) -> tuple[float, list[float]]:
    """ring_time split into its known part (averaging) and its slopes in (step_s, message_s, 1/B)."""

    def t(step: float = 0.0, message: float = 0.0, seconds_per_byte: float = 0.0) -> float:
        link = Link(0.0, 1 / seconds_per_byte if seconds_per_byte else math.inf)
        return ring_time(Network(step, message, 0.0, reduce_Bps, link, link), n, False, load, algorithm)

    known = t()
    return known, [t(step=1) - known, t(message=1) - known, t(seconds_per_byte=1) - known]


def fit_network(figures: dict, reduce_Bps: float) -> Network:
    """The intra-node ``Network`` from ``sagips-bench comm``'s JSON figures (one node, n ranks).

    ``reduce_Bps``: the host memory bandwidth of the averaging, measured apart. The
    inter-node link is set equal to the intra-node one (one machine); a profile replaces it.
    """
    n, values, tensors = figures["ranks"], figures["values"], figures["tensors"]
    rows, targets = [], []
    for name, (algorithm, fused) in RING_VARIANTS.items():
        known, slopes = _ring_terms(n, Payload(values, 1 if fused else tensors), algorithm, reduce_Bps)
        rows.append(slopes)
        targets.append(figures["exchange_min_s"][name] - known)
    step_s, message_s, seconds_per_byte = nonnegative_lstsq(np.array(rows), np.array(targets))
    intra = Link(0.0, 1 / seconds_per_byte if seconds_per_byte > 0 else math.inf)
    net = Network(float(step_s), float(message_s), 0.0, reduce_Bps, intra, intra)
    # comm's allreduce is one fused call: what the transfers and the reduction leave is the call's cost
    rest = allreduce_time(net, n, False, Payload(values, 1))
    call_s = max(0.0, figures["exchange_min_s"]["allreduce"] - rest)
    return Network(net.step_s, net.message_s, call_s, reduce_Bps, intra, intra)


def compute_from_metrics(run_dir: Path) -> EpochWork:
    """One rank's compute per epoch, and its spread, from a run's ``metrics/rank{r}.csv``.

    Each row holds the accumulated training time at its epoch and the mean exchange
    time of the epochs since the row before; compute per epoch = the time between
    rows over their epochs, less the exchange. The spread (per-epoch times over their
    mean) is kept only when the run logged every epoch (``train.log_every=1``); use a
    1-rank run, whose epochs wait for nobody.
    """
    per_epoch, every_epoch = [], True
    for path in sorted(Path(run_dir, "metrics").glob("rank*.csv")):
        with path.open(newline="") as f:
            rows = sorted(csv.DictReader(f), key=lambda r: int(r["epoch"]))
        last_epoch, last_time = 0, 0.0
        for row in rows:
            epochs, time = int(row["epoch"]) - last_epoch, float(row["train_time_s"])
            per_epoch.append((time - last_time) / epochs - float(row["comm_s"]))
            every_epoch &= epochs == 1
            last_epoch, last_time = int(row["epoch"]), time
    if not per_epoch:
        raise FileNotFoundError(f"no metrics/rank*.csv rows under {run_dir}")
    times = np.clip(np.array(per_epoch), 0.0, None)
    mean = float(times.mean())
    return EpochWork(mean, spread=times / mean if every_epoch and len(times) > 1 else None)
