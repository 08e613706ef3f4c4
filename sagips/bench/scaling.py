"""``sagips-bench scaling``: the analysis rate (eq. 9) at 1 and 2 ranks and the weak-scaling efficiency.

Runs the real ``sagips`` app in subprocesses (``--mode``, arar_arar by default)
with one torch thread per rank and the same parameter samples on every rank
(weak scaling), and reads ``analysis_rate`` = N_ranks * N_disc * N_epochs /
total training time from each run's summary.json, and the share of that time
spent in the exchange (waiting for the slower rank included). The 1- and 2-rank
runs alternate; each rank count keeps its best round, the one least disturbed
by other load. Efficiency = rate(2) / (2 x rate(1)).
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


def sagips_run(
    mode: str, ranks: int, samples: int, events: int, epochs: int, run_dir: Path, *overrides: str
) -> dict:
    """One ``sagips`` job (one torch thread per rank, more ``overrides`` last); returns its summary.json."""
    cmd = [sys.executable, "-m", "sagips", f"mode={mode}", f"ranks={ranks}", "scale=smoke",
           "sampling=constant", "train.threads=1", f"train.epochs={epochs}", f"train.param_samples={samples}",
           f"train.events_per_sample={events}", f"train.checkpoint_every={epochs}",
           f"train.log_every={epochs}", f"hydra.run.dir={run_dir}", *overrides]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{' '.join(cmd[2:])} failed:\n{done.stderr[-4000:]}")
    return json.loads((run_dir / "summary.json").read_text())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size", help=f"SAMPLESxEVENTS per rank (default {DEFAULT['size']})")
    parser.add_argument("--epochs", type=int, help=f"epochs per run (default {DEFAULT['epochs']})")
    parser.add_argument("--rounds", type=int, help=f"runs per rank count (default {DEFAULT['rounds']})")
    parser.add_argument("--mode", default="arar_arar", help="the sagips mode (default arar_arar)")
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke test: {QUICK['size']}, {QUICK['epochs']} epochs, 1 round")  # fmt: skip


def run(args: argparse.Namespace) -> None:
    preset = QUICK if args.quick else DEFAULT
    samples, events = parse_size(args.size or preset["size"])
    epochs, rounds = args.epochs or preset["epochs"], args.rounds or preset["rounds"]
    runs: dict[int, list[dict]] = {n: [] for n in RANKS}
    with tempfile.TemporaryDirectory(prefix="sagips-bench-") as tmp:
        for rnd in range(rounds):
            for n in RANKS:
                runs[n].append(sagips_run(args.mode, n, samples, events, epochs, Path(tmp) / f"r{n}-{rnd}"))
    best = {n: max(runs[n], key=lambda s: s["analysis_rate"]) for n in RANKS}
    rate = {n: best[n]["analysis_rate"] for n in RANKS}
    efficiency = rate[2] / (2 * rate[1])
    rows = [(n, si(rate[n], "events/s"), f"{best[n]['total_comm_s'] / best[n]['total_train_time_s']:.1%}",
             ", ".join(si(s["analysis_rate"]) for s in runs[n])) for n in RANKS]  # fmt: skip
    print_table(f"{args.mode}, {samples} x {events} per rank, {epochs} epochs, 1 thread per rank",
                ("ranks", "analysis rate (best)", "in exchange", "all rounds"), rows)  # fmt: skip
    print(f"weak-scaling efficiency rate(2) / (2 x rate(1)) = {efficiency:.2f}  (target >= 0.9)\n")
    all_rates = {f"rates_{n}": [s["analysis_rate"] for s in runs[n]] for n in RANKS}
    emit(dict(rate_1=rate[1], rate_2=rate[2], weak_scaling_efficiency=efficiency, mode=args.mode,
              samples=samples, events_per_sample=events, epochs=epochs, rounds=rounds,
              comm_share_2=best[2]["total_comm_s"] / best[2]["total_train_time_s"], **all_rates))  # fmt: skip
