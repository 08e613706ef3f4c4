"""Run folders as the analysis sees them: discovery, validation and ensemble groups.

A run folder is one holding ``.hydra/config.yaml`` (docs/interface.md). Runs whose
resolved configs agree except for ``seed`` (and the launcher settings) are the
members of one ensemble (section VI-A); a folder that cannot take part is
reported with one warning line and left out.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from sagips import checkpoints
from sagips.analysis.names import group_name, mode_rank, plural
from sagips.proxy import ProxyApp, ProxyConfig

log = logging.getLogger(__name__)

# The seed makes the ensemble members; the launcher settings do not change what a run learns.
NOT_GROUPED = ("seed", "cluster", "hydra")
LABEL_KEYS = ("mode", "ranks")
SUMMARY_KEYS = ("ranks", "epochs", "disc_batch", "total_train_time_s")


class RunError(Exception):
    """A run folder the analysis cannot use; the message says why."""


def first_line(exc: BaseException) -> str:
    """An exception as one line, so that each skipped run gets exactly one warning line."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class NoRunsError(Exception):
    """The inputs hold no usable run folder."""


@dataclass(frozen=True)
class Run:
    """One finished job: its folder, resolved config, summary and generator checkpoint epochs."""

    path: Path
    name: str
    cfg: DictConfig
    summary: dict[str, Any]
    epochs: tuple[int, ...]
    settings: dict[str, Any] = field(repr=False)
    overrides: tuple[str, ...] | None = None  # .hydra/overrides.yaml; None when the file is absent

    @property
    def mode(self) -> str:
        return str(self.cfg.mode)

    @property
    def ranks(self) -> int:
        return int(self.cfg.ranks)

    @property
    def seed(self) -> int:
        return int(self.cfg.seed)

    @property
    def p_true(self) -> np.ndarray:
        return np.asarray(self.cfg.proxy.truth, dtype=float)

    @property
    def study(self) -> str:
        """The experiment's ``study``, else the folder holding the run (a sweep's ``multirun/NAME``)."""
        return str(self.cfg.get("study") or self.path.parent.name)

    @property
    def command(self) -> str:
        """The single-run command that trains this run again: ``sagips`` and its overrides, shell-quoted.

        Appending ``hydra.run.dir=DIR`` trains the same run into DIR. Empty when the
        run folder keeps no ``.hydra/overrides.yaml``.
        """
        return "" if self.overrides is None else shlex.join(["sagips", *self.overrides])

    def proxy(self) -> ProxyApp:
        return ProxyApp(proxy_config(self.cfg))


@dataclass(frozen=True)
class Group:
    """The runs that differ only in ``seed``: one ensemble, labelled by what sets it apart."""

    label: str
    runs: tuple[Run, ...]

    @property
    def first(self) -> Run:
        return self.runs[0]

    @property
    def mode(self) -> str:
        return self.first.mode

    @property
    def ranks(self) -> int:
        return self.first.ranks

    @property
    def study(self) -> str:
        """The members' studies, joined when a group gathers runs of several sweeps."""
        return ", ".join(dict.fromkeys(r.study for r in self.runs))


def proxy_config(cfg: DictConfig) -> ProxyConfig:
    """The proxy app a run was trained against, from its resolved config."""
    p = cfg.proxy
    return ProxyConfig(
        truth=tuple(float(v) for v in p.truth),
        pmin=tuple(float(v) for v in p.pmin),
        pmax=tuple(float(v) for v in p.pmax),
        grid_points=int(p.grid_points),
        x_min=float(p.x_min),
        x_max=float(p.x_max),
    )


