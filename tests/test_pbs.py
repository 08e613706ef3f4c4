"""``cluster=pbs`` (issue 4): the job script written into the run folder, its submission with
qsub (a stand-in qsub here: no PBS server is packaged for Debian), and the script itself
run the way PBS runs it, with PBS_O_WORKDIR, PBS_NODEFILE and PBS_JOBID set.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import run_sagips, summary

POLARIS = ("cluster=pbs", "mode=arar_arar", "ranks=8", "ranks_per_node=4", "cluster.account=MyProject")


def bin_dir(tmp_path: Path, **scripts: str) -> dict[str, str]:
    """An environment whose PATH has Python's folder and the given stand-in commands only."""
    folder = tmp_path / "bin"
    folder.mkdir(exist_ok=True)
    for name, body in scripts.items():
        (folder / name).write_text(f"#!/bin/sh\n{body}\n")
        (folder / name).chmod(0o755)
    return {"PATH": f"{folder}{os.pathsep}{Path(sys.executable).parent}"}


def test_the_script_asks_pbs_for_the_runs_resources(tmp_path: Path) -> None:
    run = tmp_path / "run"
    done = run_sagips(*POLARIS, f"hydra.run.dir={run}", cwd=tmp_path, env=bin_dir(tmp_path))
    assert done.returncode == 0, done.stderr
    assert f"qsub {run / 'job.pbs'}" in done.stderr  # no qsub here: how to submit it
    script = (run / "job.pbs").read_text()
    for line in ("#PBS -l select=2:ncpus=64:ngpus=4", "#PBS -l walltime=01:00:00", "#PBS -q debug",
                 "#PBS -l filesystems=home:eagle", "#PBS -A MyProject", 'cd "${PBS_O_WORKDIR}"',
                 f"mpiexec -n 8 --ppn 4 --depth=8 --cpu-bind=depth {sys.executable} -m mpi4py "
                 f"-m sagips.worker {run}"):  # fmt: skip
        assert line in script.splitlines(), line
    assert (run / ".hydra" / "config.yaml").exists()  # what the ranks will read


def test_qsub_submits_the_script_once(tmp_path: Path) -> None:
    run = tmp_path / "run"
    calls = tmp_path / "qsub.calls"
    env = bin_dir(tmp_path, qsub=f'echo "$PWD $*" >> {calls}; echo 4242.polaris-pbs', qstat="exit 0")
    first = run_sagips(*POLARIS, f"hydra.run.dir={run}", cwd=tmp_path, env=env)
    assert first.returncode == 0, first.stderr
    assert "as PBS job 4242.polaris-pbs" in first.stderr
    assert calls.read_text() == f"{run} {run / 'job.pbs'}\n"
    again = run_sagips(*POLARIS, f"hydra.run.dir={run}", cwd=tmp_path, env=env)
    assert again.returncode == 0, again.stderr
    assert "already queued or running as PBS job 4242.polaris-pbs" in again.stderr
    assert len(calls.read_text().splitlines()) == 1


@pytest.mark.skipif(shutil.which("mpiexec") is None, reason="mpiexec not on PATH")
def test_the_script_runs_a_two_rank_job_as_pbs_would(tmp_path: Path) -> None:
    run = tmp_path / "run"
    # MPICH's own mpiexec stands in for Polaris's: it takes --ppn, but binds with -bind-to.
    made = run_sagips("cluster=pbs", "ranks=2", f"cluster.mpiexec={shutil.which('mpiexec')}",
                      "cluster.mpiexec_args=[-bind-to,core]", f"hydra.run.dir={run}",
                      cwd=tmp_path, env=bin_dir(tmp_path))  # fmt: skip
    assert made.returncode == 0, made.stderr
    nodefile = tmp_path / "nodefile"
    nodefile.write_text(f"{socket.gethostname()}\n" * 2)
    pbs_env = {"PBS_O_WORKDIR": str(tmp_path), "PBS_NODEFILE": str(nodefile), "PBS_JOBID": "7.test"}
    job = subprocess.run(["bash", str(run / "job.pbs")], cwd="/", env={**os.environ, **pbs_env},
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert job.returncode == 0, job.stderr
    assert "PBS job 7.test on 1 node(s)" in job.stdout
    s = summary(run)
    assert (s["status"], s["ranks"]) == ("complete", 2)


def test_a_run_folder_with_a_space_is_quoted_for_pbs_and_the_shell(tmp_path: Path) -> None:
    run = tmp_path / "my runs" / "run"
    done = run_sagips(*POLARIS, f"hydra.run.dir={run}", cwd=tmp_path, env=bin_dir(tmp_path))
    assert done.returncode == 0, done.stderr
    script = (run / "job.pbs").read_text().splitlines()
    assert f'#PBS -o "{run}/job.log"' in script
    assert any(line.endswith(f"-m sagips.worker '{run}'") for line in script)
    assert subprocess.run(["bash", "-n", str(run / "job.pbs")]).returncode == 0
