"""Progress on rank 0: a tqdm bar in a terminal, periodic log lines otherwise."""

from __future__ import annotations

import logging
import os
import sys
import time

from tqdm import tqdm

log = logging.getLogger("sagips.progress")
# The launcher knows whether a person is watching; ranks only see a pipe.
PROGRESS_ENV = "SAGIPS_PROGRESS"
LOG_EVERY_S = 10.0


class Progress:
    def __init__(self, rank: int, start: int, epochs: int) -> None:
        self.enabled = rank == 0
        self.epochs, self.start = epochs, start
        self.bar = None
        style = os.environ.get(PROGRESS_ENV, "bar" if sys.stderr.isatty() else "log")
        if self.enabled and style == "bar":
            self.bar = tqdm(total=epochs, initial=start, unit="epoch", dynamic_ncols=True)
        self._t0 = self._last = time.monotonic()

    def update(self, epoch: int, g_loss: float, d_loss: float) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(g=f"{g_loss:.4f}", d=f"{d_loss:.4f}", refresh=False)
            return
        now = time.monotonic()
        if now - self._last >= LOG_EVERY_S or epoch == self.epochs:
            self._last = now
            rate = (epoch - self.start) / max(now - self._t0, 1e-9)
            eta = (self.epochs - epoch) / rate if rate else float("inf")
            log.info("epoch %d/%d  %.1f epoch/s  ETA %.0f s  g_loss %.4f  d_loss %.4f",
                     epoch, self.epochs, rate, eta, g_loss, d_loss)  # fmt: skip

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
