"""``sagips-bench sweep``: wall time of a local sweep with jobs side by side vs one after another.

Runs the real ``sagips -m`` twice per round in subprocesses, the same sweep of
``--jobs`` 1-rank smoke jobs (``seed=0..jobs-1``), once with
``cluster.parallel_jobs=auto`` (max(1, cores // ranks) at once) and once with
``cluster.parallel_jobs=1``, alternating, each into a fresh folder. Each setting
keeps its best round, the one least disturbed by other load. The ratio
parallel / sequential is the figure; the target is <= 0.8 for four jobs.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sagips.bench.common import emit, print_table
from sagips.launch.sweep import machine_cores

SETTINGS = ("auto", "1")
TARGET = 0.8


def sweep_seconds(jobs: int, parallel_jobs: str, epochs: int, sweep_dir: Path) -> float:
    """Wall time of one ``sagips -m`` sweep of 1-rank smoke jobs."""
    cmd = [sys.executable, "-m", "sagips", "-m", "scale=smoke", "ranks=1", f"seed=range({jobs})",
           f"train.epochs={epochs}", f"cluster.parallel_jobs={parallel_jobs}",
           f"hydra.sweep.dir={sweep_dir}"]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode:
        raise RuntimeError(f"{' '.join(cmd[2:])} failed:\n{done.stderr[-4000:]}")
    return seconds


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--jobs", type=int, default=4, help="1-rank smoke jobs in the sweep (default 4)")
    parser.add_argument("--epochs", type=int, default=20, help="epochs per job (default 20, scale=smoke)")
    parser.add_argument("--rounds", type=int, default=2, help="runs per setting, alternating (default 2)")


def run(args: argparse.Namespace) -> None:
    times: dict[str, list[float]] = {s: [] for s in SETTINGS}
    with tempfile.TemporaryDirectory(prefix="sagips-bench-sweep-") as tmp:
        for rnd in range(args.rounds):
            for setting in SETTINGS:
                folder = Path(tmp) / f"p{setting}-{rnd}"
                times[setting].append(sweep_seconds(args.jobs, setting, args.epochs, folder))
    best = {s: min(times[s]) for s in SETTINGS}
    ratio = best["auto"] / best["1"]
    cores = machine_cores()
    rows = [(f"cluster.parallel_jobs={s}", f"{best[s]:.1f} s", ", ".join(f"{t:.1f}" for t in times[s]))
            for s in SETTINGS]  # fmt: skip
    print_table(f"a sweep of {args.jobs} 1-rank smoke jobs ({args.epochs} epochs each) on {cores} cores",
                ("setting", "wall time (best)", "all rounds, s"), rows)  # fmt: skip
    print(f"parallel / sequential = {ratio:.2f}  (target <= {TARGET} for 4 jobs)\n")
    emit(dict(parallel_s=best["auto"], sequential_s=best["1"], ratio=ratio, jobs=args.jobs,
              epochs=args.epochs, rounds=args.rounds, cores=cores,
              parallel_all_s=times["auto"], sequential_all_s=times["1"]))  # fmt: skip
