"""``sagips [OVERRIDES...]``: the Hydra app that runs one training job or a sweep (-m)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import NoReturn

import hydra
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from sagips.launch.local import Stopped
from sagips.launch.runner import JobFailed, run_job

GROUPS = ("mode", "scale", "sampling", "cluster", "model", "experiment")


def conf_dir() -> Path:
    """The config tree: shipped inside the package, or at the top of a source checkout."""
    here = Path(__file__).resolve().parent
    packaged = here / "conf"
    return packaged if packaged.is_dir() else here.parent / "conf"


def run_name(override_dirname: str) -> str:
    """Run folders are named after the overrides, so the same command finds its run again."""
    return override_dirname or "default"


OmegaConf.register_new_resolver("run_name", run_name, replace=True)
# Experiments size an inner group as min(ranks, GPUs per node): ${min:${ranks},4}.
OmegaConf.register_new_resolver("min", min, replace=True)


def check_group_choices(argv: list[str], root: Path) -> str | None:
    """One-line error for an unknown option of a config group, before Hydra composes."""
    for arg in argv:
        key, sep, value = arg.lstrip("+~").partition("=")
        if not sep or key not in GROUPS or "(" in value:
            continue
        options = sorted(p.stem for p in (root / key).glob("*.yaml"))
        for choice in value.split(","):
            if choice not in options:
                return f"{key}={choice!r} is not one of: {', '.join(options) or '(none yet)'}"
    return None


def check_override_syntax(argv: list[str]) -> str | None:
    """One-line error for an override Hydra's grammar cannot parse, naming the override."""
    from hydra._internal.utils import get_args_parser
    from hydra.core.override_parser.overrides_parser import OverridesParser

    args, _ = get_args_parser().parse_known_args(argv)
    parser = OverridesParser.create()
    for arg in args.overrides:
        try:
            parser.parse_overrides([arg])
        except HydraException as exc:
            return f"{arg}: cannot parse this override ({str(exc).splitlines()[0]})"
    return None


def one_line(exc: BaseException) -> str:
    """Hydra's and OmegaConf's multi-line messages (and their cause) folded into one line."""
    noise = ("full_key:", "object_type", "See https:", "Set the environment variable")
    parts = [str(exc)] + ([str(exc.__cause__)] if exc.__cause__ else [])
    lines = [ln.strip() for part in parts for ln in part.splitlines()]
    return " ".join(ln for ln in lines if ln and not ln.startswith(noise))


def _error(message: str, code: int) -> NoReturn:
    print(f"sagips: error: {message}", file=sys.stderr)
    sys.exit(code)


@hydra.main(version_base=None, config_path=str(conf_dir()), config_name="config")
def _app(cfg: DictConfig) -> None:
    run_job(cfg)


def main() -> None:
    argv = sys.argv[1:]
    error = check_group_choices(argv, conf_dir()) or check_override_syntax(argv)
    if error:
        _error(error, 2)
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        _app()  # the user asked for Hydra's full tracebacks
        return
    # Hydra would print its errors over several lines with a partial traceback;
    # with HYDRA_FULL_ERROR it raises them instead, and they are reported here.
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        _app()
    except (HydraException, OmegaConfBaseException) as exc:
        _error(one_line(exc), 2)
    except JobFailed as exc:
        _error(f"{exc} (failures of other jobs, if any, are logged above)", 1)
    except Stopped as exc:  # Ctrl-C or SIGTERM: 130 or 143, as a shell reports them
        _error(str(exc), exc.code)
    except OSError as exc:
        key = "hydra.sweep.dir" if {"-m", "--multirun"} & set(argv) else "hydra.run.dir"
        _error(f"{key}: cannot create or write {exc.filename!r} ({exc.strerror})", 1)
