"""``sagips [OVERRIDES...]``: the Hydra app that runs one training job or a sweep (-m)."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import NoReturn

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from sagips.errors import ConfigError, JobFailed, Stopped
from sagips.launch.naming import override_key, register_resolvers
from sagips.launch.runner import run_job
from sagips.paths import conf_dir

GROUPS = ("mode", "scale", "sampling", "cluster", "model", "experiment")
_NOT_AN_INDEX = re.compile(r"invalid literal for int\(\) with base 10: '([^']*)'")


def check_group_choices(argv: list[str], root: Path) -> str | None:
    """One-line error for an unknown option of a config group, before Hydra composes.

    Options from folders added by ``hydra.searchpath`` are left to Hydra to find.
    """
    if any(arg.startswith("hydra.searchpath=") for arg in argv):
        return None
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
            message = f"{arg}: cannot parse this override ({str(exc).splitlines()[0]})"
            if not arg.isascii():
                key, _, value = arg.partition("=")
                message += f"; quote a value with non-ASCII characters for Hydra: '{key}=\"{value}\"'"
            return message
    return None


def not_a_list_index(argv: list[str], exc: ValueError) -> str | None:
    """``proxy.truth.x=1``: OmegaConf's bare ValueError for a list indexed by a name, as one line."""
    if not (m := _NOT_AN_INDEX.fullmatch(str(exc))):
        return None
    for arg in argv:
        parts = override_key(arg).split(".")
        if m.group(1) in parts[1:]:
            lst = ".".join(parts[: parts.index(m.group(1), 1)])
            return f"{arg}: {lst} is a list: set one item by its number ({lst}.0=...) or all ('{lst}=[...]')"
    return None


def one_line(exc: BaseException) -> str:
    """Hydra's and OmegaConf's multi-line messages (and their cause) folded into one line."""
    noise = ("full_key:", "object_type", "See https:", "Set the environment variable")
    parts = [str(exc)] + ([str(exc.__cause__)] if exc.__cause__ else [])
    lines = [ln.strip() for part in parts for ln in part.splitlines()]
    text = " ".join(ln for ln in lines if ln and not ln.startswith(noise))
    return re.sub(r"^Error merging override (\S+) ", r"\1: ", text)


def plain_experiment(argv: list[str]) -> list[str]:
    """``+experiment=NAME`` as ``experiment=NAME``: the defaults list holds ``experiment: null``."""
    return [arg[1:] if arg.startswith("+experiment=") else arg for arg in argv]


def task(cfg: DictConfig) -> None:
    """The Hydra task function. (A Slurm job gets sagips' resolvers with Hydra's state.)"""
    try:
        run_job(cfg)
    except (ConfigError, JobFailed) as exc:
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise  # Hydra keeps it and goes on with the sweep's other jobs
        _fail(exc, sweep=False)  # exits now: Hydra would add lines of its own to an exception


def _error(message: str, code: int) -> NoReturn:
    print(f"sagips: error: {message}", file=sys.stderr)
    sys.exit(code)


def _fail(exc: ConfigError | JobFailed, sweep: bool) -> NoReturn:
    if isinstance(exc, ConfigError):
        _error(str(exc), 2)
    _error(f"{exc} (failures of other jobs, if any, are logged above)" if sweep else str(exc), exc.exit_code)


def main() -> None:
    register_resolvers()
    argv = sys.argv[1:] = plain_experiment(sys.argv[1:])
    error = check_group_choices(argv, conf_dir()) or check_override_syntax(argv)
    if error:
        _error(error, 2)
    app = hydra.main(version_base=None, config_path=str(conf_dir()), config_name="config")(task)
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        app()  # the user asked for Hydra's full tracebacks
        return
    # Hydra would print its errors over several lines with a partial traceback;
    # with HYDRA_FULL_ERROR it raises them instead, and they are reported here.
    os.environ["HYDRA_FULL_ERROR"] = "1"
    sweep = bool({"-m", "--multirun"} & set(argv))
    try:
        app()
    except (HydraException, OmegaConfBaseException) as exc:
        _error(one_line(exc), 2)
    except (ConfigError, JobFailed) as exc:
        _fail(exc, sweep)
    except Stopped as exc:  # Ctrl-C or SIGTERM: 130 or 143, as a shell reports them
        _error(str(exc), exc.code)
    except BrokenPipeError:  # `sagips --help | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except OSError as exc:
        _error(f"{'hydra.sweep.dir' if sweep else 'hydra.run.dir'}: cannot create or write "
               f"{exc.filename!r} ({exc.strerror})", 2)  # fmt: skip
    except ValueError as exc:
        if (message := not_a_list_index(argv, exc)) is None:
            raise
        _error(message, 2)
