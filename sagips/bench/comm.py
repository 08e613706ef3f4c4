"""``sagips-bench comm --ranks N``: one gradient exchange per transport, next to MPI.Allreduce.

``run`` starts ``mpiexec -n N python -m mpi4py -m sagips.bench.comm`` and rank 0
of that job prints the figures. Every rank holds the generator's exchanged
gradient (weights only, as in the paper, unless ``--all-params``) in float32
host buffers and runs, round-robin, one exchange of each reducer on it: the
ARAR ring (Algorithm 1) and the chunked ring, each fused into one buffer and
per tensor, the RMA-ARAR inner group exact (``max_staleness=0``: it waits for
every peer's contribution of the round) and asynchronous (bound 4: it takes the
newest published one), and the allreduce mode (``MPI.Allreduce`` then divide by
N). An exchange starts after a barrier; its time is the slowest rank's. Ratios
are to the allreduce of the same round.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from time import perf_counter

import numpy as np
from mpi4py import MPI

from sagips.bench.common import emit, print_table, si
from sagips.networks import Generator
from sagips.transport.base import Reducer, exchanged_parameters
from sagips.transport.ring import AllreduceReducer, RingReducer
from sagips.transport.rma import RmaInnerGroup

QUICK_REPEATS = 10
BASELINE = "allreduce"


def gradient_sizes(all_params: bool) -> list[int]:
    """Sizes of the generator tensors the transports exchange (paper: weights only)."""
    return [p.numel() for p in exchanged_parameters(list(Generator().parameters()), not all_params)]


def _variants(comm: MPI.Comm, sizes: list[int]) -> dict[str, tuple[Reducer, list[np.ndarray]]]:
    """Each transport's reducer with the buffers it works on: one flat buffer or a view per tensor."""
    flat = np.random.default_rng(comm.Get_rank()).standard_normal(sum(sizes)).astype(np.float32)
    views = np.split(flat, np.cumsum(sizes)[:-1])
    return {
        BASELINE: (AllreduceReducer(comm), [flat]),
        "arar fused": (RingReducer(comm, "ring"), [flat]),
        "arar per-tensor": (RingReducer(comm, "ring"), views),
        "chunked fused": (RingReducer(comm, "chunked"), [flat]),
        "chunked per-tensor": (RingReducer(comm, "chunked"), views),
        "rma sync": (RmaInnerGroup(comm, flat.size, max_staleness=0), [flat]),
        "rma async": (RmaInnerGroup(comm, flat.size, max_staleness=4), [flat]),
    }


def measure(repeats: int, warmup: int, all_params: bool) -> None:
    """Collective over MPI.COMM_WORLD; rank 0 prints the table and the JSON line."""
    comm = MPI.COMM_WORLD
    sizes = gradient_sizes(all_params)
    variants = _variants(comm, sizes)
    times = np.zeros((len(variants), repeats))
    for rnd in range(warmup + repeats):
        for i, (reducer, bufs) in enumerate(variants.values()):
            comm.Barrier()
            start = perf_counter()
            reducer.reduce(bufs, rnd + 1)
            if rnd >= warmup:
                times[i, rnd - warmup] = perf_counter() - start
    comm.Allreduce(MPI.IN_PLACE, times, op=MPI.MAX)
    for reducer, _ in variants.values():
        reducer.close()
    if comm.Get_rank() == 0:
        report(dict(zip(variants, times)), comm.Get_size(), sum(sizes), len(sizes), repeats)


def report(times: dict[str, np.ndarray], ranks: int, values: int, tensors: int, repeats: int) -> None:
    base = times[BASELINE]
    ratio = {name: float(np.median(t / base)) for name, t in times.items()}
    rows = [(name, f"{np.median(t) * 1e6:.0f}", f"{ratio[name]:.2f}") for name, t in times.items()]
    title = (
        f"gradient exchange, {ranks} ranks, {si(values)} float32 in {tensors} tensors "
        f"({values * 4 / 1e6:.2f} MB), median of {repeats}"
    )
    print_table(title, ("transport", "us/exchange", "x allreduce"), rows)
    print("targets (2 and 4 ranks): arar fused <= 2 x allreduce, chunked <= 1.3 x allreduce\n")
    emit(dict(
        ranks=ranks, allreduce_s=float(np.median(base)), arar_fused_ratio=ratio["arar fused"],
        arar_per_tensor_ratio=ratio["arar per-tensor"], chunked_ratio=ratio["chunked fused"],
        chunked_per_tensor_ratio=ratio["chunked per-tensor"], rma_sync_ratio=ratio["rma sync"],
        rma_async_ratio=ratio["rma async"], values=values, tensors=tensors,
        exchange_s={name: float(np.median(t)) for name, t in times.items()},
        # the least disturbed by other load: what sagips-bench model calibrates from
        exchange_min_s={name: float(np.min(t)) for name, t in times.items()},
    ))  # fmt: skip


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--repeats", type=int, default=200, help="timed exchanges per transport (default 200)"
    )
    parser.add_argument("--warmup", type=int, default=20, help="untimed exchanges first (default 20)")
    parser.add_argument("--all-params", action="store_true", help="exchange bias gradients too")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ranks", type=int, default=2, help="MPI ranks (default 2)")
    parser.add_argument("--mpiexec", default="mpiexec", help="the MPI launcher (default: mpiexec on PATH)")
    parser.add_argument("--quick", action="store_true", help=f"smoke test: {QUICK_REPEATS} exchanges")
    _options(parser)


def find_mpiexec(name: str) -> str | None:
    """The launcher's path; None after printing the one-line error."""
    path = shutil.which(name)
    if path is None:
        print(f"sagips-bench: error: {name!r} not found on PATH "
              "(pip install 'sagips[mpi]' or load your site MPI)", file=sys.stderr)  # fmt: skip
    return path


def job_command(mpiexec: str, ranks: int, repeats: int, warmup: int, all_params: bool = False) -> list[str]:
    """The MPI job whose rank 0 prints the table and, last, the JSON figures."""
    job = ["-m", "mpi4py", "-m", "sagips.bench.comm", "--repeats", str(repeats), "--warmup", str(warmup)]
    extra = ["--all-params"] if all_params else []
    return [mpiexec, "-n", str(ranks), sys.executable, *job, *extra]


def run(args: argparse.Namespace) -> int:
    """Start the MPI job; its rank 0 prints the figures."""
    mpiexec = find_mpiexec(args.mpiexec)
    if mpiexec is None:
        return 2
    repeats, warmup = (QUICK_REPEATS, 2) if args.quick else (args.repeats, args.warmup)
    return subprocess.run(job_command(mpiexec, args.ranks, repeats, warmup, args.all_params)).returncode


if __name__ == "__main__":
    job = argparse.ArgumentParser(prog="sagips.bench.comm")
    _options(job)
    opts = job.parse_args()
    measure(opts.repeats, opts.warmup, opts.all_params)
