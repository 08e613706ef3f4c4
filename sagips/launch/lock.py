"""One launcher per run folder: ``RUN/.lock`` names the launcher that runs it (pid, host, Slurm job).

A second command on a folder whose launcher is alive is refused with one line
naming that launcher, before anything is written. The lock goes when its
launcher ends; one left behind by a launcher that could not clean up (SIGKILL,
a lost node) is taken over when it is stale: its pid is gone on this host, or
it belongs to this very Slurm job (a requeued job may restart on another node).
A lock from another host whose launcher may still be alive is never taken over.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from sagips import checkpoints as ck
from sagips.errors import ConfigError

LOCK = ".lock"


@dataclass(frozen=True)
class Owner:
    pid: int
    host: str
    slurm_job: str  # SLURM_JOB_ID of the launcher, "" outside Slurm
    started: float  # Unix time

    @classmethod
    def me(cls) -> Owner:
        return cls(os.getpid(), socket.gethostname(), os.environ.get("SLURM_JOB_ID", ""), time.time())

    def describe(self) -> str:
        job = f", Slurm job {self.slurm_job}" if self.slurm_job else ""
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started))
        return f"pid {self.pid} on {self.host}{job}, since {since}"

    def stale(self, me: Owner) -> bool:
        if self.slurm_job and self.slurm_job == me.slurm_job:
            return True
        return self.host == me.host and not _alive(self.pid)


def process_state(pid: int) -> str | None:
    """The state letter of ``/proc/PID/stat`` ("R", "S", "Z" for a zombie...); None when the
    process is gone or this system has no /proc."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return None


def _alive(pid: int) -> bool:
    """The process runs. A zombie does not: a launcher killed with its parent stays one for as
    long as nobody reaps it (a container whose init does not reap, for one)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    if (state := process_state(pid)) is None:  # it ended just now, or this system has no /proc
        return not Path("/proc").is_dir()
    return state != "Z"


def lock_path(run_dir: Path) -> Path:
    return Path(run_dir) / LOCK


def read_owner(run_dir: Path) -> Owner | None:
    try:
        return Owner(**json.loads(lock_path(run_dir).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def _publish(run_dir: Path, me: Owner) -> bool:
    """Create the lock with its content in one step (a hard link fails where one exists)."""
    fd, tmp = tempfile.mkstemp(prefix=ck.TMP_PREFIX, dir=run_dir)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(asdict(me)) + "\n")
        os.link(tmp, lock_path(run_dir))
        return True
    except FileExistsError:
        return False
    finally:
        Path(tmp).unlink(missing_ok=True)


@contextmanager
def run_lock(run_dir: Path) -> Iterator[Owner]:
    """Hold ``RUN/.lock`` while the body runs; raises ConfigError naming a live owner."""
    me = Owner.me()
    for _ in range(3):
        if _publish(run_dir, me):
            break
        other = read_owner(run_dir)
        if other is not None and not other.stale(me):
            raise ConfigError("hydra.run.dir", str(run_dir),
                              f"in use by another sagips ({other.describe()}): wait for it to end or "
                              f"stop it; remove {lock_path(run_dir)} only if that job is gone")  # fmt: skip
        # Stale, or unreadable (removed between the two looks): two launchers that both find the
        # same stale lock could both take it here, a window of microseconds.
        lock_path(run_dir).unlink(missing_ok=True)
    else:
        raise ConfigError("hydra.run.dir", str(run_dir), f"cannot take {lock_path(run_dir)}")
    try:
        yield me
    finally:
        if read_owner(run_dir) == me:
            lock_path(run_dir).unlink(missing_ok=True)
