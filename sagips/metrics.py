"""Per-rank metrics CSV: one row per logged epoch, averaged over the logging interval."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

from sagips.checkpoints import atomic_write

COLUMNS = ("epoch", "train_time_s", "g_loss", "d_loss", "comm_s", "staleness", "skipped")


class MetricsLog:
    """Appends rows to ``metrics/rank{r}.csv``; on resume keeps the rows up to ``keep_until``."""

    def __init__(self, path: Path, keep_until: int) -> None:
        kept: list[dict[str, str]] = []
        if path.exists() and keep_until:
            with path.open(newline="") as f:
                kept = [row for row in csv.DictReader(f) if int(row["epoch"]) <= keep_until]

        def rewrite(f: Any) -> None:
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(kept)

        # The kept rows replace the file atomically: a resume killed before its
        # first checkpoint still leaves the rows of the epochs it resumed from.
        atomic_write(path, rewrite, "w")
        self._file = path.open("a", newline="")
        self._writer = csv.DictWriter(self._file, fieldnames=COLUMNS)
        self._reset()

    def _reset(self) -> None:
        self._n, self._g, self._d, self._comm, self._stale, self._skipped = 0, 0.0, 0.0, 0.0, 0.0, 0

    def add(self, epoch: int, train_time_s: float, res: Any) -> None:
        self._epoch, self._time = epoch, train_time_s
        self._n += 1
        self._g += res.g_loss
        self._d += res.d_loss
        self._comm += res.comm_s
        self._stale = max(self._stale, res.staleness)
        self._skipped += int(res.skipped)

    def flush_row(self) -> None:
        if not self._n:
            return
        n = self._n
        self._writer.writerow(dict(
            epoch=self._epoch, train_time_s=f"{self._time:.6f}", g_loss=f"{self._g / n:.6g}",
            d_loss=f"{self._d / n:.6g}", comm_s=f"{self._comm / n:.6g}",
            staleness=f"{self._stale:g}", skipped=self._skipped,
        ))  # fmt: skip
        self._reset()

    def sync(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self.flush_row()
        self._file.close()
