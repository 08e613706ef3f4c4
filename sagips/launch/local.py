"""``cluster=local``: start the ranks with ``mpiexec -n N python -m mpi4py -m sagips.worker``.

``-m mpi4py`` turns an uncaught exception on one rank into an abort of the whole
job, and mpiexec ends every rank when one dies. The launcher forwards the job's
output as it arrives and, when the job fails, names the rank that failed first:
from the rank's own last words, or, for a rank that was killed, from the order
in which the ranks' processes ended.

Ctrl-C in a terminal (SIGINT to the whole process group) or a scheduler's SIGTERM
stops the job: the ranks die at once (``sagips.worker`` leaves both signals at
their default action), mpiexec's clean-up chatter is not forwarded, the job's
leftover shared memory is removed, and ``Stopped`` carries the one line to show.
"""

from __future__ import annotations

import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from omegaconf import DictConfig

from sagips import checkpoints as ck
from sagips.errors import Stopped
from sagips.launch import shm
from sagips.progress import PROGRESS_ENV

_FAILED = re.compile(r"\[rank (\d+)\][^\n]*rank \d+ failed: ([^\n]*)")
_KILLED_PID = re.compile(r"PID (\d+) RUNNING AT")  # MPICH's Hydra
_KILLED_RANK = re.compile(r"process rank (\d+) with PID (\d+) on node \S+ exited on signal")  # Open MPI


def worker_command(cfg: DictConfig, run_dir: Path, mpiexec: str) -> list[str]:
    return [
        mpiexec, "-n", str(cfg.ranks), *cfg.cluster.mpiexec_args,
        sys.executable, "-m", "mpi4py", "-m", "sagips.worker", str(run_dir),
    ]  # fmt: skip


def read_pid(run_dir: Path, rank: int) -> tuple[int, str] | None:
    """(pid, host) that a rank of the current start wrote, or None before it did."""
    path = ck.pid_path(run_dir, rank)
    try:
        pid, host = path.read_text().split()
    except (OSError, ValueError):
        return None
    return int(pid), host


class DeathWatch:
    """The order in which the ranks' processes end, through pidfds (Linux >= 5.3).

    mpiexec's own report names whichever process it reaped first after killing the
    rest, often not the one that died. A pidfd becomes readable the moment its
    process ends, so a rank whose pidfd fires alone, first, is the one that died.
    Trusted only when every rank runs on this host and was watched before any ended.
    """

    def __init__(self, run_dir: Path, ranks: int, sel: selectors.BaseSelector) -> None:
        self.run_dir, self.ranks, self.sel = run_dir, ranks, sel
        self.pids: dict[int, int] = {}  # rank -> pid
        self.fds: dict[int, int] = {}  # rank -> pidfd
        self.first: list[int] = []  # the ranks that ended at the first wake-up
        self.usable = hasattr(os, "pidfd_open")
        self.host = socket.gethostname()

    def look(self) -> None:
        """Watch the ranks whose pid files appeared since the last look."""
        for rank in range(self.ranks):
            if not self.usable or rank in self.pids or (found := read_pid(self.run_dir, rank)) is None:
                continue
            pid, host = found
            try:
                fd = os.pidfd_open(pid) if host == self.host else -1
            except OSError:  # it has ended already, before it could be watched
                fd = -1
            if fd < 0:
                self.usable = False
                continue
            self.pids[rank], self.fds[rank] = pid, fd
            self.sel.register(fd, selectors.EVENT_READ, rank)

    def ended(self, ranks: list[int]) -> None:
        if not self.first:
            self.first = sorted(ranks)
            self.usable &= len(self.pids) == self.ranks  # an unwatched rank may have ended before
        for rank in ranks:
            self.sel.unregister(self.fds[rank])
            os.close(self.fds.pop(rank))

    def wait(self, timeout: float) -> None:
        """Until every watched rank has ended, so that a resumed run never meets old ranks."""
        deadline = time.monotonic() + timeout
        while self.fds and (left := deadline - time.monotonic()) > 0:
            events = self.sel.select(timeout=left)
            if ended := [key.data for key, _ in events if isinstance(key.data, int)]:
                self.ended(ended)

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)

    def culprit(self) -> str | None:
        if not (self.usable and self.first):
            return None
        if len(self.first) == 1:
            return f"rank {self.first[0]} (pid {self.pids[self.first[0]]}) died"
        return f"one of ranks {', '.join(map(str, self.first))} died first"


