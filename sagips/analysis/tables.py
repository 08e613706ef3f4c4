"""Tables of section VI: final residuals per group (Tab. IV), time and analysis rate per rank count,
and one row per run (``runs.csv``).

Residuals are eq. (6)'s dimensionless values in every table (the paper prints Tab. IV x 1e3).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd

from sagips.analysis.ensemble import MIN_SIGMA_MEMBERS, R_COLS, SIGMA_COLS
from sagips.analysis.names import plural
from sagips.analysis.predictions import RunPredictions
from sagips.analysis.runs import Group
from sagips.equations import analysis_rate, residual
from sagips.scaling_model.overlay import run_settings

log = logging.getLogger(__name__)

DECIMALS = 3  # Tab. IV's resolution: the paper prints integers of 1e-3
NA = "n/a"
RUNS_COLS = ["study", "mode", "ranks", "ranks_per_node", "seed", "epochs", *R_COLS,
             "total_train_time_s", "command"]  # fmt: skip
# summary.json fields copied into runs.csv when a run has them (the asynchronous ring's).
SUMMARY_EXTRAS = ("max_staleness_epochs", "mean_staleness_epochs")


def final_residuals(residuals: pd.DataFrame) -> pd.DataFrame:
    """The last checkpoint of every group, in the groups' order."""
    last = residuals.groupby("group", sort=False)["checkpoint"].transform("max")
    return residuals[residuals["checkpoint"] == last].reset_index(drop=True)


def single_member_groups(residuals: pd.DataFrame) -> list[str]:
    """Groups with too few members for eq. (8): their sigma is n/a in every output."""
    final = final_residuals(residuals)
    return list(final.loc[final["members"] < MIN_SIGMA_MEMBERS, "group"])


def sigma_note(groups: Sequence[str]) -> str:
    """The one sentence that says why a sigma is n/a."""
    have = "has" if len(groups) == 1 else "have"
    return (f"sigma (eq. 8) needs at least {MIN_SIGMA_MEMBERS} members (seeds, or ranks in mode=ensemble): "
            f"n/a for {', '.join(groups)}, which {have} 1 member")  # fmt: skip


def table4(residuals: pd.DataFrame) -> pd.DataFrame:
    """Tab. IV: final residuals r_i and their 1 sigma (NaN below 2 members), one column pair per group.

    Rows ``r_0..r_5``; for each group a column ``NAME`` (residual) and ``NAME sigma``.
    """
    final = final_residuals(residuals)
    table = pd.DataFrame(index=pd.Index(R_COLS, name="residual"))
    for _, row in final.iterrows():
        table[row["group"]] = row[R_COLS].to_numpy(dtype=float)
        table[f"{row['group']} sigma"] = row[SIGMA_COLS].to_numpy(dtype=float)
    return table


def _fixed(value: float) -> str:
    return NA if np.isnan(value) else f"{round(value, DECIMALS) + 0.0:.{DECIMALS}f}"  # no "-0.000"


def table4_markdown(table: pd.DataFrame, members: dict[str, int], studies: Sequence[str]) -> str:
    """Tab. IV as markdown: ``mean ± sigma`` per group, the ensemble sizes, and a note on any n/a."""
    names = [c for c in table.columns if not c.endswith(" sigma")]
    lines = [
        "| Residual r̂_i (eq. 6) | " + " | ".join(names) + " |",
        "| --- |" + " ---: |" * len(names),
    ]
    for name, row in table.iterrows():
        cells = [f"{_fixed(row[t])} ± {_fixed(row[f'{t} sigma'])}" for t in names]
        lines.append(f"| r̂_{str(name)[2:]} | " + " | ".join(cells) + " |")
    lines.append("| members M | " + " | ".join(str(members[t]) for t in names) + " |")
    lines += [
        "",
        f"Study: {', '.join(studies)}. Eq. (6) residual of each group's ensemble mean (eq. 7) at its last "
        "checkpoint ± the eq. (8) spread, raw values (the paper's Tab. IV prints them x 1e3).",
    ]
    if lonely := [t for t in names if members[t] < MIN_SIGMA_MEMBERS]:
        lines += ["", f"n/a: {sigma_note(lonely)}."]
    return "\n".join(lines) + "\n"


def _std(values: np.ndarray) -> float:
    """Standard deviation over the members, NaN (n/a) for a single member."""
    return float(values.std()) if len(values) >= MIN_SIGMA_MEMBERS else float("nan")


def _rate(summary: dict) -> float:
    """Eq. (9) on one run's summary."""
    return analysis_rate(int(summary["ranks"]), int(summary["disc_batch"]), int(summary["epochs"]),
                         float(summary["total_train_time_s"]))  # fmt: skip


def scaling_table(groups: Sequence[Group]) -> pd.DataFrame:
    """``scaling.csv``: per group (mode, rank count) the members' total time and eq. (9) rate.

    The rate is eq. (9) on each member's summary (ranks, N_disc, epochs, total
    training time), then averaged over the runs with its standard deviation
    (NaN for a group of one run). The group's settings that its time depends on
    follow (``sagips.scaling_model.overlay.run_settings``), for ``--model``.
    """
    rows = []
    for group in groups:
        total = np.array([float(r.summary["total_train_time_s"]) for r in group.runs])
        rate = np.array([_rate(r.summary) for r in group.runs])
        rows.append(
            {
                "study": group.study,
                "group": group.label,
                "mode": group.mode,
                "ranks": group.ranks,
                "runs": len(group.runs),
                "total_train_time_s": total.mean(),
                "total_train_time_s_std": _std(total),
                "analysis_rate": rate.mean(),
                "analysis_rate_std": _std(rate),
                **run_settings(group.first.summary, group.first.cfg),  # what the scaling model needs
            }
        )
    return pd.DataFrame(rows)


def runs_table(groups: Sequence[Group], preds: dict[str, RunPredictions]) -> pd.DataFrame:
    """``runs.csv``: one row per run, with the eq. (6) residuals of its final generator.

    The final generator's prediction is the mean of its ranks' predictions over
    the noise batch (as section VI-A makes one member of a distributed run).
    ``command`` retrains the run when ``hydra.run.dir=DIR`` is appended.
    """
    rows = []
    missing = []
    for group in groups:
        for run in group.runs:
            pr = preds[run.name]
            r = residual(run.p_true, pr.rank_mean[:, -1].mean(axis=0))
            if not run.command:
                missing.append(run.name)
            rows.append(
                {
                    "study": run.study,
                    "mode": run.mode,
                    "ranks": run.ranks,
                    "ranks_per_node": int(run.cfg.get("ranks_per_node", run.ranks)),
                    "seed": run.seed,
                    "epochs": int(run.summary["epochs"]),
                    **dict(zip(R_COLS, r)),
                    "total_train_time_s": float(run.summary["total_train_time_s"]),
                    "command": run.command,
                    "group": group.label,
                    "run": run.name,
                    "checkpoint_epoch": int(pr.epochs[-1]),
                    "mean_abs_r": float(np.abs(r).mean()),
                    "analysis_rate": _rate(run.summary),
                    **{k: run.summary[k] for k in SUMMARY_EXTRAS if k in run.summary},
                }
            )
    if missing:
        log.warning("runs.csv: no command for %s without .hydra/overrides.yaml: %s",
                    plural(len(missing), "run"), ", ".join(missing))  # fmt: skip
    return pd.DataFrame(rows)
