"""``cluster=pbs``: write the run's PBS Pro job script and submit it (Polaris, where the paper ran).

The script is ``slurm/sagips.pbs`` with its ``${...}`` fields filled from the
config; it starts the ranks with ``mpiexec -n N --ppn K ... python -m mpi4py -m
sagips.worker RUN``, and the ranks read the config that the runner already wrote
into the run folder. Without ``qsub`` on PATH the script is only written, and the
log says how to submit it.
"""

from __future__ import annotations

import logging
import shlex
import shutil
import string
import subprocess
import sys
from pathlib import Path

from omegaconf import DictConfig

from sagips.errors import JobFailed
from sagips.paths import template

log = logging.getLogger("sagips")
SCRIPT = "job.pbs"
JOB_ID = "job.pbs.id"  # the PBS job id of the last submission


def render(cfg: DictConfig, run_dir: Path) -> str:
    """The job script of one run: the template with this run's resources and paths."""
    c = cfg.cluster
    directives = ([f"#PBS -A {c.account}"] if c.account else []) + [f"#PBS {d}" for d in c.directives]
    return string.Template(template("sagips.pbs").read_text()).substitute(
        queue=c.queue, nodes=cfg.ranks // cfg.ranks_per_node, cpus_per_node=c.cpus_per_node,
        gpus_per_node=c.gpus_per_node, walltime=c.walltime, filesystems=c.filesystems,
        run_dir=run_dir, run_dir_q=shlex.quote(str(run_dir)), directives="\n".join(directives),
        setup="\n".join(c.setup), mpiexec=shlex.quote(c.mpiexec), ranks=cfg.ranks,
        ranks_per_node=cfg.ranks_per_node, mpiexec_args=shlex.join(str(a) for a in c.mpiexec_args),
        python=shlex.quote(sys.executable),
    )  # fmt: skip


def _queued(run_dir: Path) -> str | None:
    """The id of this run's earlier PBS job while PBS still knows it as queued or running."""
    id_file = run_dir / JOB_ID
    qstat = shutil.which("qstat")
    if not id_file.exists() or qstat is None:
        return None
    job_id = id_file.read_text().strip()
    done = subprocess.run([qstat, job_id], capture_output=True).returncode  # finished jobs: unknown
    return None if done else job_id


def submit(cfg: DictConfig, run_dir: Path) -> None:
    """Write RUN/job.pbs; qsub it unless qsub is missing or the run is already queued."""
    run_dir = Path(run_dir).resolve()
    if job_id := _queued(run_dir):
        log.info("%s is already queued or running as PBS job %s", run_dir, job_id)
        return
    script = run_dir / SCRIPT
    script.write_text(render(cfg, run_dir))
    qsub = shutil.which(cfg.cluster.qsub) if cfg.cluster.qsub else None
    if qsub is None:
        log.info("wrote %s; submit it on the PBS login node with: qsub %s", script, shlex.quote(str(script)))
        return
    done = subprocess.run([qsub, str(script)], cwd=run_dir, capture_output=True, text=True)
    if done.returncode:
        raise JobFailed(f"job {run_dir}: qsub failed (exit {done.returncode}): {done.stderr.strip()}")
    job_id = done.stdout.strip()
    (run_dir / JOB_ID).write_text(job_id + "\n")
    log.info("submitted %s as PBS job %s", run_dir, job_id)
