"""Run folders are named after the command's overrides, so the same command finds its run again.

A folder name is the sorted ``key=value`` overrides that define the experiment
(docs/interface.md, "Run folders"). Keys that may change between a run and its
resume (``RESUMABLE``: how and where it runs, how often it reports, how many
epochs) and the study's name leave it out, by prefix: a new ``cluster.*`` key
needs no list to be kept up to date. The same list is the resume guard's
(``sagips.launch.runner.resume_conflicts``), so raising ``train.epochs`` finds
and extends the run. A name longer than ``MAX_NAME_BYTES`` keeps its leading
overrides and ends in a hash of all of them.

In a sweep, a resumable key that the sweep varies does name the folders
(``SweepNames``), or its jobs would share one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, read_write

# Keys (and, for groups, everything under them) that a resume may change; train.epochs upwards only.
RESUMABLE = ("train.epochs", "train.checkpoint_every", "train.log_every", "train.threads",
             "train.device", "train.nonfinite", "train.straggler", "cluster")  # fmt: skip
UNNAMED = (*RESUMABLE, "experiment")
MAX_NAME_BYTES = 120  # a file name may have 255; sweeps nest it below multirun/<study>/
HASH_CHARS = 10
SUBDIR = "hydra.sweep.subdir"


def under(key: str, prefixes: Iterable[str]) -> bool:
    """``key`` is one of ``prefixes`` or lies below one: ``cluster.partition`` is under ``cluster``."""
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def override_key(override: str) -> str:
    """``+experiment=x`` -> ``experiment``, ``train.epochs=5`` -> ``train.epochs``."""
    return override.lstrip("~+").partition("=")[0].partition("@")[0]


def run_name(overrides: Sequence[str], *keep: str) -> str:
    """The folder name of a job with these task overrides; ``keep`` names keys that name it anyway."""
    items = sorted(o for o in map(str, overrides)
                   if under(override_key(o), keep) or not under(override_key(o), UNNAMED))  # fmt: skip
    return shorten(items) if items else "default"


def shorten(items: Sequence[str]) -> str:
    """``a=1,b=2,...`` within ``MAX_NAME_BYTES``: the leading items, then how many more and a hash of all."""
    name = ",".join(items)
    if len(name.encode()) <= MAX_NAME_BYTES:
        return name
    digest = hashlib.sha256("\n".join(items).encode()).hexdigest()[:HASH_CHARS]
    kept: list[str] = []
    for item in items:
        tail = f"{len(items) - len(kept) - 1}_more_{digest}"
        if len(",".join([*kept, item, tail]).encode()) > MAX_NAME_BYTES:
            break
        kept.append(item)
    return ",".join([*kept, f"{len(items) - len(kept)}_more_{digest}"])


def sweep_jobs(config: DictConfig) -> list[list[str]]:
    """Every job's overrides, expanded from ``hydra.sweeper.params`` and the command line as the
    basic sweeper does."""
    params = [f"{k}={v}" for k, v in (config.hydra.sweeper.get("params") or {}).items()]
    parsed = OverridesParser.create().parse_overrides(params + list(config.hydra.overrides.task))
    (jobs,) = BasicSweeper.split_arguments(parsed, None)
    return [list(job) for job in jobs]


def swept_unnamed_keys(jobs: Sequence[Sequence[str]]) -> list[str]:
    """The keys that would leave the folder name but take different values in different jobs."""
    values: dict[str, set[str]] = {}
    for job in jobs:
        for override in job:
            values.setdefault(override_key(override), set()).add(override)
    return sorted(k for k, v in values.items() if len(v) > 1 and under(k, UNNAMED))


class SweepNames(Callback):
    """Before a sweep starts: the resumable keys it varies name its folders (``hydra.sweep.subdir``).

    Set as an override of the hydra config, which Hydra applies to every job it composes,
    unless the command line sets ``hydra.sweep.subdir`` itself.
    """

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        hydra_overrides = config.hydra.overrides.hydra
        if any(override_key(o) == SUBDIR for o in hydra_overrides):
            return
        if keep := swept_unnamed_keys(sweep_jobs(config)):
            subdir = "${run_name:${hydra.overrides.task}," + ",".join(keep) + "}"
            with read_write(config.hydra):
                hydra_overrides.append(f"{SUBDIR}='{subdir}'")
                config.hydra.sweep.subdir = subdir


def register_resolvers() -> None:
    """The resolvers sagips' configs use; called by every entry point that composes a config."""
    OmegaConf.register_new_resolver("run_name", run_name, replace=True)
    # Experiments size an inner group as min(ranks, GPUs per node): ${min:${ranks},4}.
    OmegaConf.register_new_resolver("min", min, replace=True)
