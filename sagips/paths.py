"""Where the shipped files are: the config tree and the job-script templates.

An installed wheel carries them in ``sagips/_data/`` (setup.py copies them there at
build time); a source checkout, or an editable install of one, has them at the top
of the repository, which stays their source of truth.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
_ROOTS = (PACKAGE / "_data", PACKAGE.parent)


def _shipped(relative: str) -> Path:
    for root in _ROOTS:
        if (root / relative).exists():
            return root / relative
    raise FileNotFoundError(f"{relative} is neither in {_ROOTS[0]} nor in {_ROOTS[1]}: a broken install")


def conf_dir() -> Path:
    """The Hydra config tree (``conf/``, with the studies as ``conf/experiment/``)."""
    return _shipped("conf")


def template(name: str) -> Path:
    """A job-script template: ``sagips.pbs`` (filled in by ``cluster=pbs``) or ``sagips.sbatch``."""
    return _shipped(f"slurm/{name}")
