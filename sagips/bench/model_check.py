"""The model against real runs here: ``sagips`` at 1, 2 and 4 ranks, three modes, with and without jitter.

Each job runs like ``sagips-bench scaling`` runs it (one torch thread per rank,
the same samples on every rank). One rank's compute per epoch and its spread come
from a 1-rank run of the same size logged every epoch, made first in the same
command. The machine is shared: for every job the CPU time other users' processes
took meanwhile (all CPU time in /proc/stat less this job's own) is measured, and
the model is given the cores left (``slots``), the 1-rank calibration included.
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from sagips.bench.scaling import sagips_run
from sagips.bench.workload import load_config
from sagips.scaling_model import Job, Machine, predict
from sagips.scaling_model.calibrate import compute_from_metrics
from sagips.scaling_model.profiles import cores
from sagips.scaling_model.rings import Network
from sagips.scaling_model.waiting import cpu_slowdown

RANKS = (1, 2, 4)


@dataclass(frozen=True)
class CheckSettings:
    samples: int
    events: int
    epochs: int
    jitter_ms: float
    modes: tuple[str, ...]  # the modes of --modes
    ranks_per_node: int = 2  # 4 ranks: two inner groups and an outer ring between them
    h: int = 10


def _busy_s() -> float | None:
    """CPU seconds the whole machine spent busy (all users), from /proc/stat; None elsewhere."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@contextmanager
def other_load() -> Iterator[Callable[[], float]]:
    """Cores that other users' processes kept busy while the block ran (0 where unknown)."""
    start = (_busy_s(), _children_cpu_s(), time.perf_counter())
    result: list[float] = [0.0]
    yield lambda: result[0]
    busy, own, wall = _busy_s(), _children_cpu_s() - start[1], time.perf_counter() - start[2]
    if busy is not None and start[0] is not None and wall > 0:
        result[0] = max(0.0, (busy - start[0] - own) / wall)


def _transport(mode: str) -> dict:
    """The composed config's transport keys for ``mode``, as the checked run sees them."""
    return dict(load_config("smoke", [f"mode={mode}"]).transport)


def _job(mode: str, ranks: int, s: CheckSettings, jitter_ms: float) -> Job:
    t = _transport(mode)
    return Job(mode, ranks, ranks_per_node=min(s.ranks_per_node, ranks), h=s.h,
               staleness=int(t.get("max_staleness", 0)), epochs=s.epochs, disc_batch=s.samples * s.events,
               fuse=bool(t["fuse"]), weights_only=bool(t["weights_only"]), algorithm=str(t["algorithm"]),
               jitter_s=jitter_ms / 1000)  # fmt: skip


def _overrides(job: Job, jitter_ms: float) -> list[str]:
    jitter = [f"train.straggler.jitter_ms={jitter_ms}"] if jitter_ms else []
    return [f"ranks_per_node={job.ranks_per_node}", f"h={job.h}", *jitter]


def calibrate(s: CheckSettings, tmp: Path, network: Network) -> tuple[Machine, float]:
    """One rank's epoch from a 1-rank run logged every epoch; returns the machine and that run's
    other load (cores)."""
    with other_load() as load:
        sagips_run("arar", 1, s.samples, s.events, s.epochs, tmp / "calibration", "train.log_every=1")
    work = compute_from_metrics(tmp / "calibration")
    slots = max(cores() - load(), 0.1)
    # the 1-rank run was slowed by what other users took: keep the compute of a free core
    work = work.scaled(1 / cpu_slowdown(1, 0, 1.0, slots))
    return Machine("local", network, work, s.samples * s.events, None, cores()), load()


def local_check(s: CheckSettings, tmp: Path, network: Network, log: Callable[[str], None]) -> list[dict]:
    """Measured vs predicted analysis rate of every (mode, ranks, jitter) job."""
    machine, calibration_load = calibrate(s, tmp, network)
    log(f"calibration: 1 rank, {machine.compute.compute_s * 1e3:.2f} ms per epoch on a free core "
        f"(other load {calibration_load:.2f} cores)")  # fmt: skip
    results = []
    for jitter_ms in (0.0, s.jitter_ms):
        for mode in s.modes:
            for ranks in RANKS:
                job = _job(mode, ranks, s, jitter_ms)
                name = f"{mode}-{ranks}-{jitter_ms:g}"
                with other_load() as load:
                    summary = sagips_run(mode, ranks, s.samples, s.events, s.epochs, tmp / name,
                                         *_overrides(job, jitter_ms))  # fmt: skip
                slots = max(cores() - load(), 0.1)
                predicted = predict(job, replace(machine, slots=slots)).analysis_rate
                measured = summary["analysis_rate"]
                results.append(dict(mode=mode, ranks=ranks, jitter_ms=jitter_ms, measured_rate=measured,
                                    predicted_rate=predicted, error=abs(predicted - measured) / measured,
                                    other_load_cores=round(load(), 3)))  # fmt: skip
                log(f"{name}: measured {measured:.4g}, predicted {predicted:.4g} events/s "
                    f"(other load {load():.2f} cores)")  # fmt: skip
    return results
