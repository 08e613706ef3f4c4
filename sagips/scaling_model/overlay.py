"""The model's curve beside measured runs: what ``sagips-analyze --model PROFILE`` draws on Figs. 11/12.

The analysis reads only run folders and never starts MPI, so nothing is timed
here: the Python/mpi4py costs are the profile's reference host figures, and
where the profile calibrates its compute (``local``), one rank's epoch is the one
that reproduces the series' own measured point at the fewest ranks (ideally its
1-rank run).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import pandas as pd

from sagips.scaling_model import profiles as prof
from sagips.scaling_model.prediction import Job, Machine, predict
from sagips.scaling_model.waiting import EpochWork

CALIBRATION_STEPS = 4
TRANSPORT_KEYS = ("fuse", "max_staleness", "algorithm", "weights_only")  # under ``transport.``
# columns of the scaling table a series' jobs are built from, with the app's defaults
SETTINGS = {"ranks_per_node": None, "h": 1000, "jitter_ms": 0.0, "fuse": True, "max_staleness": 0,
            "algorithm": "ring", "weights_only": True}  # fmt: skip


def run_settings(summary: Mapping[str, Any], cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The columns ``model_curve`` needs, from one run's ``summary.json`` and resolved config."""
    train, transport = cfg.get("train", {}), cfg.get("transport", {})
    return {
        "epochs": int(summary["epochs"]), "disc_batch": int(summary["disc_batch"]),
        "ranks_per_node": int(summary.get("ranks_per_node") or cfg.get("ranks_per_node") or summary["ranks"]),
        "h": int(summary.get("h") or cfg.get("h") or SETTINGS["h"]),
        "jitter_ms": float(train.get("straggler", {}).get("jitter_ms", 0.0)),
        **{key: transport.get(key, SETTINGS[key]) for key in TRANSPORT_KEYS},
    }  # fmt: skip


def _job(row: pd.Series) -> Job:
    """One measured point's job: mode, ranks, epochs and N_disc, plus the settings it recorded."""
    get = {
        key: row[key] if key in row and not _missing(row[key]) else default
        for key, default in SETTINGS.items()
    }
    ranks = int(row["ranks"])
    return Job(
        str(row["mode"]), ranks, ranks_per_node=int(get["ranks_per_node"] or ranks), h=int(get["h"]),
        staleness=int(get["max_staleness"]), epochs=int(row["epochs"]), disc_batch=int(row["disc_batch"]),
        fuse=bool(get["fuse"]), weights_only=bool(get["weights_only"]), algorithm=str(get["algorithm"]),
        jitter_s=float(get["jitter_ms"]) / 1000,
    )  # fmt: skip


def _missing(value: object) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _calibrated(machine: Machine, first: pd.Series) -> Machine:
    """The machine with the compute that reproduces the series' point at the fewest ranks.

    The predicted epoch time grows about linearly with the compute, so a few
    rescalings converge (the exchange and the jitter are the non-linear rest).
    """
    job = _job(first)
    measured = float(first["total_train_time_s"]) / job.epochs
    work = EpochWork(max(measured - job.jitter_s, 1e-6))
    for _ in range(CALIBRATION_STEPS):
        machine = replace(machine, compute=work, ref_events=job.disc_batch)
        predicted = predict(job, machine).epoch_s
        work = EpochWork(work.compute_s * measured / predicted)
    return replace(machine, compute=work, ref_events=job.disc_batch)


NEEDED = ("mode", "ranks", "epochs", "disc_batch", "total_train_time_s")


def model_curve(series: pd.DataFrame, profile: str) -> pd.DataFrame:
    """Predicted ``total_train_time_s`` and ``analysis_rate`` at the rank counts of one measured series.

    ``series`` holds one row per rank count with ``mode``, ``ranks``, ``epochs``,
    ``disc_batch``, ``total_train_time_s`` and, where recorded, the settings of
    ``SETTINGS`` (missing ones take the app's defaults). ``profile``: a name or a
    YAML file (``profiles.load``).
    """
    rows = series.sort_values("ranks")
    target = prof.load(profile)
    if target.calibrates_compute:
        machine = _calibrated(prof.machine(target, compute=EpochWork(1.0), ref_events=1), rows.iloc[0])
    else:
        machine = prof.machine(target)
    out = []
    for _, row in rows.iterrows():
        p = predict(_job(row), machine)
        out.append(
            {"ranks": p.job.ranks, "total_train_time_s": p.train_time_s, "analysis_rate": p.analysis_rate}
        )
    return pd.DataFrame(out)
