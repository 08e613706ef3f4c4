"""``sagips-bench COMMAND``: performance figures a user can quote (the commands are listed in COMMANDS)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from sagips.bench import comm, epoch, model, sampler, scaling, straggler, sweep
from sagips.config import check_device

COMMANDS = {
    "epoch": (epoch, "one rank's epoch: engine vs unfused reference vs GEMM floor"),
    "sampler": (sampler, "proxy-app events per second, forward and forward+backward"),
    "comm": (comm, "one gradient exchange per transport, as a ratio to MPI.Allreduce (runs mpiexec)"),
    "scaling": (scaling, "analysis rate (eq. 9) at 1 and 2 ranks, weak-scaling efficiency"),
    "straggler": (straggler, "job time with per-epoch jitter: synchronous vs asynchronous inner group"),
    "sweep": (sweep, "a local sweep's wall time, jobs side by side vs one after another"),
    "model": (model, "predicted training time and analysis rate to any rank count, checked here"),
}


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="sagips-bench",
        description="Throughput figures of this machine; each command ends with one JSON line.",
    )
    subs = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, summary) in COMMANDS.items():
        headline = module.__doc__.splitlines()[0].replace("``", "")
        sub = subs.add_parser(name, help=summary, description=headline)
        module.add_arguments(sub)
    return top


def main(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)
    if reason := check_device(getattr(args, "device", "auto")):
        print(f"sagips-bench: error: --device {args.device}: {reason}", file=sys.stderr)
        sys.exit(2)
    module = COMMANDS[args.command][0]
    sys.exit(module.run(args) or 0)
