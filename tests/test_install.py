"""A wheel install, not an editable one (issue 12 item 1): the wheel carries the config tree, the
studies and the job-script templates, and every command works from a folder unrelated to the source.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import needs_mpi

REPO = Path(__file__).resolve().parents[1]
TORCH = "torch==2.13.0"  # the build this machine keeps on disk; an open range could pull a CUDA build
pytestmark = [pytest.mark.slow, needs_mpi]


def pip(python: Path, *args: str) -> None:
    done = subprocess.run([str(python), "-m", "pip", "--disable-pip-version-check", *args],
                          capture_output=True, text=True, timeout=1200)  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh virtual environment with the wheel built from a copy of the source: its bin folder."""
    root = tmp_path_factory.mktemp("install")
    source = shutil.copytree(REPO, root / "source", ignore=shutil.ignore_patterns(
        ".git", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", "outputs", "multirun"))  # fmt: skip
    pip(Path(sys.executable), "wheel", "--no-deps", "-w", str(root / "dist"), str(source))
    (wheel,) = (root / "dist").glob("sagips-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for shipped in ("sagips/_data/conf/config.yaml", "sagips/_data/conf/experiment/table4_convergence.yaml",
                    "sagips/_data/conf/hydra/help/sagips.yaml", "sagips/_data/slurm/sagips.pbs",
                    "sagips/_data/slurm/sagips.sbatch",
                    "hydra_plugins/sagips_launcher/launchers.py",
                    "sagips/scaling_model/profiles/local.yaml"):  # fmt: skip
        assert shipped in names, shipped
    subprocess.run([sys.executable, "-m", "venv", str(root / "venv")], check=True)
    python = root / "venv" / "bin" / "python"
    pip(python, "install", "-q", TORCH)
    pip(python, "install", "-q", f"{wheel}[mpi]")
    return python.parent


def command(bin_dir: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin"}
    env.pop("PYTHONPATH", None)
    done = subprocess.run(list(args), cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_the_installed_commands_work_from_any_folder(installed: Path, tmp_path: Path) -> None:
    where = command(installed, tmp_path, "python", "-c", "import sagips.paths as p; print(p.conf_dir())")
    assert where.stdout.startswith(str(installed.parent)), where.stdout  # the wheel's copy, not the source
    command(installed, tmp_path, "sagips", "ranks=2")
    summary = (tmp_path / "outputs" / "ranks=2" / "summary.json").read_text()
    assert '"status": "complete"' in summary
    command(installed, tmp_path, "sagips", "-m", "train.epochs=2", "seed=0,1")  # sagips's own sweep launcher
    assert all((tmp_path / "multirun" / "sweep" / f"seed={s}" / "summary.json").exists() for s in (0, 1))
    study = command(installed, tmp_path, "sagips", "experiment=table4_convergence", "--cfg", "job")
    assert "study: table4_convergence" in study.stdout
    command(installed, tmp_path, "sagips", "cluster=pbs", "cluster.qsub=null", "hydra.run.dir=pbs")
    assert "#PBS -l select=1:" in (tmp_path / "pbs" / "job.pbs").read_text()
    command(installed, tmp_path, "sagips-analyze", "outputs/ranks=2", "--out", "analysis")
    assert (tmp_path / "analysis" / "table4.md").exists()
    assert "sagips-bench" in command(installed, tmp_path, "sagips-bench", "--help").stdout
