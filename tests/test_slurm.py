"""``cluster=slurm`` (issues 4, 12): job arrays sized from the sweep's jobs, one per resource shape,
and against a real Slurm: submitit submits the sweep, srun starts each MPI world, a sweep over
rank counts completes, a preempted job is requeued and resumes from its checkpoints, and a job
cancelled under the sweep ends it with one line naming the job.

Where no Slurm answers, the session starts one on localhost with ``.ci/slurm-up.sh`` (root, Debian
packages) and stops it again with ``.ci/slurm-down.sh``; where that is impossible the tests skip
and say why.
"""

from __future__ import annotations

import mmap
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from sagips import checkpoints as ck
from sagips.launch import slurm as sl
from sagips.launch.slurm import DROP_STALE_SHM, by_shape, drop_stale_shm, jobs_resources
from sagips.paths import conf_dir
from tests.conftest import run_sagips, summary

REPO = Path(__file__).resolve().parents[1]
CI = REPO / ".ci"
SWEEP_TIMEOUT_S = 600  # two jobs that each import torch in two tasks, on a loaded 2-core machine


def slurm_answers() -> bool:
    if shutil.which("sinfo") is None:
        return False
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return False
    return out.returncode == 0 and any(s.startswith(("idle", "mix", "alloc")) for s in out.stdout.split())


@pytest.fixture(scope="session")
def slurm() -> Iterator[None]:
    """A responsive Slurm: the one already running, or one started here and stopped at the end."""
    if slurm_answers():
        yield
        return
    if os.geteuid() != 0:
        pytest.skip("no Slurm answers, and starting one on localhost needs root")
    if shutil.which("slurmctld") is None and shutil.which("apt-get") is None:
        pytest.skip("no Slurm answers, its packages are absent and there is no apt-get to install them")
    up = subprocess.run(["bash", str(CI / "slurm-up.sh")], capture_output=True, text=True, timeout=900)
    try:
        if up.returncode:
            pytest.skip(f"Slurm did not start (.ci/slurm-up.sh exit {up.returncode}): {up.stderr[-500:]}")
        yield
    finally:
        subprocess.run(["bash", str(CI / "slurm-down.sh")], timeout=120)


