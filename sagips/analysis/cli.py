"""``sagips-analyze DIR [DIR...]``: run folders to the tables and figures, or tables to the figures.

Errors are one line ``sagips-analyze: error: ...`` with exit 2 for bad input
(arguments, folders without runs, an output folder that cannot be written) and
exit 1 for a write that fails midway.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import NoReturn

import pandas as pd

from sagips.analysis.names import plural
from sagips.analysis.outputs import read_tables, table_dirs, write_outputs, write_report
from sagips.analysis.pipeline import Analysis, analyze, by_study, default_out
from sagips.analysis.predictions import DEFAULT_NOISE
from sagips.analysis.runs import NoRunsError
from sagips.config import ConfigError
from sagips.proxy import N_PARAMS
from sagips.scaling_model import profiles
from sagips.scaling_model.overlay import NEEDED

PROG = "sagips-analyze"
log = logging.getLogger("sagips.analysis")


class _Parser(argparse.ArgumentParser):
    """argparse with its errors on one line, without the usage block."""

    def error(self, message: str) -> NoReturn:
        _fail(f"{message.removeprefix('argument ')} (see {PROG} --help)", 2)


def _fail(message: str, code: int) -> NoReturn:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    sys.exit(code)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return value


def _param_index(text: str) -> int:
    if text not in {str(i) for i in range(N_PARAMS)}:
        raise argparse.ArgumentTypeError(f"{text!r} is not a parameter index 0..{N_PARAMS - 1}")
    return int(text)


def _profile(text: str) -> str:
    try:
        profiles.load(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--profile=")) from None
    return text


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = _Parser(
        prog=PROG,
        description="Turn run folders (or sweep folders holding them) into the paper's section VI "
        "tables and figures; with --from-tables, redraw the figures from tables written earlier.",
    )
    add = parser.add_argument
    add("inputs", nargs="+", type=Path, metavar="DIR",
        help="run folders, or folders searched recursively for them "
        "(with --from-tables: folders holding residuals.csv, searched the same way)")  # fmt: skip
    add("--out", type=Path, default=None,
        help="output folder (default: NAME_analysis beside a single input, else 'analysis' "
        "in the inputs' common parent; with --from-tables: each tables folder itself)")  # fmt: skip
    add("--noise", type=_positive_int, default=DEFAULT_NOISE, metavar="K",
        help=f"noise vectors per generator, fixed seed (default {DEFAULT_NOISE})")  # fmt: skip
    add("--param", type=_param_index, default=0, metavar="I",
        help=f"parameter 0..{N_PARAMS - 1} whose residual Figs. 8, 10 and 13/14 show "
        "(default 0, as in the paper)")  # fmt: skip
    add("--per-study", action="store_true",
        help="one output folder per study, OUT/STUDY/, and all runs in OUT/runs.csv")  # fmt: skip
    add("--model", type=_profile, metavar="PROFILE",
        help="draw the scaling model's prediction beside Figs. 11/12: a profile (local, polaris) "
        "or a YAML file (docs/scaling-model.md)")  # fmt: skip
    add("--from-tables", action="store_true",
        help="read the CSVs of an earlier sagips-analyze instead of run folders "
        "and redraw table4 and the figures (no checkpoints needed)")  # fmt: skip
    return parser.parse_args(argv)


def unwritable(out: Path) -> str | None:
    """Why the outputs cannot go into ``out`` (tried in its nearest existing folder), or None."""
    probe = out.resolve()
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        return f"{probe} is not a folder"
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    return None


def _check_writable(outs: Sequence[Path]) -> None:
    for out in outs:
        if reason := unwritable(out):
            _fail(f"cannot write the outputs to {out} ({reason}); choose a writable folder with --out DIR", 2)


def _redraw(args: argparse.Namespace) -> list[Path]:
    dirs = table_dirs(args.inputs)
    if not dirs:
        where = ", ".join(map(str, args.inputs))
        raise NoRunsError(f"no tables of sagips-analyze (residuals.csv) under {where}")
    if args.out is None:
        outs = dirs
    elif len(dirs) == 1:
        outs = [args.out]
    else:
        top = Path(os.path.commonpath(dirs))
        outs = [args.out / d.relative_to(top) for d in dirs]
    _check_writable(outs)
    written = []
    for folder, out in zip(dirs, outs):
        log.info("redrawing from the tables in %s", folder)
        written += write_report(_with_model(read_tables(folder), args.model), out, args.param)
    return written


def _with_model(analysis: Analysis, model: str | None) -> Analysis:
    """The analysis with the scaling-model profile its Figs. 11/12 draw (tables of an older
    sagips-analyze lack the settings the model needs)."""
    if model and (missing := [c for c in NEEDED if c not in analysis.scaling]):
        raise NoRunsError(f"--model needs {', '.join(missing)} in scaling.csv: run sagips-analyze on the "
                          "run folders again")  # fmt: skip
    return replace(analysis, model=model)


def _analyze(args: argparse.Namespace) -> list[Path]:
    out = args.out or default_out(args.inputs)
    _check_writable([out])
    if not args.per_study:
        return write_outputs(_with_model(analyze(args.inputs, noise=args.noise), args.model), out, args.param)
    studies = by_study(args.inputs, noise=args.noise)
    log.info("%s: %s", plural(len(studies), "study", "studies"), ", ".join(studies))
    written = []
    for study, analysis in studies.items():
        folder = out / study.replace(os.sep, "_")
        written += write_outputs(_with_model(analysis, args.model), folder, args.param)
    pd.concat([a.runs for a in studies.values()], ignore_index=True).to_csv(out / "runs.csv", index=False)
    return [*written, out / "runs.csv"]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    try:
        written = _redraw(args) if args.from_tables else _analyze(args)
    except NoRunsError as exc:
        _fail(str(exc), 2)
    except OSError as exc:
        _fail(f"cannot write {exc.filename or 'the outputs'} ({exc.strerror or exc})", 1)
    for path in written:
        log.info("wrote %s", path)
    return 0
