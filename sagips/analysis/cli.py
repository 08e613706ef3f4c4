"""``sagips-analyze DIR [DIR...] [--out OUT] [--noise K]``: run folders to the tables and figures."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

from sagips.analysis.pipeline import analyze, default_out, write_outputs
from sagips.analysis.predictions import DEFAULT_NOISE
from sagips.analysis.runs import NoRunsError

log = logging.getLogger("sagips.analysis")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="sagips-analyze",
        description="Turn run folders (or sweep folders holding them) into the paper's "
        "section VI tables and figures.",
    )
    parser.add_argument(
        "inputs",
        nargs="+",
        type=Path,
        metavar="DIR",
        help="run folders, or folders searched recursively for them",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output folder (default: NAME_analysis beside a single input, "
        "else 'analysis' in the inputs' common parent)",
    )
    parser.add_argument(
        "--noise",
        type=_positive_int,
        default=DEFAULT_NOISE,
        metavar="K",
        help=f"noise vectors per generator, fixed seed (default {DEFAULT_NOISE})",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    try:
        analysis = analyze(args.inputs, noise=args.noise)
    except NoRunsError as exc:
        log.error("%s", exc)
        return 2
    out = args.out or default_out(args.inputs)
    for path in write_outputs(analysis, out):
        log.info("wrote %s", path)
    return 0
