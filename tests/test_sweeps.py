"""Hydra multirun sweeps of the real CLI (issue 4): one MPI world and one run folder per job,
finished jobs skipped and unfinished ones resumed on a rerun, a failing job named while
the others complete, and eq. (10) sampling recorded in summary.json.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sagips import checkpoints as ck
from tests.conftest import run_sagips, summary

pytestmark = pytest.mark.skipif(shutil.which("mpiexec") is None, reason="mpiexec not on PATH")


def sweep_dir(cwd: Path) -> Path:
    return cwd / "multirun" / "sweep"


def mtimes(run_dir: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file() and ".ranks" not in p.parts}


def test_sweep_runs_every_job_and_a_rerun_skips_them(tmp_path: Path) -> None:
    args = ("-m", "mode=arar,arar_arar", "ranks=2", "seed=0,1")
    done = run_sagips(*args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    runs = sorted(p for p in sweep_dir(tmp_path).iterdir() if p.is_dir())
    assert [p.name for p in runs] == [
        "mode=arar,ranks=2,seed=0", "mode=arar,ranks=2,seed=1",
        "mode=arar_arar,ranks=2,seed=0", "mode=arar_arar,ranks=2,seed=1",
    ]  # fmt: skip
    for run in runs:
        s = summary(run)
        assert s["status"] == "complete" and s["ranks"] == 2
        assert f"mode={s['mode']}" in run.name and f"seed={s['seed']}" in run.name
        assert ck.generator_epochs(run, 1) == [1, 10, 20]  # each job its own 2-rank world
    before = {run: mtimes(run) for run in runs}

    again = run_sagips(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert again.stderr.count("is complete; nothing to do") == len(runs)
    assert {run: mtimes(run) for run in runs} == before


def test_a_failing_job_is_named_and_the_others_complete(tmp_path: Path) -> None:
    # Rank 3 exists only in the 4-rank job, which runs first.
    done = run_sagips("-m", "mode=arar", "ranks=4,2", cwd=tmp_path, env={"SAGIPS_FAULT": "raise:3:2"})
    assert done.returncode != 0
    failed = sweep_dir(tmp_path) / "mode=arar,ranks=4"
    assert f"job {failed} failed" in done.stderr
    assert "rank 3 failed" in done.stderr
    assert not ck.summary_path(failed).exists()
    assert summary(sweep_dir(tmp_path) / "mode=arar,ranks=2")["status"] == "complete"


def test_per_rank_sampling_follows_eq_10(tmp_path: Path) -> None:
    done = run_sagips("-m", "sampling=per_rank", "ranks=1,2", "train.param_samples=9", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    for ranks, samples in ((1, 9), (2, 4)):  # floor(9 / N)
        s = summary(sweep_dir(tmp_path) / f"ranks={ranks},sampling=per_rank,train.param_samples=9")
        assert (s["sampling"], s["param_samples"], s["disc_batch"]) == ("per_rank", samples, samples * 20)


def test_an_interrupted_sweep_resumes_without_retraining(tmp_path: Path) -> None:
    args = ("-m", "mode=arar", "ranks=2", "seed=0,1", "train.epochs=300", "train.checkpoint_every=50")
    first, second = (sweep_dir(tmp_path) / f"mode=arar,ranks=2,seed={s},train.checkpoint_every=50,"
                     "train.epochs=300" for s in (0, 1))  # fmt: skip
    with (tmp_path / "interrupted.log").open("w") as log:
        sweep = subprocess.Popen([sys.executable, "-m", "sagips", *args], cwd=tmp_path,
                                 stdout=log, stderr=log, start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while not (ck.summary_path(first).exists() and ck.resume_epoch(second, 2) >= 50):
            assert sweep.poll() is None, "the sweep ended before it could be interrupted"
            assert time.monotonic() < deadline, "the second job did not reach its first checkpoint"
            time.sleep(0.2)
    finally:
        os.killpg(sweep.pid, signal.SIGKILL)  # the sweep, mpiexec and every rank: a lost allocation
        sweep.wait()
    assert not ck.summary_path(second).exists()
    finished = mtimes(first)
    started = ck.generator_path(second, 0, 1).stat().st_mtime_ns

    again = run_sagips(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert mtimes(first) == finished
    s = summary(second)
    assert s["status"] == "complete" and s["resumed_from_epoch"] >= 50
    assert ck.generator_path(second, 0, 1).stat().st_mtime_ns == started
