"""``sagips-bench straggler``: what asynchrony buys when every rank's pipeline jitters (section IV-B3).

Every rank sleeps an exponential delay with mean ``--jitter-ms`` every epoch
(``train.straggler.jitter_ms``). A synchronous inner ring (``arar_arar``) then
pays the slowest rank's delay each epoch, E[max of K] = m * H_K for K ranks; the
asynchronous RMA-ARAR inner group (``rma_arar_arar``, its default staleness bound
unless ``--max-staleness``) pays about the mean m, plus the waits its bound forces.
Both run the real app with one inner group of 2 and of 4 ranks (``--ranks``), one
torch thread per rank, alternating, ``--rounds`` times; the best round of each
counts. Reported per run: the job's training time (the slowest rank's, eq. 9's
denominator), each rank's epochs per second, the staleness of the contributions
used, and the final mean |r| of eq. (6) (the mean of the ranks' predictions).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from sagips import checkpoints as ck
from sagips.analysis.predictions import predict_run
from sagips.analysis.runs import load_run
from sagips.bench.common import emit, parse_size, print_table
from sagips.bench.scaling import sagips_run
from sagips.equations import residual

MODES = ("arar_arar", "rma_arar_arar")
DEFAULT = dict(size="16x20", epochs=300, rounds=1, ranks="2,4", jitter_ms=20.0)
QUICK = dict(size="8x10", epochs=30, rounds=1, ranks="2", jitter_ms=5.0)
TARGETS = {2: 0.85, 4: 0.8}  # issue 10: rma_arar_arar job time / arar_arar job time


def rank_rates(run_dir: Path, ranks: int, epochs: int) -> list[float]:
    """Epochs per second of each rank: its epochs over its own accumulated training time."""
    rates = []
    for r in range(ranks):
        last = ck.metrics_path(run_dir, r).read_text().strip().splitlines()[-1].split(",")
        rates.append(epochs / float(last[1]))  # columns: epoch, train_time_s, ...
    return rates


def final_mean_abs_residual(run_dir: Path) -> float:
    """Mean over the six parameters of |eq. (6)| for the run's final generators (ranks averaged)."""
    run = load_run(run_dir, run_dir.name)
    p_hat = predict_run(run, k=200).rank_mean[:, -1].mean(axis=0)  # as runs.csv computes it
    return float(np.abs(residual(run.p_true, p_hat)).mean())


def measure(mode: str, ranks: int, args: argparse.Namespace, run_dir: Path) -> dict:
    samples, events = parse_size(args.size)
    extra = [f"ranks_per_node={ranks}", f"train.straggler.jitter_ms={args.jitter_ms}"]
    if mode == "rma_arar_arar" and args.max_staleness is not None:
        extra.append(f"transport.max_staleness={args.max_staleness}")
    s = sagips_run(mode, ranks, samples, events, args.epochs, run_dir, *extra)
    return dict(
        mode=mode, ranks=ranks, job_time_s=s["total_train_time_s"],
        epoch_rates=rank_rates(run_dir, ranks, args.epochs),
        mean_staleness=s["mean_staleness_epochs"], max_staleness=s["max_staleness_epochs"],
        mean_abs_r=final_mean_abs_residual(run_dir),
    )  # fmt: skip


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ranks", help=f"comma-separated inner-group sizes (default {DEFAULT['ranks']})")
    parser.add_argument("--jitter-ms", type=float,
                        help=f"mean delay per epoch, ms (default {DEFAULT['jitter_ms']})")  # fmt: skip
    parser.add_argument("--size", help=f"SAMPLESxEVENTS per rank (default {DEFAULT['size']})")
    parser.add_argument("--epochs", type=int, help=f"epochs per run (default {DEFAULT['epochs']})")
    parser.add_argument("--rounds", type=int,
                        help=f"runs per mode and rank count (default {DEFAULT['rounds']})")  # fmt: skip
    parser.add_argument("--max-staleness", type=int, help="bound of rma_arar_arar (default: the mode's)")
    parser.add_argument("--quick", action="store_true", help="smoke test: 2 ranks, 30 short epochs")


def run(args: argparse.Namespace) -> None:
    preset = QUICK if args.quick else DEFAULT
    for key, value in preset.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    ranks_list = [int(n) for n in str(args.ranks).split(",")]
    best: dict[tuple[str, int], dict] = {}
    with tempfile.TemporaryDirectory(prefix="sagips-bench-") as tmp:
        for rnd in range(args.rounds):
            for ranks in ranks_list:
                for mode in MODES:
                    got = measure(mode, ranks, args, Path(tmp) / f"{mode}-{ranks}-{rnd}")
                    if (mode, ranks) not in best or got["job_time_s"] < best[mode, ranks]["job_time_s"]:
                        best[mode, ranks] = got
    rows, ratios = [], {}
    for ranks in ranks_list:
        for mode in MODES:
            b = best[mode, ranks]
            rates = ", ".join(f"{r:.1f}" for r in b["epoch_rates"])
            stale = f"{b['mean_staleness']:.2f} / {b['max_staleness']:g}"
            rows.append((mode, ranks, f"{b['job_time_s']:.2f}", rates, stale, f"{b['mean_abs_r']:.3f}"))
        ratios[ranks] = best["rma_arar_arar", ranks]["job_time_s"] / best["arar_arar", ranks]["job_time_s"]
    samples, events = parse_size(args.size)
    print_table(
        f"jitter {args.jitter_ms:g} ms mean per epoch on every rank, {samples} x {events} per rank, "
        f"{args.epochs} epochs, 1 thread per rank, best of {args.rounds}",
        ("mode", "ranks", "job time s", "epochs/s per rank", "staleness mean / max", "mean |r|"), rows,
    )  # fmt: skip
    for ranks, ratio in ratios.items():
        target = f"  (target <= {TARGETS[ranks]})" if ranks in TARGETS else ""
        print(f"{ranks} ranks: rma_arar_arar / arar_arar job time = {ratio:.2f}{target}")
    print()
    emit(dict(
        jitter_ms=args.jitter_ms, samples=samples, events_per_sample=events, epochs=args.epochs,
        rounds=args.rounds, ratio={str(k): v for k, v in ratios.items()},
        runs=[best[m, n] for n in ranks_list for m in MODES],
    ))  # fmt: skip
