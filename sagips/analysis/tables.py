"""Tables of section VI: final residuals per mode (Tab. IV) and time / analysis rate per rank count."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from sagips.analysis.ensemble import R_COLS, SIGMA_COLS
from sagips.analysis.runs import Group
from sagips.equations import analysis_rate

# Tab. IV's column names; the Horovod baseline is our ``allreduce``.
MODE_LABELS = {
    "allreduce": "hvd",
    "rma_arar_arar": "RMA-ARAR",
    "arar_arar": "ARAR",
    "arar": "Conv. ARAR",
    "ensemble": "Ensemble",
}
SCALE = 1e3


def final_residuals(residuals: pd.DataFrame) -> pd.DataFrame:
    """The last checkpoint of every group, in the groups' order."""
    last = residuals.groupby("group", sort=False)["checkpoint"].transform("max")
    return residuals[residuals["checkpoint"] == last].reset_index(drop=True)


def column_title(mode: str, label: str) -> str:
    """Tab. IV's name of the mode, plus whatever else sets the group apart (e.g. ``ranks=8``)."""
    rest = [part for part in label.split() if not part.startswith("mode=")]
    title = MODE_LABELS.get(mode, mode)
    return f"{title} ({' '.join(rest)})" if rest else title


def table4(residuals: pd.DataFrame) -> pd.DataFrame:
    """Tab. IV: final residuals r_i x 1e3 and their 1 sigma, one column pair per group.

    Rows ``r_0..r_5``; for each group a column ``TITLE`` (residual) and ``TITLE sigma``.
    """
    final = final_residuals(residuals)
    table = pd.DataFrame(index=pd.Index(R_COLS, name="residual"))
    for _, row in final.iterrows():
        title = column_title(row["mode"], row["group"])
        table[title] = row[R_COLS].to_numpy(dtype=float) * SCALE
        table[f"{title} sigma"] = row[SIGMA_COLS].to_numpy(dtype=float) * SCALE
    return table


def table4_markdown(table: pd.DataFrame) -> str:
    """Tab. IV as markdown, entries ``mean ± sigma`` rounded to integers of 1e-3."""
    titles = [c for c in table.columns if not c.endswith(" sigma")]
    lines = [
        "| Residual [1e-3] | " + " | ".join(titles) + " |",
        "| --- |" + " ---: |" * len(titles),
    ]
    for name, row in table.iterrows():
        cells = [f"{round(row[t])} ± {round(row[f'{t} sigma'])}" for t in titles]
        lines.append(f"| r̂_{str(name)[2:]} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def scaling_table(groups: Sequence[Group]) -> pd.DataFrame:
    """``scaling.csv``: per group (mode, rank count) the members' total time and eq. (9) rate.

    The rate is eq. (9) on each member's summary (ranks, N_disc, epochs, total
    training time), then averaged over the members with its standard deviation.
    """
    rows = []
    for group in groups:
        total = np.array([float(r.summary["total_train_time_s"]) for r in group.runs])
        rate = np.array(
            [
                analysis_rate(
                    int(r.summary["ranks"]),
                    int(r.summary["disc_batch"]),
                    int(r.summary["epochs"]),
                    float(r.summary["total_train_time_s"]),
                )
                for r in group.runs
            ]
        )
        rows.append(
            {
                "group": group.label,
                "mode": group.mode,
                "ranks": group.ranks,
                "runs": len(group.runs),
                "total_train_time_s": total.mean(),
                "total_train_time_s_std": total.std(),
                "analysis_rate": rate.mean(),
                "analysis_rate_std": rate.std(),
            }
        )
    return pd.DataFrame(rows)
