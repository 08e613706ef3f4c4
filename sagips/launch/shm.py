"""MPICH's shared-memory segments in /dev/shm, which a killed job leaves behind (RAM until reboot)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

SHM = Path("/dev/shm")


def segments(pattern: str = "mpich*", folder: Path = SHM) -> set[Path]:
    return set(folder.glob(pattern)) if folder.is_dir() else set()


def remove_unmapped(candidates: Iterable[Path]) -> list[Path]:
    """Delete those of ``candidates`` that this user owns and no live process maps; returns them."""
    candidates = [p for p in candidates if p.exists() and p.stat().st_uid == os.getuid()]
    if not candidates:
        return []
    maps = []
    for path in Path("/proc").glob("[0-9]*/maps"):
        try:
            maps.append(path.read_text())
        except OSError:  # a process that ended, or one of another user
            continue
    mapped = "\n".join(maps)
    stale = sorted(p for p in candidates if str(p) not in mapped)
    for path in stale:
        path.unlink(missing_ok=True)
    return stale