def find_run_dirs(inputs: Iterable[Path | str]) -> list[Path]:
    """Every run folder at or below the inputs (a folder with ``.hydra/config.yaml``)."""
    found: set[Path] = set()
    for item in inputs:
        root = Path(item)
        if not root.is_dir():
            raise NoRunsError(f"{root} is not a folder")
        found |= {
            cfg.parent.parent.resolve() for cfg in root.rglob("config.yaml") if cfg.parent.name == ".hydra"
        }
    return sorted(found)


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts to dotted keys; lists become tuples so that the values hash."""
    if isinstance(tree, dict):
        flat: dict[str, Any] = {}
        for key, value in tree.items():
            flat |= flatten(value, f"{prefix}{key}.")
        return flat
    return {prefix[:-1]: _freeze(tree)}


def _freeze(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    return value


def _grouped(key: str) -> bool:
    return not any(key == k or key.startswith(f"{k}.") for k in NOT_GROUPED)


def read_overrides(path: Path) -> tuple[str, ...] | None:
    """The run's own command-line overrides (a sweep job's include its sweep values), or None."""
    file = path / ".hydra" / "overrides.yaml"
    if not file.is_file():
        return None
    try:
        overrides = OmegaConf.to_container(OmegaConf.load(file))
    except Exception as exc:  # noqa: BLE001 - any unreadable file is one reason to skip
        raise RunError(f"unreadable .hydra/overrides.yaml ({first_line(exc)})") from exc
    if not isinstance(overrides, list):
        raise RunError(".hydra/overrides.yaml is not a list of overrides")
    return tuple(str(o) for o in overrides)


def load_run(path: Path, name: str) -> Run:
    """Read and check one run folder; raises RunError with the reason it cannot be used."""
    try:
        cfg = OmegaConf.load(checkpoints.config_path(path))
        if not isinstance(cfg, DictConfig):
            raise TypeError("not a mapping")
        flat = flatten(OmegaConf.to_container(cfg, resolve=True))
    except Exception as exc:  # noqa: BLE001 - any unreadable config is one reason to skip
        raise RunError(f"unreadable .hydra/config.yaml ({first_line(exc)})") from exc
    try:
        summary = checkpoints.read_summary(path)
    except (OSError, json.JSONDecodeError) as exc:
        raise RunError(f"unreadable summary.json ({first_line(exc)})") from exc
    if summary is None:
        raise RunError("no summary.json (unfinished run)")
    if summary.get("status") != "complete":
        raise RunError(f"summary.json status is {summary.get('status')!r}, not 'complete'")
    if lacking := [k for k in SUMMARY_KEYS if k not in summary]:
        raise RunError(f"summary.json lacks {', '.join(lacking)}")
    try:
        ranks, _, _ = int(cfg.ranks), int(cfg.seed), str(cfg.mode)
        proxy_config(cfg)
    except Exception as exc:  # noqa: BLE001 - a missing or malformed key
        raise RunError(f"config lacks what the analysis needs ({first_line(exc)})") from exc
    per_rank = [tuple(checkpoints.generator_epochs(path, r)) for r in range(ranks)]
    if not all(per_rank):
        missing = [r for r, epochs in enumerate(per_rank) if not epochs]
        which = ", ".join(map(str, missing))
        raise RunError(f"no generator checkpoints for rank{'s' if len(missing) > 1 else ''} {which}")
    if len(set(per_rank)) > 1:
        raise RunError("ranks saved generator checkpoints at different epochs")
    settings = {k: v for k, v in flat.items() if _grouped(k)}
    return Run(path, name, cfg, summary, per_rank[0], settings, read_overrides(path))


def load_runs(paths: Sequence[Path]) -> list[Run]:
    """Load every run folder, warning once for each one left out."""
    if not paths:
        return []
    root = Path(os.path.commonpath([p.parent for p in paths]))
    runs = []
    for path in paths:
        try:
            runs.append(load_run(path, path.relative_to(root).as_posix()))
        except RunError as exc:
            log.warning("skipping run %s: %s", path, exc)
    return runs


def differing_keys(settings: Sequence[dict[str, Any]]) -> set[str]:
    """Config keys whose values are not the same in all the given flat configs."""
    keys = set().union(*settings) if settings else set()
    missing = object()
    return {k for k in keys if len({repr(s.get(k, missing)) for s in settings}) > 1}


def _drop_proxy_outliers(buckets: list[list[Run]]) -> list[list[Run]]:
    """Leave out runs whose truth or proxy alone sets them apart from a larger ensemble."""
    kept = []
    for bucket in buckets:
        partners = [
            (other, diff)
            for other in buckets
            if len(other) > len(bucket)
            and (diff := differing_keys([bucket[0].settings, other[0].settings]))
            and all(k.startswith("proxy.") for k in diff)
        ]
        if not partners:
            kept.append(bucket)
            continue
        other, diff = max(partners, key=lambda p: len(p[0]))
        for run in bucket:
            log.warning(
                "skipping run %s: %s differs from its %s",
                run.path,
                ", ".join(sorted(diff)),
                plural(len(other), "ensemble partner"),
            )
    return kept


def _distinct(settings: Sequence[dict[str, Any]], keys: Sequence[str]) -> int:
    return len({tuple(repr(s.get(k)) for k in keys) for s in settings})


def label_keys(settings: Sequence[dict[str, Any]]) -> list[str]:
    """Keys that tell the settings apart: ``mode`` and ``ranks`` when they differ, then the fewest others.

    A key that only follows those already chosen (``ranks_per_node`` = ``ranks``)
    is left out; with nothing differing the label is ``mode`` and ``ranks``.
    """
    differ = differing_keys(settings)
    chosen = [k for k in LABEL_KEYS if k in differ]
    for key in sorted(differ - set(LABEL_KEYS)):
        if _distinct(settings, chosen) == len(settings):
            break
        if _distinct(settings, [*chosen, key]) > _distinct(settings, chosen):
            chosen.append(key)
    return chosen or list(LABEL_KEYS)


def group_runs(runs: Sequence[Run]) -> list[Group]:
    """Ensemble members: runs sharing their config except ``seed`` (section VI-A).

    Each group is named by its mode and the other keys that tell the groups apart,
    e.g. ``Conv. ARAR [arar] ranks=2`` (see names.group_name).
    """
    buckets: dict[tuple, list[Run]] = defaultdict(list)
    for run in runs:
        buckets[tuple(sorted(run.settings.items(), key=lambda kv: kv[0]))].append(run)
    members = _drop_proxy_outliers(list(buckets.values()))
    keys = label_keys([m[0].settings for m in members])
    members.sort(
        key=lambda m: (mode_rank(m[0].mode), m[0].ranks, [_order(m[0].settings.get(k)) for k in keys])
    )
    return [
        Group(
            _name(m[0], keys),
            tuple(sorted(m, key=lambda r: (r.seed, r.name))),
        )
        for m in members
    ]


def _name(run: Run, keys: Sequence[str]) -> str:
    return group_name(run.mode, " ".join(f"{k}={_show(run.settings.get(k))}" for k in keys if k != "mode"))


def _order(value: Any) -> tuple[int, float | str]:
    """Numbers in numeric order (h=2 before h=10), then everything else by its text."""
    return (0, float(value)) if isinstance(value, int | float) else (1, str(value))


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return "[" + ",".join(_show(v) for v in value) + "]"
    return str(value)
