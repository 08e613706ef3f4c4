"""``cluster=local``: start the ranks with ``mpiexec -n N python -m mpi4py -m sagips.worker``.

``-m mpi4py`` turns an uncaught exception on one rank into an abort of the whole
job, and mpiexec ends every rank when one dies. The launcher forwards the job's
output as it arrives and, when the job fails, names the rank that failed first.
"""

from __future__ import annotations

import os
import re
import selectors
import subprocess
import sys
from pathlib import Path

from omegaconf import DictConfig

from sagips import checkpoints as ck
from sagips.progress import PROGRESS_ENV

_FAILED = re.compile(r"\[rank (\d+)\][^\n]*rank \d+ failed: ([^\n]*)")
_KILLED_PID = re.compile(r"PID (\d+) RUNNING AT")  # MPICH's Hydra
SHM = Path("/dev/shm")
_KILLED_RANK = re.compile(r"process rank (\d+) with PID (\d+) on node \S+ exited on signal")  # Open MPI


def worker_command(cfg: DictConfig, run_dir: Path, mpiexec: str) -> list[str]:
    return [
        mpiexec, "-n", str(cfg.ranks), *cfg.cluster.mpiexec_args,
        sys.executable, "-m", "mpi4py", "-m", "sagips.worker", str(run_dir),
    ]  # fmt: skip


def _culprit(run_dir: Path, ranks: int, text: str) -> str:
    """Which rank failed, from the workers' own last words or the launcher's kill report."""
    if m := _FAILED.search(text):
        return f"rank {m.group(1)} failed: {m.group(2)}"
    pids: dict[str, int] = {}
    for rank in range(ranks):
        path = ck.pid_path(run_dir, rank)
        if path.exists():
            pids[path.read_text().strip()] = rank
    for pid in _KILLED_PID.findall(text):
        if pid in pids:
            return f"rank {pids[pid]} (pid {pid}) died"
    if m := _KILLED_RANK.search(text):
        return f"rank {m.group(1)} (pid {m.group(2)}) died"
    return "a rank died without a message"


def _shm_segments() -> set[Path]:
    return set(SHM.glob("mpich*")) if SHM.is_dir() else set()


def remove_leaked_segments(before: set[Path]) -> list[Path]:
    """Shared-memory segments of a failed job that MPICH left in /dev/shm (RAM until reboot).

    Only segments that appeared during this job and that no live process maps are
    removed, so a concurrent job's segment is never touched.
    """
    new = _shm_segments() - before
    if not new:
        return []
    maps = []
    for path in Path("/proc").glob("[0-9]*/maps"):
        try:
            maps.append(path.read_text())
        except OSError:  # a process that ended, or one of another user
            continue
    mapped = "\n".join(maps)
    leaked = sorted(p for p in new if str(p) not in mapped)
    for path in leaked:
        path.unlink(missing_ok=True)
    return leaked


def run_mpiexec(cfg: DictConfig, run_dir: Path, mpiexec: str) -> tuple[int, str]:
    """Run the job to its end; returns mpiexec's exit status and, on failure, the culprit."""
    env = dict(os.environ)
    env.setdefault(PROGRESS_ENV, "bar" if sys.stderr.isatty() else "log")
    segments = _shm_segments()
    proc = subprocess.Popen(worker_command(cfg, run_dir, mpiexec), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    # MPICH's mpiexec reports a killed rank on stdout, the ranks' last words come on
    # stderr: both are forwarded where they belong and both are searched for the culprit.
    seen = bytearray()
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ, sys.stdout.buffer)
    sel.register(proc.stderr, selectors.EVENT_READ, sys.stderr.buffer)
    while sel.get_map():
        for key, _ in sel.select():
            chunk = os.read(key.fd, 65536)
            if not chunk:
                sel.unregister(key.fileobj)
                continue
            key.data.write(chunk)
            key.data.flush()
            seen += chunk
            del seen[:-262144]  # the end of the output is where failures are reported
    sel.close()
    rc = proc.wait()
    if rc == 0:
        return rc, ""
    remove_leaked_segments(segments)
    return rc, _culprit(run_dir, cfg.ranks, seen.decode(errors="replace"))
