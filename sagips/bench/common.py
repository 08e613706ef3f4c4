"""Timing and reporting shared by the sub-commands."""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from time import perf_counter, process_time
from typing import Any

import torch

from sagips.trainer import pick_device

CLOCKS = {"wall": perf_counter, "process": process_time}


def add_size_options(parser: argparse.ArgumentParser, sizes: str, quick: str, repeats: int) -> None:
    """``--sizes --repeats --threads --device --clock --quick`` of a one-process command."""
    parser.add_argument(
        "--sizes",
        default=sizes,
        help=f"comma-separated SAMPLESxEVENTS, the first is the headline (default {sizes})",
    )
    parser.add_argument(
        "--repeats", type=int, default=repeats, help=f"timed rounds per size (default {repeats})"
    )
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: all cores)")
    parser.add_argument(
        "--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto: the GPU if any"
    )
    parser.add_argument(
        "--clock", choices=tuple(CLOCKS), default="wall",
        help="wall (default) or process: CPU seconds of this process, which other load on a shared "
        "machine barely disturbs; use it with --threads 1 (more threads add their spin-waits)",
    )  # fmt: skip
    parser.add_argument("--quick", action="store_true", help=f"smoke test: --sizes {quick} --repeats 2")
    parser.set_defaults(quick_sizes=quick)


@dataclass(frozen=True)
class Setup:
    """What the size options resolve to."""

    device: torch.device
    sizes: list[tuple[int, int]]  # (parameter samples, events per sample)
    repeats: int
    clock: Callable[[], float]

    def describe(self) -> str:
        """E.g. 'cpu, 2 threads, wall clock' or the GPU's name."""
        if self.device.type == "cuda":
            return device_name(self.device)
        clock = "wall clock" if self.clock is perf_counter else "process CPU time"
        threads = torch.get_num_threads()
        return f"cpu, {threads} thread{'s' if threads > 1 else ''}, {clock}"


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's model name where the system tells it."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    models = [line.partition(":")[2].strip() for line in lines if line.startswith("model name")]
    return models[0] if models else (platform.processor() or "cpu")


def apply_size_options(args: argparse.Namespace) -> Setup:
    """Set the thread count and resolve the size options."""
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes, repeats = (args.quick_sizes, 2) if args.quick else (args.sizes, args.repeats)
    device = pick_device(args.device, 0)
    return Setup(device, [parse_size(s) for s in sizes.split(",")], repeats, CLOCKS[args.clock])


def parse_size(text: str) -> tuple[int, int]:
    """``'1024x100'`` -> (parameter samples, events per sample)."""
    samples, _, events = text.lower().partition("x")
    return int(samples), int(events)


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so a wall-clock interval covers what it launched."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved(
    fns: Mapping[str, Callable[[], object]], setup: Setup, warmup: int = 1
) -> dict[str, list[float]]:
    """Seconds per call of each function, timed round-robin so that load changes hit all alike."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for rnd in range(warmup + setup.repeats):
        for name, fn in fns.items():
            synchronize(setup.device)
            start = setup.clock()
            fn()
            synchronize(setup.device)
            if rnd >= warmup:
                times[name].append(setup.clock() - start)
    return times


def median_ratio(num: Sequence[float], den: Sequence[float]) -> float:
    """Median over rounds of num / den, each ratio taken within one round."""
    return statistics.median(a / b for a, b in zip(num, den))


def si(value: float, unit: str = "") -> str:
    """3 significant digits with an SI prefix: ``si(2.5e6, 'events/s')`` -> '2.50 M events/s'."""
    for factor, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.3g} {prefix}{unit}".rstrip()
    return f"{value:.3g} {unit}".rstrip()


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A plain-text table; the first column left-aligned, the others right-aligned."""
    cells = [[str(c) for c in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]

    def line(row: Sequence[str]) -> str:
        parts = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:])]
        return "  ".join(parts)

    print(title)
    print(line(cells[0]))
    print("  ".join("-" * w for w in widths))
    for row in cells[1:]:
        print(line(row))
    print()


def emit(figures: Mapping[str, Any]) -> None:
    """The key figures as one JSON object: always the last line a sub-command prints."""
    clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in figures.items()}
    print(json.dumps(clean), flush=True)
