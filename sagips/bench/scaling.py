"""``sagips-bench scaling``: the analysis rate (eq. 9) at 1 and 2 ranks and the weak-scaling efficiency.

Runs the real ``sagips`` app in subprocesses, ``mode=arar_arar`` with one torch
thread per rank and the same parameter samples on every rank (weak scaling),
and reads ``analysis_rate`` = N_ranks * N_disc * N_epochs / total training time
from each run's summary.json. The 1- and 2-rank runs alternate; each rank
count keeps its best round, the one least disturbed by other load.
Efficiency = rate(2) / (2 x rate(1)).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from sagips.bench.common import emit, parse_size, print_table, si

DEFAULT = dict(size="64x50", epochs=150, rounds=2)
QUICK = dict(size="16x20", epochs=10, rounds=1)
RANKS = (1, 2)


def sagips_run(ranks: int, samples: int, events: int, epochs: int, run_dir: Path) -> dict:
    """One ``sagips`` job; returns its summary.json."""
    cmd = [
        sys.executable,
        "-m",
        "sagips",
        "mode=arar_arar",
        f"ranks={ranks}",
        "scale=smoke",
        "sampling=constant",
        "train.threads=1",
        f"train.epochs={epochs}",
        f"train.param_samples={samples}",
        f"train.events_per_sample={events}",
        f"train.checkpoint_every={epochs}",
        f"train.log_every={epochs}",
        f"hydra.run.dir={run_dir}",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{' '.join(cmd[2:])} failed:\n{done.stderr[-4000:]}")
    return json.loads((run_dir / "summary.json").read_text())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size", default=None, help=f"SAMPLESxEVENTS per rank (default {DEFAULT['size']})")
    parser.add_argument(
        "--epochs", type=int, default=None, help=f"epochs per run (default {DEFAULT['epochs']})"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=None,
        help=f"runs per rank count, alternating (default {DEFAULT['rounds']})",
    )
    parser.add_argument(
        "--quick", action="store_true", help=f"smoke test: {QUICK['size']}, {QUICK['epochs']} epochs, 1 round"
    )


def run(args: argparse.Namespace) -> None:
    preset = QUICK if args.quick else DEFAULT
    samples, events = parse_size(args.size or preset["size"])
    epochs, rounds = args.epochs or preset["epochs"], args.rounds or preset["rounds"]
    rates: dict[int, list[float]] = {n: [] for n in RANKS}
    with tempfile.TemporaryDirectory(prefix="sagips-bench-") as tmp:
        for rnd in range(rounds):
            for n in RANKS:
                summary = sagips_run(n, samples, events, epochs, Path(tmp) / f"r{n}-{rnd}")
                rates[n].append(summary["analysis_rate"])
    best = {n: max(r) for n, r in rates.items()}
    efficiency = best[2] / (2 * best[1])
    rows = [(n, si(best[n], "events/s"), ", ".join(si(r) for r in rates[n])) for n in RANKS]
    print_table(
        f"arar_arar, {samples} x {events} per rank, {epochs} epochs, 1 thread per rank",
        ("ranks", "analysis rate (best)", "all rounds"),
        rows,
    )
    print(f"weak-scaling efficiency rate(2) / (2 x rate(1)) = {efficiency:.2f}  (target >= 0.9)\n")
    emit(
        dict(
            rate_1=best[1],
            rate_2=best[2],
            weak_scaling_efficiency=efficiency,
            samples=samples,
            events_per_sample=events,
            epochs=epochs,
            rounds=rounds,
            rates_1=rates[1],
            rates_2=rates[2],
        )
    )