def wait_for(condition: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def test_job_arrays_are_sized_from_the_jobs_one_per_shape() -> None:
    common = ["cluster=slurm", "mode=arar_arar", "cluster.gpus_per_node=4", "cluster.partition=gpu",
              "cluster.srun_extra=['--cpu-bind=cores']"]  # fmt: skip
    jobs = [["ranks=8", "ranks_per_node=4", "seed=0"], ["ranks=2", "seed=0"], ["ranks=8", "ranks_per_node=4",
            "seed=1", "train.epochs=50"]]  # fmt: skip
    with initialize_config_dir(config_dir=str(conf_dir()), version_base=None):
        resources = jobs_resources(
            jobs, lambda o: compose(config_name="config", overrides=common + o, return_hydra_config=True)
        )
    assert by_shape(resources) == [[0, 2], [1]]  # seed and train.* never change the size
    eight, two = resources[0], resources[1]
    assert (eight["nodes"], eight["tasks_per_node"], eight["gpus_per_node"]) == (2, 4, 4)
    assert (two["nodes"], two["tasks_per_node"]) == (1, 2)
    assert eight["partition"] == "gpu" and eight["additional_parameters"] == {"requeue": True}
    assert eight["srun_args"] == ["--mpi=pmi2", "--kill-on-bad-exit=1", "--cpu-bind=cores"]
    assert eight["setup"] == [DROP_STALE_SHM] and "_target_" not in eight


def test_a_job_of_a_bad_size_is_refused_before_submission(tmp_path: Path) -> None:
    done = run_sagips("-m", "cluster=slurm", "ranks=2,4", "ranks_per_node=3", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == "sagips: error: ranks_per_node=3: must divide ranks=2"
    assert [p.name for p in (tmp_path / "multirun" / "sweep").iterdir()] == ["multirun.yaml"]  # Hydra's own


@pytest.mark.parametrize("tasks,message", [
    ("", "cluster=slurm runs inside a Slurm job"),
    ("4", "ranks=2 but this Slurm step has 4 tasks"),
])  # fmt: skip
def test_a_rank_outside_a_fitting_slurm_step_says_so(tmp_path: Path, tasks: str, message: str) -> None:
    env = {"SLURM_STEP_NUM_TASKS": tasks, "SLURM_NTASKS": tasks}
    done = run_sagips("cluster=slurm", "ranks=2", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path, env=env)
    assert done.returncode != 0
    assert message in done.stderr.splitlines()[-1]


def test_a_restarted_job_drops_only_unmapped_segments(tmp_path: Path) -> None:
    stale, live = tmp_path / "mpich_shm_1_0", tmp_path / "mpich_shm_2_0"
    for segment in (stale, live):
        segment.write_bytes(bytes(4096))
    with live.open("r+b") as f, mmap.mmap(f.fileno(), 4096):  # a rank of a running job
        assert drop_stale_shm(tmp_path) == [stale]
    assert not stale.exists() and live.exists()


@pytest.mark.slurm
@pytest.mark.slow
def test_the_hand_sbatch_template_runs_a_two_rank_job(slurm: None, tmp_path: Path) -> None:
    # The template asks for 2 nodes x 4 GPUs; this node has 2 CPUs and no GPU.
    job = subprocess.run(["sbatch", "--wait", "--nodes=1", "--ntasks-per-node=2", "--gpus-per-node=0",
                          str(REPO / "slurm" / "sagips.sbatch"), "seed=3"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=SWEEP_TIMEOUT_S)  # fmt: skip
    logs = "".join(p.read_text() for p in tmp_path.glob("sagips-*.out"))
    assert job.returncode == 0, job.stderr + logs[-3000:]
    s = summary(tmp_path / "outputs" / "ranks=2,ranks_per_node=2,seed=3")
    assert (s["status"], s["ranks"]) == ("complete", 2)


@pytest.mark.slurm
@pytest.mark.slow
def test_a_sweep_over_rank_counts_runs_through_slurm(slurm: None, tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    done = run_sagips("-m", "cluster=slurm", "ranks=1,2", "scale=smoke", f"hydra.sweep.dir={sweep}",
                      cwd=tmp_path, timeout=SWEEP_TIMEOUT_S)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    for ranks in (1, 2):
        s = summary(sweep / f"ranks={ranks},scale=smoke")
        assert (s["status"], s["ranks"]) == ("complete", ranks)
    scripts = [p.read_text() for p in (sweep / ".submitit").glob("*/.submission_file_*.sh")]
    scripts += [p.read_text() for p in (sweep / ".submitit").glob(".submission_file_*.sh")]
    shapes = sorted(re.findall(r"^#SBATCH --ntasks-per-node=\d+$", "\n".join(scripts), re.M))
    assert shapes == ["#SBATCH --ntasks-per-node=1", "#SBATCH --ntasks-per-node=2"], scripts  # two arrays
    assert all("--mpi=pmi2" in text for text in scripts)


def _job_id(sweep: Path) -> str | None:
    folders = [p.name for p in (sweep / ".submitit").glob("*") if p.is_dir()]
    return folders[0] if folders else None


def _squeue(job_id: str) -> str:
    return subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T %r"],
                          capture_output=True, text=True).stdout.strip()  # fmt: skip


@contextmanager
def sweep_in_background(
    tmp_path: Path, sweep: Path, *overrides: str
) -> Iterator[tuple[subprocess.Popen, Path]]:
    """``sagips -m cluster=slurm OVERRIDES`` in the background -> (process, its log). At the end,
    whatever still runs is stopped, the job in Slurm too."""
    log = tmp_path / "sweep.log"
    args = ("-m", "cluster=slurm", *overrides, f"hydra.sweep.dir={sweep}")
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "sagips", *args], cwd=tmp_path, stdout=out, stderr=out)
    try:
        yield proc, log
    finally:
        if proc.poll() is None:
            proc.kill()
        if (job_id := _job_id(sweep)) and _squeue(job_id):
            subprocess.run(["scancel", job_id])


@pytest.mark.slurm
@pytest.mark.slow
def test_a_preempted_job_is_requeued_and_resumes(slurm: None, tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    run = sweep / "ranks=2"  # train.* keys a resume may change do not name the folder
    overrides = ("ranks=2", "train.epochs=400", "train.checkpoint_every=50")
    with sweep_in_background(tmp_path, sweep, *overrides) as (proc, log):
        wait_for(lambda: ck.resume_epoch(run, 2) >= 50, SWEEP_TIMEOUT_S, "the first checkpoints")
        job_id = _job_id(sweep)
        assert job_id is not None
        first = ck.generator_path(run, 0, 1).stat().st_mtime_ns
        # What Slurm sends before it preempts a job; submitit's handler requeues it.
        subprocess.run(["scancel", "--signal=USR2", job_id], check=True)
        wait_for(lambda: _squeue(job_id).startswith("PENDING"), 120, "the requeue")
        # Slurm holds a requeued job for two minutes; a test need not wait for that.
        subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], check=True)
        assert proc.wait(timeout=SWEEP_TIMEOUT_S) == 0, log.read_text()[-3000:]
    s = summary(run)
    assert s["status"] == "complete" and s["resumed_from_epoch"] >= 50
    assert ck.generator_path(run, 0, 1).stat().st_mtime_ns == first  # not retrained from scratch


@pytest.mark.slurm
@pytest.mark.slow
def test_a_cancelled_job_ends_the_sweep_with_one_line_naming_it(slurm: None, tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    run = sweep / "ranks=1"
    with sweep_in_background(
        tmp_path, sweep, "ranks=1", "train.epochs=100000", "train.checkpoint_every=50"
    ) as (
        proc,
        log,
    ):
        wait_for(lambda: ck.resume_epoch(run, 1) >= 1, SWEEP_TIMEOUT_S, "the job to train")
        job_id = _job_id(sweep)
        assert job_id is not None
        subprocess.run(["scancel", job_id], check=True)
        assert proc.wait(timeout=sl.POLL_S + sl.RESULT_GRACE_S + 60) == 1, log.read_text()[-3000:]
    last = log.read_text().strip().splitlines()[-1]
    assert last.startswith(f"sagips: error: Slurm job {job_id} (#0 "), last
    assert "ended without a result" in last, last
    assert not ck.summary_path(run).exists()
