"""``cluster=slurm``: a sweep's jobs go to Slurm through hydra-submitit-launcher; srun starts each MPI world.

Submission side (the ``sagips -m`` process, ``launch``): the jobs are grouped by the
resources they ask for (nodes = ranks / ranks_per_node, one task per rank, ``srun
--mpi=cluster.mpi``, and every ``hydra.launcher`` setting), and each group goes to
Slurm as one job array, all of them at once; a sweep over rank counts is several
arrays. The launcher then waits for every job's result, watching the jobs with
``squeue`` (no accounting database needed): a job that left the queue without a
result ends with a one-line error naming it instead of being waited for forever.

Job side: srun starts ``ranks`` tasks and Hydra's task function runs in every
one of them; each task is one MPI rank (``run_in_allocation``). A time-out or a
preemption makes submitit call the launcher's ``checkpoint``, which requeues the
same job; the requeued job finds its run folder unfinished and resumes from its
newest complete set of checkpoints.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import shlex
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from omegaconf import DictConfig, OmegaConf

from sagips.config import validate_world
from sagips.errors import ConfigError, JobFailed, Stopped
from sagips.launch import shm


def drop_stale_shm(folder: Path = shm.SHM) -> list[Path]:
    """Remove this user's MPICH shared-memory segments that no process maps; returns them.

    MPICH names a node's segment after the Slurm job step, which a requeued job repeats: the
    killed run's segment is still there, and the new ranks would attach to it and fail in
    MPI_Init. A restarted job runs this on every node first (``DROP_STALE_SHM``).
    """
    return shm.remove_unmapped(shm.segments("mpich_shm_*", folder))


# (No ${...} here: the line passes through OmegaConf, which would read it as an interpolation.)
DROP_STALE_SHM = (f'if [ "0$SLURM_RESTART_COUNT" -gt 0 ]; then srun --ntasks-per-node=1 --mpi=none '
                  f"{shlex.quote(sys.executable)} -m sagips.launch.slurm drop-stale-shm; fi")  # fmt: skip
# Keys that never change what a job asks Slurm for: jobs that differ only in these share a size.
_NEVER_SIZE = ("seed", "h", "train", "proxy", "transport")
# squeue states of a job that may still produce its result (a preempted job is requeued).
ACTIVE = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "STOPPED", "PREEMPTED",
          "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "RESIZING", "SIGNALING", "STAGE_OUT"}  # fmt: skip
POLL_S = 5.0  # squeue at most this often
RESULT_GRACE_S = 30.0  # a job out of the queue this long without a result file has none coming

log = logging.getLogger(__name__)


def job_resources(cfg: DictConfig) -> dict[str, Any]:
    """The launcher parameters of one job: ``hydra.launcher`` plus the shape of its MPI world."""
    params = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    params.pop("_target_", None)
    params.update(
        nodes=cfg.ranks // cfg.ranks_per_node,
        tasks_per_node=cfg.ranks_per_node,
        srun_args=[f"--mpi={cfg.cluster.mpi}", "--kill-on-bad-exit=1", *cfg.cluster.srun_extra],
        setup=[*cfg.cluster.setup, DROP_STALE_SHM],
    )
    return params


def _may_size(override: str) -> bool:
    return override.lstrip("+~").split("=", 1)[0].split(".", 1)[0] not in _NEVER_SIZE


def jobs_resources(job_overrides: Sequence[Sequence[str]],
                   compose: Callable[[list[str]], DictConfig]) -> list[dict[str, Any]]:  # fmt: skip
    """Each job's launcher parameters; raises ``ConfigError`` for a job whose size is bad (the
    rest of a job's config is checked where it runs).

    Jobs that differ only in keys that never change their size share one composed
    config (composing every job of a large sweep would cost seconds each).
    """
    by_kind: dict[tuple[str, ...], dict[str, Any]] = {}
    for overrides in job_overrides:
        kind = tuple(o for o in overrides if _may_size(o))
        if kind not in by_kind:
            cfg = compose(list(kind))
            validate_world({key: OmegaConf.select(cfg, key) for key in ("ranks", "ranks_per_node")})
            by_kind[kind] = job_resources(cfg)
    return [by_kind[tuple(o for o in overrides if _may_size(o))] for overrides in job_overrides]


def by_shape(resources: list[dict[str, Any]]) -> list[list[int]]:
    """The jobs (indices) grouped by identical resources: one job array each, in order of first use."""
    groups: dict[str, list[int]] = {}
    for i, params in enumerate(resources):
        groups.setdefault(json.dumps(params, sort_keys=True), []).append(i)
    return list(groups.values())


def _submit(launcher: Any, params: dict[str, Any], jobs: list[tuple[int, list[str]]]) -> list[Any]:
    """One job array of ``jobs`` (number, overrides) with ``params``, as hydra-submitit-launcher submits."""
    import submitit
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    init_keys = {"submitit_folder", "max_num_timeout"}
    executor = submitit.AutoExecutor(cluster="slurm", folder=params["submitit_folder"],
                                     slurm_max_num_timeout=params["max_num_timeout"])  # fmt: skip
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()
                                  if k not in init_keys})  # fmt: skip
    state = Singleton.get_state()
    calls = [(overrides, "hydra.sweep.dir", num, f"job_id_for_{num}", state) for num, overrides in jobs]
    return executor.map_array(launcher, *zip(*calls))


def squeue_states() -> dict[str, str] | None:
    """The state of this user's jobs that Slurm still knows (``123_4``: array task), or None when
    squeue does not answer."""
    try:
        out = subprocess.run(["squeue", "-h", "-r", "-t", "all", "-o", "%i %T", "-u", getpass.getuser()],
                             capture_output=True, text=True, timeout=60)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode:
        return None
    return dict(line.split()[:2] for line in out.stdout.splitlines() if len(line.split()) >= 2)


def _failed(overrides: list[str], message: str) -> JobReturn:
    log.error("%s", message)
    ret = JobReturn(overrides=overrides, status=JobStatus.FAILED)
    ret.return_value = JobFailed(message)
    return ret


def _result(job: Any, overrides: list[str], label: str) -> JobReturn:
    try:
        return job.results()[0]
    except Exception as exc:  # it failed outside the task function: submitit's traceback
        last = next((ln for ln in reversed(str(exc).splitlines()) if ln.strip()), type(exc).__name__)
        return _failed(overrides, f"Slurm job {job.job_id} ({label}) failed: {last.strip()}")


def wait_all(jobs: list[Any], overrides: list[list[str]], labels: list[str]) -> list[JobReturn]:
    """Every job's result, as it arrives; a job that ended without one is reported after
    ``RESULT_GRACE_S`` (a result file may reach a shared file system late)."""
    results: dict[int, JobReturn] = {}
    gone: dict[int, tuple[float, str]] = {}  # job -> (since when, its last state) out of the queue
    next_poll = 0.0
    while len(results) < len(jobs):
        for i, job in enumerate(jobs):
            if i not in results and job.paths.result_pickle.exists():
                results[i] = _result(job, overrides[i], labels[i])
        now = time.monotonic()
        if now >= next_poll and (states := squeue_states()) is not None:
            next_poll = now + POLL_S
            for i, job in enumerate(jobs):
                state = states.get(job.job_id, "no longer in the queue")
                if state in ACTIVE:
                    gone.pop(i, None)
                else:
                    gone[i] = (gone[i][0] if i in gone else now, state)
        for i, (since, state) in gone.items():
            job = jobs[i]
            if i not in results and now - since > RESULT_GRACE_S and not job.paths.result_pickle.exists():
                message = f"Slurm job {job.job_id} ({labels[i]}) ended without a result ({state})"
                results[i] = _failed(overrides[i], f"{message}; its log: {job.paths.stderr}")
        if len(results) < len(jobs):
            time.sleep(1.0)
    return [results[i] for i in range(len(jobs))]


def launch(launcher: Any, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list[JobReturn]:
    """Submit the sweep, one job array per resource shape, and wait for every job (``Launcher.launch``)."""
    config = launcher.config
    overrides = [list(o) for o in job_overrides]
    loader = launcher.hydra_context.config_loader
    try:
        resources = jobs_resources(overrides, lambda o: loader.load_sweep_config(config, o))
    except ConfigError as exc:
        print(f"sagips: error: {exc}", file=sys.stderr)
        sys.exit(2)
    sweep_dir = Path(str(config.hydra.sweep.dir))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    if "mode" in config.hydra.sweep:
        os.chmod(sweep_dir, mode=int(str(config.hydra.sweep.mode), 8))
    groups = by_shape(resources)
    log.info("Submitit 'slurm' sweep output dir : %s (%d jobs, %d job arrays)", sweep_dir, len(overrides),
             len(groups))  # fmt: skip
    jobs: list[Any] = [None] * len(overrides)
    labels = [f"#{initial_job_idx + i} {' '.join(filter_overrides(o))}" for i, o in enumerate(overrides)]
    for members in groups:
        shape = resources[members[0]]
        array = _submit(launcher, shape, [(initial_job_idx + i, overrides[i]) for i in members])
        log.info("\tjob array %s: %d nodes x %d tasks", array[0].job_id.split("_")[0], shape["nodes"],
                 shape["tasks_per_node"])  # fmt: skip
        for i, job in zip(members, array):
            jobs[i] = job
            log.info("\t\t%s", labels[i])
    try:
        return wait_all(jobs, overrides, labels)
    except KeyboardInterrupt:
        ids = " ".join(sorted({job.job_id.split("_")[0] for job in jobs}))
        message = (f"stopped waiting; the Slurm jobs go on (scancel {ids} stops them); once they have "
                   "ended, the same command skips the finished jobs and resumes the others")  # fmt: skip
        raise Stopped(signal.SIGINT, message) from None


def _step_tasks() -> int | None:
    value = os.environ.get("SLURM_STEP_NUM_TASKS") or os.environ.get("SLURM_NTASKS")
    return int(value) if value else None


def run_in_allocation(cfg: DictConfig, run_dir: Path) -> None:
    """Be one rank of the job: every task of the srun step runs this, and the step is the MPI world.

    Works under hydra-submitit-launcher and under a hand-written ``srun sagips cluster=slurm ...``.
    """
    tasks = _step_tasks()
    if tasks is None:
        raise JobFailed("cluster=slurm runs inside a Slurm job: submit with `sagips -m cluster=slurm ...` "
                        "or start `srun sagips cluster=slurm ...` in an allocation")  # fmt: skip
    if tasks != cfg.ranks:
        raise JobFailed(f"ranks={cfg.ranks} but this Slurm step has {tasks} tasks: one sweep per rank "
                        f"count with `sagips -m cluster=slurm`, or srun -n {cfg.ranks} by hand")  # fmt: skip
    from mpi4py import MPI

    from sagips import worker

    MPI.COMM_WORLD.Barrier()  # every task has written the run folder's config before rank 0 tidies it
    try:
        worker.run(run_dir, cfg)
    except Exception:
        # As under `python -m mpi4py`: one rank's failure ends the whole MPI world, no rank hangs.
        traceback.print_exc()
        MPI.COMM_WORLD.Abort(1)


if __name__ == "__main__":  # srun ... python -m sagips.launch.slurm drop-stale-shm
    if sys.argv[1:] != ["drop-stale-shm"]:
        sys.exit("usage: python -m sagips.launch.slurm drop-stale-shm")
    for segment in drop_stale_shm():
        print(f"sagips: removed stale shared memory {segment}")
