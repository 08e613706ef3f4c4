"""``cluster=slurm``: a sweep's jobs go to Slurm through hydra-submitit-launcher; srun starts each MPI world.

Submission side (the ``sagips -m`` process): hydra-submitit-launcher submits a
sweep as one job array with one set of resources. ``SlurmSweep``, a Hydra
callback that runs before the launcher exists, composes the sweep's jobs, works
out the resources they need (nodes = ranks / ranks_per_node, one task per rank,
``srun --mpi=cluster.mpi``) and hands them to the launcher, or stops the sweep
with one line when its jobs need different resources (a sweep over rank
counts: one sweep per count).

Job side: srun starts ``ranks`` tasks and Hydra's task function runs in every
one of them; each task is one MPI rank (``run_in_allocation``). A time-out or a
preemption makes submitit call the launcher's ``checkpoint``, which requeues the
same job; the requeued job finds its run folder unfinished and resumes from its
newest complete set of checkpoints.
"""

from __future__ import annotations

import os
import shlex
import sys
import traceback
from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

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


def job_resources(cfg: DictConfig) -> dict[str, Any]:
    """The launcher parameters of one job: ``hydra.launcher`` plus the shape of its MPI world."""
    params = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    params.update(
        nodes=cfg.ranks // cfg.ranks_per_node,
        tasks_per_node=cfg.ranks_per_node,
        srun_args=[f"--mpi={cfg.cluster.mpi}", "--kill-on-bad-exit=1", *cfg.cluster.srun_extra],
        setup=[*cfg.cluster.setup, DROP_STALE_SHM],
    )
    return params


def _may_size(override: str) -> bool:
    return override.lstrip("+~").split("=", 1)[0].split(".", 1)[0] not in _NEVER_SIZE


def sweep_configs(config: DictConfig) -> list[DictConfig]:
    """A config for each way the sweep's jobs may differ in size (composing every job costs seconds).

    The jobs are expanded from ``hydra.sweeper.params`` and the command line as the basic sweeper does.
    """
    loader = GlobalHydra.instance().config_loader()
    params = [f"{k}={v}" for k, v in (config.hydra.sweeper.get("params") or {}).items()]
    parsed = OverridesParser.create(config_loader=loader).parse_overrides(
        params + list(config.hydra.overrides.task)
    )
    (jobs,) = BasicSweeper.split_arguments(parsed, None)
    kinds = dict.fromkeys(tuple(o for o in job if _may_size(o)) for job in jobs)
    return [loader.load_sweep_config(config, list(kind)) for kind in kinds]


def size_mismatch(configs: list[DictConfig], wanted: list[dict[str, Any]]) -> str | None:
    """Why one job array cannot hold these jobs, or None when they all want the same resources."""
    for cfg, params in zip(configs, wanted):
        if params != wanted[0]:
            keys = ", ".join(k for k in params if params[k] != wanted[0].get(k))
            first = configs[0].ranks
            return (f"cluster=slurm submits a sweep as one job array of one size, but ranks={first} and "
                    f"ranks={cfg.ranks} need different {keys}: run one sweep per rank count "
                    f"(add e.g. ranks={first})")  # fmt: skip
    return None


class SlurmSweep(Callback):
    """Sizes the sweep's job array from its jobs' configs before hydra-submitit-launcher starts."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        configs = sweep_configs(config)
        wanted = [job_resources(c) for c in configs]
        if problem := size_mismatch(configs, wanted):
            print(f"sagips: error: {problem}", file=sys.stderr)
            sys.exit(2)
        with read_write(config.hydra.launcher), open_dict(config.hydra.launcher):
            config.hydra.launcher.merge_with(wanted[0])


def _step_tasks() -> int | None:
    value = os.environ.get("SLURM_STEP_NUM_TASKS") or os.environ.get("SLURM_NTASKS")
    return int(value) if value else None


def run_in_allocation(cfg: DictConfig, run_dir: Path) -> None:
    """Be one rank of the job: every task of the srun step runs this, and the step is the MPI world.

    Works under hydra-submitit-launcher and under a hand-written ``srun sagips cluster=slurm ...``.
    """
    from sagips.launch.runner import JobFailed

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
