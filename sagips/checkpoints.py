"""The run folder on disk: generator checkpoints, full training state, metrics, summary.

Layout (docs/interface.md)::

    RUN/.hydra/config.yaml                      resolved config
    RUN/checkpoints/rank{r}/generator_{epoch:07d}.pt
    RUN/checkpoints/rank{r}/state_{epoch:07d}.pt  both networks, optimisers, RNG, time
    RUN/metrics/rank{r}.csv
    RUN/summary.json                            written last, by rank 0
    RUN/.ranks/rank{r}.pid                      process ids of the last start

Every file is written atomically (temporary file in the same folder, then
rename), so a reader never sees half a checkpoint.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

TMP_PREFIX = ".tmp-"
# mkstemp creates files readable by their owner only; run folders are shared with a
# project group on clusters, so written files get the mode the umask allows instead.
_UMASK = os.umask(0)
os.umask(_UMASK)
_GEN = re.compile(r"^generator_(\d{7})\.pt$")
_STATE = re.compile(r"^state_(\d{7})\.pt$")


def config_path(run_dir: Path) -> Path:
    return Path(run_dir) / ".hydra" / "config.yaml"


def summary_path(run_dir: Path) -> Path:
    return Path(run_dir) / "summary.json"


def rank_dir(run_dir: Path, rank: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"rank{rank}"


def generator_path(run_dir: Path, rank: int, epoch: int) -> Path:
    return rank_dir(run_dir, rank) / f"generator_{epoch:07d}.pt"


def state_path(run_dir: Path, rank: int, epoch: int) -> Path:
    return rank_dir(run_dir, rank) / f"state_{epoch:07d}.pt"


def metrics_path(run_dir: Path, rank: int) -> Path:
    return Path(run_dir) / "metrics" / f"rank{rank}.csv"


def pid_path(run_dir: Path, rank: int) -> Path:
    """Each rank's process id, so the launcher can name a rank that was killed."""
    return Path(run_dir) / ".ranks" / f"rank{rank}.pid"


def atomic_write(path: Path, write: Callable[[Any], None], mode: str = "wb") -> None:
    """Write through ``write(fileobj)`` into a temporary sibling, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            os.fchmod(fd, 0o666 & ~_UMASK)
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_torch(path: Path, obj: dict[str, Any]) -> None:
    import torch  # here, so that the launcher checks a config without loading torch

    atomic_write(path, lambda f: torch.save(obj, f))


def write_json(path: Path, obj: dict[str, Any]) -> None:
    atomic_write(path, lambda f: f.write(json.dumps(obj, indent=2, sort_keys=True) + "\n"), "w")


def read_summary(run_dir: Path) -> dict[str, Any] | None:
    path = summary_path(run_dir)
    if not path.exists():
        return None
    return json.loads(path.read_text())


def remove_temporaries(run_dir: Path) -> int:
    """Delete temporary files left by a write that was killed; returns how many."""
    stale = list(Path(run_dir).rglob(f"{TMP_PREFIX}*"))
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)


def _epochs(folder: Path, pattern: re.Pattern[str]) -> set[int]:
    if not folder.is_dir():
        return set()
    return {int(m.group(1)) for p in folder.iterdir() if (m := pattern.match(p.name))}


def generator_epochs(run_dir: Path, rank: int) -> list[int]:
    return sorted(_epochs(rank_dir(run_dir, rank), _GEN))


def resume_epoch(run_dir: Path, world_size: int) -> int:
    """Newest epoch whose training state every rank has written (0 when none)."""
    common: set[int] | None = None
    for rank in range(world_size):
        epochs = _epochs(rank_dir(run_dir, rank), _STATE)
        common = epochs if common is None else common & epochs
    return max(common) if common else 0
