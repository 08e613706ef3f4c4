"""``sagips [OVERRIDES...]``: the Hydra app that runs one training job or a sweep (-m)."""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from sagips.launch.runner import run_job

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


def check_group_choices(argv: list[str], root: Path) -> str | None:
    """One-line error for an unknown option of a config group, before Hydra composes."""
    for arg in argv:
        key, sep, value = arg.lstrip("+~").partition("=")
        if not sep or key not in GROUPS or "(" in value:
            continue
        options = sorted(p.stem for p in (root / key).glob("*.yaml"))
        for choice in value.split(","):
            if choice not in options:
                return f"{key}={choice!r} is not one of: {', '.join(options)}"
    return None


@hydra.main(version_base=None, config_path=str(conf_dir()), config_name="config")
def _app(cfg: DictConfig) -> None:
    run_job(cfg)


def main() -> None:
    error = check_group_choices(sys.argv[1:], conf_dir())
    if error:
        print(f"sagips: error: {error}", file=sys.stderr)
        sys.exit(2)
    _app()
