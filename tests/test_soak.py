"""Soak: the asynchronous RMA-ARAR inner group with jitter on every rank and a straggler, for a
few thousand small epochs.

No deadlock, also not when the ranks finish at different times (the job ends well within its time
limit), the memory of every rank stays flat, and the MPI windows are freed (the transport is closed
before summary.json is written, and the job exits 0).
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sagips import checkpoints as ck
from sagips.launch.local import read_pid
from tests.conftest import summary

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("mpiexec") is None, reason="mpiexec not on PATH"),
]
RANKS, EPOCHS, EARLY, LATE = 4, 2000, 250, 1750  # RSS is sampled at the EARLY and LATE checkpoints
LIMIT_S = 600  # a deadlock shows up as this timeout
MAX_GROWTH_MB = 50


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def running(pid: int) -> bool:
    """Still running (a zombie has ended, it only waits for its parent)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def wait_for_checkpoint(run: Path, epoch: int, proc: subprocess.Popen, deadline: float) -> None:
    """Until every rank saved ``epoch``; fails when the job ends first or the deadline passes."""
    while not all(ck.state_path(run, r, epoch).exists() for r in range(RANKS)):
        assert proc.poll() is None, f"job ended (exit {proc.returncode}) before epoch {epoch}"
        assert time.monotonic() < deadline, f"no checkpoint {epoch} after {LIMIT_S} s: deadlock?"
        time.sleep(0.1)


def test_async_rma_with_jitter_runs_thousands_of_epochs_flat_and_finishes(tmp_path):
    run = tmp_path / "run"
    args = [
        "scale=smoke", "mode=rma_arar_arar", f"ranks={RANKS}", f"ranks_per_node={RANKS}",
        "transport.max_staleness=4", "train.straggler.jitter_ms=1", "train.straggler.ms=2",
        "train.straggler.ranks=[1]",
        f"train.epochs={EPOCHS}", "train.param_samples=8", "train.events_per_sample=10",
        f"train.checkpoint_every={EARLY}", f"hydra.run.dir={run}",
    ]  # fmt: skip
    deadline = time.monotonic() + LIMIT_S
    with (tmp_path / "stderr.txt").open("w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "sagips", *args], cwd=tmp_path,
                                stdout=subprocess.DEVNULL, stderr=err)  # fmt: skip
    try:
        wait_for_checkpoint(run, EARLY, proc, deadline)
        pids = [read_pid(run, r)[0] for r in range(RANKS)]
        early = [rss_mb(pid) for pid in pids]
        wait_for_checkpoint(run, LATE, proc, deadline)
        late = [rss_mb(pid) for pid in pids]
        rc = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # the launcher ends the whole job
            proc.wait(timeout=60)
    for rank, (a, b) in enumerate(zip(early, late)):
        print(f"rank {rank}: RSS {a:.1f} MB at epoch {EARLY}, {b:.1f} MB at epoch {LATE}")
    assert rc == 0, (tmp_path / "stderr.txt").read_text()[-3000:]
    s = summary(run)
    print(f"{EPOCHS} epochs in {s['total_train_time_s']:.1f} s, comm {s['total_comm_s']:.1f} s, "
          f"max staleness {s['max_staleness_epochs']:g} epochs")  # fmt: skip
    assert s["status"] == "complete" and s["epochs"] == EPOCHS
    assert 0 < s["max_staleness_epochs"] <= 4  # the asynchronous path was taken, within its bound
    assert all(b - a < MAX_GROWTH_MB for a, b in zip(early, late)), (early, late)
    assert not any(running(pid) for pid in pids)
