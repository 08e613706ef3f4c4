"""Build hook: the config tree, the studies and the job-script templates travel inside the wheel.

The repository's top-level ``conf/``, ``experiments/`` (``conf/experiment`` links to it) and
``slurm/`` templates stay the source of truth; a build copies them into ``sagips/_data/``,
where ``sagips.paths`` finds them in an installed package. An editable install reads them
from the checkout instead. Everything else is declared in pyproject.toml.
"""

from pathlib import Path
from shutil import copy2, copytree

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
TEMPLATES = ("sagips.pbs", "sagips.sbatch")


class BuildPyWithData(build_py):
    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return
        data = Path(self.build_lib) / "sagips" / "_data"
        # symlinks=False: conf/experiment -> ../experiments lands as real files.
        copytree(ROOT / "conf", data / "conf", symlinks=False, dirs_exist_ok=True)
        (data / "slurm").mkdir(parents=True, exist_ok=True)
        for name in TEMPLATES:
            copy2(ROOT / "slurm" / name, data / "slurm" / name)


setup(cmdclass={"build_py": BuildPyWithData})
