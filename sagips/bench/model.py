"""``sagips-bench model``: predicted training time and analysis rate (eq. 9) to any rank count.

Calibrates the model of docs/scaling-model.md on this machine (``sagips-bench
comm`` for the Python/mpi4py costs and the shared-memory link, the averaging's
memory bandwidth, and, for the ``local`` profile, one rank's epoch), takes the
target machine from a profile (``polaris`` by default: the paper's Figs. 11 and
12), prints the predicted training time and analysis rate per mode and rank
count, draws the predicted Figs. 11 and 12, checks the model against real runs
here (``model_check``) and ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from time import perf_counter

import numpy as np
import torch

from sagips.bench import comm
from sagips.bench.common import emit, parse_size, print_table, si
from sagips.bench.epoch import engine_epoch
from sagips.bench.model_check import CheckSettings, local_check
from sagips.bench.workload import Workload, load_config
from sagips.config import MODES, ConfigError
from sagips.scaling_model import Job, Machine, Prediction, predict
from sagips.scaling_model import profiles as prof
from sagips.scaling_model.calibrate import compute_from_metrics, fit_network
from sagips.scaling_model.rings import Network
from sagips.scaling_model.waiting import EpochWork
from sagips.transport.ring import mean_of_rows

DEFAULT_RANKS = "4,8,16,28,40,100,200,400"
DEFAULT_MODES = "arar,arar_arar,rma_arar_arar"
GAIN = (4, 400)
CHECK = dict(size="32x50", epochs=300, jitter_ms=10.0)
QUICK_CHECK = dict(size="16x20", epochs=150, jitter_ms=10.0)
LABELS = {
    "arar": "conventional ARAR",
    "arar_arar": "ARAR-ARAR (grouped)",
    "rma_arar_arar": "RMA-ARAR-ARAR (grouped)",
    "allreduce": "MPI.Allreduce",
    "ensemble": "ensemble",
}
PAPER_GAINS = "paper, Polaris (section VI-C1): about 40 for conventional ARAR, about 80 grouped"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ranks", default=DEFAULT_RANKS, help=f"rank counts (default {DEFAULT_RANKS})")
    parser.add_argument(
        "--ranks-per-node",
        type=int,
        help="inner group size (default: the profile's ranks per node, 4 for polaris)",
    )
    parser.add_argument("--h", type=int, default=1000, help="outer ring every h epochs (default 1000)")
    parser.add_argument(
        "--profile",
        default="polaris",
        help=f"target machine: {', '.join(prof.names())} or a YAML file (default polaris)",
    )
    parser.add_argument(
        "--jitter-ms",
        type=float,
        default=0.0,
        help="train.straggler.jitter_ms: mean exponential delay per rank and epoch (default 0)",
    )
    parser.add_argument("--modes", default=DEFAULT_MODES, help=f"comma-separated (default {DEFAULT_MODES})")
    parser.add_argument(
        "--staleness", type=int, help="transport.max_staleness of rma_arar_arar (default: the config's)"
    )
    parser.add_argument("--size", default="1024x100", help="SAMPLESxEVENTS per rank (default: Tab. III)")
    parser.add_argument("--epochs", type=int, default=100_000, help="epochs (default 100000, Tab. III)")
    parser.add_argument(
        "--fuse",
        action="store_true",
        help="one message per ring step (default: one per tensor, as the paper's runs)",
    )
    parser.add_argument("--algorithm", choices=("ring", "chunked"), default="ring", help="default ring")
    parser.add_argument(
        "--comm",
        metavar="FILE",
        help="calibrate from a saved sagips-bench comm output (its JSON last line) instead of running it, "
        "e.g. one made on a quiet node of the target machine",
    )
    parser.add_argument(
        "--compute",
        metavar="RUN_DIR",
        help="calibrate one rank's epoch from a 1-rank run's metrics instead of the profile",
    )
    parser.add_argument("--out", default="scaling-model.png", help="predicted Figs. 11 and 12 (PNG)")
    parser.add_argument("--skip-local-check", action="store_true", help="no runs here (e.g. on a cluster)")
    parser.add_argument("--mpiexec", default="mpiexec", help="the MPI launcher (default: mpiexec on PATH)")
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke test: fewer exchanges timed, local check at {QUICK_CHECK['size']}, "
                        f"{QUICK_CHECK['epochs']} epochs")  # fmt: skip


# --- calibration here --------------------------------------------------------------------------
def reduce_bandwidth(values: int, rows: int = 256, repeats: int = 20) -> float:
    """Bytes per second the transports' averaging (``mean_of_rows``) reads on this machine.

    256 rows of the paper's gradient (52 MB) spill every cache, as the rings over hundreds of ranks do.
    """
    parts = [np.random.default_rng(i).standard_normal(values).astype(np.float32) for i in range(rows)]
    out = np.empty(values, dtype=np.float32)
    times = []
    for _ in range(repeats):
        start = perf_counter()
        mean_of_rows(parts, out)
        times.append(perf_counter() - start)
    return rows * values * 4 / min(times)  # the least disturbed by other load


def calibrate_network(mpiexec: str, quick: bool, saved: Path | None = None) -> tuple[Network, dict]:
    """The intra-node network from ``sagips-bench comm`` at 2 ranks (its JSON line), run now or saved."""
    if saved is not None:
        output = saved.read_text()
    else:
        repeats, warmup = (30, 5) if quick else (200, 20)
        done = subprocess.run(comm.job_command(mpiexec, 2, repeats, warmup), capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"sagips-bench comm failed:\n{done.stderr[-3000:]}")
        output = done.stdout
    figures = json.loads(output.strip().splitlines()[-1])
    return fit_network(figures, reduce_bandwidth(figures["values"])), figures


def calibrate_compute(samples: int, events: int, repeats: int) -> EpochWork:
    """One rank's epoch here, one torch thread (as every local rank), by ``sagips-bench epoch``'s engine."""
    torch.set_num_threads(1)
    w = Workload.build(load_config("smoke"), samples, events, torch.device("cpu"))
    engine_epoch(w)  # warm-up
    times = []
    for _ in range(repeats):
        start = perf_counter()
        engine_epoch(w)
        times.append(perf_counter() - start)
    mean = float(np.mean(times))
    return EpochWork(mean, spread=np.array(times) / mean)


# --- predictions ---------------------------------------------------------------------------------
def _int_list(text: str, option: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(option, text, "must be comma-separated integers") from None
    if not values or min(values) < 1:
        raise ConfigError(option, text, "must be positive integers")
    return values


def jobs(args: argparse.Namespace, modes: list[str], ranks: list[int], rpn: int) -> dict[str, list[Job]]:
    """One Job per mode and rank count (the gain's end points included)."""
    samples, events = parse_size(args.size)
    staleness = args.staleness
    if staleness is None:
        staleness = int(load_config("paper", ["mode=rma_arar_arar"]).transport.get("max_staleness", 0))
    out = {}
    for mode in modes:
        out[mode] = [Job(mode, n, ranks_per_node=min(rpn, n), h=args.h, staleness=staleness,
                         epochs=args.epochs, disc_batch=samples * events, fuse=args.fuse,
                         algorithm=args.algorithm, jitter_s=args.jitter_ms / 1000)
                     for n in ranks]  # fmt: skip
        for job in out[mode]:
            if job.ranks % job.group_size:
                raise ConfigError("--ranks-per-node", rpn, f"must divide every rank count (not {job.ranks})")
    return out


def _rows(predictions: dict[str, list[Prediction]], node_ranks: int | None) -> list[tuple]:
    rows = []
    for mode, preds in predictions.items():
        for p in preds:
            nodes = 1 if node_ranks is None else -(-p.job.ranks // node_ranks)
            rows.append((mode, p.job.ranks, nodes, f"{p.epoch_s * 1e3:.2f}", f"{p.compute_s * 1e3:.2f}",
                         f"{p.wait_s * 1e3:.2f}", f"{p.exchange_s * 1e3:.2f}", f"{p.train_time_s / 3600:.2f}",
                         si(p.analysis_rate)))  # fmt: skip
    return rows


def draw(predictions: dict[str, list[Prediction]], single: Prediction, machine: Machine, path: Path) -> None:
    """Predicted Fig. 11 (training time) and Fig. 12 (analysis rate, dashed: one rank) vs ranks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax11, ax12) = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    for mode, preds in predictions.items():
        ranks = [p.job.ranks for p in preds]
        ax11.plot(ranks, [p.train_time_s / 3600 for p in preds], "o-", label=LABELS[mode])
        ax12.plot(ranks, [p.analysis_rate for p in preds], "o-", label=LABELS[mode])
    ax12.axhline(single.analysis_rate, ls="--", color="k", lw=1, label="one rank")
    for ax, ylabel in ((ax11, "total training time [h]"), (ax12, "analysis rate [events/s], eq. (9)")):
        ax.set(xscale="log", yscale="log", xlabel="ranks", ylabel=ylabel)
        ax.grid(True, which="both", alpha=0.3)
        if machine.node_ranks:
            per = machine.node_ranks
            top = ax.secondary_xaxis("top", functions=(lambda r, n=per: r / n, lambda k, n=per: k * n))
            top.set_xlabel("nodes", color="tab:red")
    ax11.set_title(f"Fig. 11, predicted ({machine.name})")
    ax12.set_title(f"Fig. 12, predicted ({machine.name})")
    ax12.legend(fontsize=8)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(args: argparse.Namespace) -> int:
    try:
        profile = prof.load(args.profile)
        ranks = _int_list(args.ranks, "--ranks")
        modes = [m.strip() for m in args.modes.split(",") if m.strip()]
        bad = [m for m in modes if m not in MODES]
        if bad or not modes:
            raise ConfigError("--modes", args.modes, f"must be among {', '.join(MODES)}")
        _check_numbers(args)
        rpn = args.ranks_per_node or profile.node_ranks or 4
        samples, events = _size(args.size)
        plan = jobs(args, modes, sorted(set(ranks) | set(GAIN)), rpn)
        saved = _saved_comm(args.comm)
        compute, ref_events = _run_compute(args.compute) if args.compute else (None, 0)
    except (ConfigError, ValueError) as exc:
        print(f"sagips-bench: error: {exc}", file=sys.stderr)
        return 2
    mpiexec = args.mpiexec
    if saved is None or not args.skip_local_check:
        mpiexec = comm.find_mpiexec(args.mpiexec)
        if mpiexec is None:
            return 2
    network, comm_figures = calibrate_network(mpiexec, args.quick, saved)
    if compute is None and profile.calibrates_compute:
        compute, ref_events = calibrate_compute(samples, events, 3 if args.quick else 10), samples * events
    machine = prof.machine(profile, network, compute, ref_events)
    predictions = {mode: [predict(job, machine) for job in js] for mode, js in plan.items()}
    single = predict(Job(modes[0], 1, epochs=args.epochs, disc_batch=samples * events,
                         jitter_s=args.jitter_ms / 1000), machine)  # fmt: skip
    shown = {mode: [p for p in preds if p.job.ranks in ranks] for mode, preds in predictions.items()}
    _report(args, machine, network, shown, single)
    gains = {mode: _gain(preds) for mode, preds in predictions.items()}
    print("analysis-rate gain from 4 to 400 ranks: "
          + ", ".join(f"{mode} {g:.1f}" for mode, g in gains.items()) + f"\n  ({PAPER_GAINS})\n")  # fmt: skip
    draw(shown, single, machine, Path(args.out))
    print(f"predicted Figs. 11 and 12: {args.out}\n")
    check: list[dict] = []
    if not args.skip_local_check:
        preset = QUICK_CHECK if args.quick else CHECK
        s, e = parse_size(preset["size"])
        settings = CheckSettings(s, e, preset["epochs"], preset["jitter_ms"], tuple(modes))
        with tempfile.TemporaryDirectory(prefix="sagips-model-") as tmp:
            check = local_check(settings, Path(tmp), network, lambda line: print(line, flush=True))
        _report_check(check)
    emit(dict(
        profile=machine.name, size=args.size, epochs=args.epochs, h=args.h, ranks_per_node=rpn,
        jitter_ms=args.jitter_ms, fuse=args.fuse, algorithm=args.algorithm,
        staleness=plan[modes[0]][0].staleness,
        modes={mode: dict(ranks=[p.job.ranks for p in preds], train_time_s=[p.train_time_s for p in preds],
                          analysis_rate=[p.analysis_rate for p in preds]) for mode, preds in shown.items()},
        single_rank_rate=single.analysis_rate, gain_4_to_400=gains,
        network=dict(step_s=network.step_s, message_s=network.message_s, call_s=network.call_s,
                     reduce_Bps=network.reduce_Bps,
                     intra_Bps=_finite(network.intra.bandwidth_Bps),
                     inter_latency_s=machine.network.inter.latency_s,
                     inter_Bps=machine.network.inter.bandwidth_Bps),
        compute_s=machine.compute.compute_s, compute_events=machine.ref_events,
        comm_exchange_s=comm_figures["exchange_s"], local_check=check,
        max_local_error=max((c["error"] for c in check), default=None),
    ))  # fmt: skip
    return 0


def _check_numbers(args: argparse.Namespace) -> None:
    for option, value, low in (
        ("--h", args.h, 1),
        ("--epochs", args.epochs, 1),
        ("--jitter-ms", args.jitter_ms, 0),
        ("--ranks-per-node", args.ranks_per_node, 1),
        ("--staleness", args.staleness, 0),
    ):
        if value is not None and value < low:
            raise ConfigError(option, value, f"must be >= {low}")  # fmt: skip


def _size(text: str) -> tuple[int, int]:
    try:
        samples, events = parse_size(text)
    except ValueError:
        samples = events = 0
    if samples < 1 or events < 1:
        raise ConfigError("--size", text, "must be SAMPLESxEVENTS, e.g. 1024x100")
    return samples, events


def _saved_comm(path: str | None) -> Path | None:
    """The saved ``sagips-bench comm`` output, checked: its last line must be comm's JSON figures."""
    if path is None:
        return None
    try:
        figures = json.loads(Path(path).read_text().strip().splitlines()[-1])
    except (OSError, ValueError, IndexError):
        raise ConfigError("--comm", path, "not a saved sagips-bench comm output (JSON last line)") from None
    if not isinstance(figures, dict) or "exchange_min_s" not in figures:
        raise ConfigError("--comm", path, "has no exchange_min_s: save it with this sagips version")
    return Path(path)


def _run_compute(run_dir: str) -> tuple[EpochWork, int]:
    """One rank's epoch from a finished run's metrics, and its events per rank (summary.json)."""
    try:
        summary = json.loads((Path(run_dir) / "summary.json").read_text())
        return compute_from_metrics(Path(run_dir)), int(summary["disc_batch"])
    except (OSError, ValueError, KeyError):
        raise ConfigError("--compute", run_dir, "not a finished run (summary.json, metrics/)") from None


def _finite(value: float) -> float | None:
    """JSON has no infinity: a link too fast to time at 2 ranks is null."""
    return float(value) if np.isfinite(value) else None


def _gain(preds: list[Prediction]) -> float:
    rate = {p.job.ranks: p.analysis_rate for p in preds}
    return rate[GAIN[1]] / rate[GAIN[0]]


def _report(args: argparse.Namespace, machine: Machine, network: Network,
            shown: dict[str, list[Prediction]], single: Prediction) -> None:  # fmt: skip
    net, source = machine.network, f"saved in {args.comm}" if args.comm else "run here"
    print(
        f"calibration (sagips-bench comm, 2 ranks, {source}): {network.step_s * 1e6:.1f} us per ring step, "
        f"{network.message_s * 1e6:.1f} us per message, shared memory "
        f"{network.intra.bandwidth_Bps / 1e9:.2f} GB/s, averaging {network.reduce_Bps / 1e9:.2f} GB/s, "
        f"{network.call_s * 1e6:.1f} us per Allreduce"
    )
    print(
        f"{machine.name}: {machine.compute.compute_s * 1e3:.2f} ms per epoch at {machine.ref_events} "
        f"events, {machine.node_ranks or 'all'} ranks per node, {machine.slots:g} compute slots per node, "
        f"inter-node {net.inter.latency_s * 1e6:.2f} us, {net.inter.bandwidth_Bps / 1e9:.1f} GB/s\n"
    )
    title = (
        f"predicted on {machine.name}: {args.size} per rank, {args.epochs} epochs, h={args.h}, "
        f"jitter {args.jitter_ms:g} ms, {'fused' if args.fuse else 'one message per tensor'}; "
        f"one rank: {si(single.analysis_rate, 'events/s')}"
    )
    print_table(title, ("mode", "ranks", "nodes", "epoch ms", "compute ms", "wait ms", "exchange ms",
                        "train h", "events/s"), _rows(shown, machine.node_ranks))  # fmt: skip


def _report_check(check: list[dict]) -> None:
    rows = [(c["mode"], c["ranks"], f"{c['jitter_ms']:g}", si(c["measured_rate"]), si(c["predicted_rate"]),
             f"{c['error']:.1%}", f"{c['other_load_cores']:.2f}") for c in check]  # fmt: skip
    header = ("mode", "ranks", "jitter ms", "measured", "predicted", "error", "other load")
    print_table("local check: measured vs predicted analysis rate (eq. 9)", header, rows)
    print(f"max_local_error = {max(c['error'] for c in check):.3f}  (target <= 0.25)\n")