def _culprit(run_dir: Path, ranks: int, text: str, watch: DeathWatch) -> str:
    """Which rank failed: its own last words, else the death watch, else mpiexec's report."""
    if m := _FAILED.search(text):
        return f"rank {m.group(1)} failed: {m.group(2)}"
    if found := watch.culprit():
        return found
    pids = {str(pid): rank for rank in range(ranks) if (pid := (read_pid(run_dir, rank) or (0,))[0])}
    for pid in _KILLED_PID.findall(text):
        if pid in pids:
            return f"rank {pids[pid]} (pid {pid}) died, as mpiexec reports"
    if m := _KILLED_RANK.search(text):
        return f"rank {m.group(1)} (pid {m.group(2)}) died"
    return "a rank died without a message"


@contextmanager
def _forwarding(proc: subprocess.Popen, received: list[int]) -> Iterator[None]:
    """SIGTERM and SIGHUP to the launcher end the job: mpiexec passes them on to the ranks.

    Without this, ``kill`` of the launcher would leave mpiexec and the ranks running.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def forward(signum: int, _frame: object) -> None:
        received.append(signum)
        proc.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _pump(sel: selectors.BaseSelector, watch: DeathWatch, seen: bytearray, received: list[int]) -> None:
    """Forward the job's output and watch its ranks until mpiexec closes its output.

    Once the job is being stopped, what mpiexec and its proxies say about ranks that
    died of the signal is noise: it is kept for the culprit search, not shown.
    """
    while any(not isinstance(key.data, int) for key in sel.get_map().values()):
        events = sel.select(timeout=0.2)
        watch.look()
        if ended := [key.data for key, _ in events if isinstance(key.data, int)]:
            watch.ended(ended)
        for key, _ in events:
            if isinstance(key.data, int):
                continue
            chunk = os.read(key.fd, 65536)
            if not chunk:
                sel.unregister(key.fileobj)
                continue
            if not received:
                key.data.write(chunk)
                key.data.flush()
            seen += chunk
            del seen[:-262144]  # the end of the output is where failures are reported


def run_mpiexec(cfg: DictConfig, run_dir: Path, mpiexec: str) -> tuple[int, str]:
    """Run the job to its end; returns mpiexec's exit status and, on failure, the culprit.

    Raises ``Stopped`` when a signal to the launcher ended the job before it finished.
    """
    env = dict(os.environ)
    env.setdefault(PROGRESS_ENV, "bar" if sys.stderr.isatty() else "log")
    before = shm.segments()
    for rank in range(cfg.ranks):  # pid files of an earlier start would name the wrong processes
        ck.pid_path(run_dir, rank).unlink(missing_ok=True)
    proc = subprocess.Popen(worker_command(cfg, run_dir, mpiexec), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    # MPICH's mpiexec reports a killed rank on stdout, the ranks' last words come on
    # stderr: both are forwarded where they belong and both are searched for the culprit.
    seen = bytearray()
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ, sys.stdout.buffer)
    sel.register(proc.stderr, selectors.EVENT_READ, sys.stderr.buffer)
    watch = DeathWatch(run_dir, cfg.ranks, sel)
    received: list[int] = []
    with _forwarding(proc, received):
        while True:
            try:
                _pump(sel, watch, seen, received)
                break
            except KeyboardInterrupt:
                # Ctrl-C in a terminal reaches mpiexec too; a SIGINT sent to the launcher
                # alone does not. A second one stops mpiexec without waiting for the ranks.
                received.append(signal.SIGINT)
                if received.count(signal.SIGINT) < 2:
                    proc.send_signal(signal.SIGINT)
                else:
                    proc.kill()
    watch.wait(timeout=30)
    watch.close()
    sel.close()
    rc = proc.wait()
    stopped = received and not ck.summary_path(run_dir).exists()  # a stop after the end changes nothing
    if rc == 0 and not stopped:
        return rc, ""
    shm.remove_unmapped(shm.segments() - before)  # only this job's leftovers
    if stopped:
        name = signal.Signals(received[0]).name
        raise Stopped(received[0], f"stopped by {name}: {run_dir} is unfinished; the same command resumes it")
    return rc, _culprit(run_dir, cfg.ranks, seen.decode(errors="replace"), watch)
