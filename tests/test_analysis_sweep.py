"""``sagips-analyze`` and the notebooks on real small sweeps, checked against the checkpoints.

The sweep (smoke scale, 2 ranks, seeds 0-2, modes ensemble and arar) is trained
once for the module. The recomputation below loads the generators with torch
directly and follows section VI-A by hand: in ``mode=ensemble`` each rank is a
member, in ``mode=arar`` the ranks' mean is one member. A second sweep of one seed
(a study, two synchronous modes, one thread per rank) checks sigma n/a and that a
row of runs.csv retrains to the same residuals.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
import torch
from nbclient import NotebookClient
from omegaconf import OmegaConf

from sagips.analysis import analyze
from sagips.networks import Generator
from tests.conftest import run_sagips, summary

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("mpiexec") is None, reason="mpiexec not on PATH"),
]

NOISE = 64
NOISE_SEED = 1234  # documented in analysis/README.md
NOTEBOOKS = sorted((Path(__file__).parents[1] / "analysis" / "notebooks").glob("*.ipynb"))
TABLES = ("runs.csv", "checkpoints.csv", "residuals.csv", "subsamples.csv", "table4.md", "table4.csv",
          "scaling.csv")  # fmt: skip
COMMITTED = ("runs.csv", "residuals.csv", "scaling.csv", "subsamples.csv")  # what docs/results/ keeps
DRAWN = ("fig09_rmse_sigma.png", "fig10_ensemble_size.png", "fig13_14_residual_vs_time.png",
         "fig15_16_mean_sigma_vs_time.png")  # fmt: skip
SKIPPED = ("fig08_models.png", "fig11_total_time.png", "fig12_analysis_rate.png")
# (figures drawn, figures skipped) per notebook: one rank count here, so no Fig. 11/12, and no Fig. 8;
# convergence draws Fig. 13/14 twice (Tab. IV's study and the weak-scaling study).
NOTEBOOK_FIGURES = {"convergence": (3, 0), "ensembles": (2, 1), "scaling": (0, 2)}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("analysis_sweep")
    out = run_sagips("-m", "mode=ensemble,arar", "ranks=2", "seed=0,1,2", "scale=smoke",
                     f"hydra.sweep.dir={root / 'multirun'}", cwd=root, timeout=1200)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    return root / "multirun"


def analyze_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    cli = shutil.which("sagips-analyze")
    assert cli, "sagips-analyze is not installed (pip install -e .)"
    return subprocess.run([cli, *map(str, args), "--noise", str(NOISE)], capture_output=True, text=True,
                          timeout=600)  # fmt: skip


@pytest.fixture(scope="module")
def analysed(sweep: Path) -> tuple[Path, str]:
    out = sweep.parent / "analysis"
    done = analyze_cli(sweep, "--out", out)
    assert done.returncode == 0, done.stderr[-3000:]
    return out, done.stderr


@pytest.fixture(scope="module")
def tables_only(analysed: tuple[Path, str]) -> Path:
    """The analysis as committed to docs/results/: its tables, no run folder, no checkpoint."""
    folder = analysed[0].parent / "committed" / "smoke"
    folder.mkdir(parents=True)
    for name in COMMITTED:
        shutil.copy(analysed[0] / name, folder)
    return folder


@pytest.fixture(scope="module")
def one_seed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """Tab. IV's study with one seed (not the default 0) of two synchronous modes, one thread per rank.

    Returns the sweep folder, the analysis folder and the analysis log.
    """
    root = tmp_path_factory.mktemp("one_seed")
    sweep = root / "multirun"
    out = run_sagips("-m", "+experiment=table4_convergence", "mode=allreduce,arar_arar", "seed=1",
                     "train.threads=1", f"hydra.sweep.dir={sweep}", cwd=root, timeout=1200)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    done = analyze_cli(sweep, "--out", root / "analysis")
    assert done.returncode == 0, done.stderr[-3000:]
    return sweep, root / "analysis", done.stderr


def run_dirs(sweep: Path, mode: str) -> list[Path]:
    return sorted(sweep.glob(f"mode={mode},*"))


def predictions(run: Path, epoch: int) -> np.ndarray:
    """(ranks, k, 6) physical predictions of each rank's generator at ``epoch``."""
    cfg = OmegaConf.load(run / ".hydra" / "config.yaml")
    noise = torch.randn(NOISE, cfg.model.noise_dim, generator=torch.Generator().manual_seed(NOISE_SEED))
    lo, hi = np.array(cfg.proxy.pmin), np.array(cfg.proxy.pmax)
    out = []
    for rank in range(cfg.ranks):
        ck = torch.load(run / "checkpoints" / f"rank{rank}" / f"generator_{epoch:07d}.pt", weights_only=True)
        g = Generator(cfg.model.noise_dim, 6, cfg.model.hidden, cfg.model.blocks)
        g.load_state_dict(ck["state_dict"])
        with torch.no_grad():
            out.append(lo + g(noise).double().numpy() * (hi - lo))
    return np.stack(out)


def test_writes_every_output_the_runs_allow(analysed: tuple[Path, str]) -> None:
    out, log = analysed
    for name in TABLES + DRAWN:
        assert (out / name).stat().st_size > 0, name
    for name in DRAWN:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for name in SKIPPED:
        assert not (out / name).exists()
        assert sum(f"skipping {name}" in line for line in log.splitlines()) == 1


@pytest.mark.parametrize("mode", ["ensemble", "arar"])
def test_residuals_match_a_recomputation_from_the_checkpoints(
    sweep: Path, analysed: tuple[Path, str], mode: str
) -> None:
    residuals = pd.read_csv(analysed[0] / "residuals.csv")
    row = residuals[(residuals["mode"] == mode)].sort_values("checkpoint").iloc[-1]
    runs = run_dirs(sweep, mode)
    truth = np.array(OmegaConf.load(runs[0] / ".hydra" / "config.yaml").proxy.truth)
    per_run = [predictions(run, int(row["epoch"])) for run in runs]
    if mode == "ensemble":  # every rank is a GAN of its own
        members = np.concatenate(per_run)
    else:  # the ranks of one distributed GAN: their mean is one member
        members = np.stack([p.mean(axis=0) for p in per_run])
    assert row["members"] == len(members) == (6 if mode == "ensemble" else 3)
    mean = members.mean(axis=0)  # eq. (7), per noise vector
    sigma = np.sqrt(((members - mean) ** 2).mean(axis=0))  # eq. (8)
    r = (truth - mean.mean(axis=0)) / truth  # eq. (6) of the batch average
    np.testing.assert_allclose(row[[f"r_{i}" for i in range(6)]].to_numpy(float), r, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(
        row[[f"sigma_{i}" for i in range(6)]].to_numpy(float), sigma.mean(axis=0) / np.abs(truth), rtol=1e-6
    )


def test_checkpoints_csv_matches_each_generator(sweep: Path, analysed: tuple[Path, str]) -> None:
    table = pd.read_csv(analysed[0] / "checkpoints.csv")
    assert len(table) == 6 * 2 * 3 and sorted(table["epoch"].unique()) == [1, 10, 20]
    run = run_dirs(sweep, "arar")[1]
    row = table[(table["run"] == f"{run.name}") & (table["rank"] == 1) & (table["epoch"] == 10)]
    expected = predictions(run, 10)[1].mean(axis=0)
    np.testing.assert_allclose(row[[f"p_hat_{i}" for i in range(6)]].to_numpy(float)[0], expected, rtol=1e-6)


def test_scaling_and_table4_agree_with_the_summaries(sweep: Path, analysed: tuple[Path, str]) -> None:
    out = analysed[0]
    scaling = pd.read_csv(out / "scaling.csv").set_index("mode")
    for mode in ("ensemble", "arar"):
        summaries = [summary(run) for run in run_dirs(sweep, mode)]
        # The trainer's own eq. (9) figure, averaged over the seeds.
        assert scaling.loc[mode, "analysis_rate"] == pytest.approx(
            np.mean([s["analysis_rate"] for s in summaries]), rel=1e-9
        )
        assert scaling.loc[mode, "total_train_time_s"] == pytest.approx(
            np.mean([s["total_train_time_s"] for s in summaries]), rel=1e-9
        )
    residuals = pd.read_csv(out / "residuals.csv")
    final = residuals[residuals["checkpoint"] == residuals["checkpoint"].max()].set_index("mode")
    md = (out / "table4.md").read_text()
    assert md.splitlines()[0] == "| Residual r̂_i (eq. 6) | Conv. ARAR [arar] | ensemble [ensemble] |"
    cells = [f"{final.loc[m, 'r_0']:.3f} ± {final.loc[m, 'sigma_0']:.3f}" for m in ("arar", "ensemble")]
    assert f"| r̂_0 | {cells[0]} | {cells[1]} |" in md


def test_library_call_gives_the_cli_numbers(sweep: Path, analysed: tuple[Path, str]) -> None:
    again = analyze([sweep], noise=NOISE).residuals
    pd.testing.assert_frame_equal(again, pd.read_csv(analysed[0] / "residuals.csv"), check_exact=False)


def run_notebook(path: Path, results: Path) -> tuple[int, str]:
    """Execute the notebook with every results path of its parameters cell set to ``results``.

    Returns the number of images drawn and the text it logged.
    """
    nb = nbformat.read(path, as_version=4)
    params = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    paths = dict(re.findall(r'^([A-Z_0-9]+) = "([^"]*)"', params.source, flags=re.M))
    assert paths and all(v.startswith("../../docs/results/cpu/") for v in paths.values())  # committed ones
    params.source = "\n".join([*(f"{name} = {str(results)!r}" for name in paths), "NOISE = 16", "PARAM = 1"])
    NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    ).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    images = sum("image/png" in o.get("data", {}) for o in outputs)
    return images, "".join(o.get("text", "") for o in outputs if o.get("name") == "stderr")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_on_the_sweep(sweep: Path, path: Path) -> None:
    images, log = run_notebook(path, sweep)
    assert (images, log.count("skipping fig")) == NOTEBOOK_FIGURES[path.stem]


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_opens_the_committed_results_as_it_is(path: Path) -> None:
    """docs/results/cpu/ (docs/reproduction.md): the notebook's own paths, nothing re-run."""
    nb = nbformat.read(path, as_version=4)
    NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    ).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 2
    assert not [o for o in outputs if o.get("output_type") == "error"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_on_the_tables_alone(tables_only: Path, path: Path) -> None:
    images, log = run_notebook(path, tables_only)
    assert (images, log.count("skipping fig")) == NOTEBOOK_FIGURES[path.stem]


def test_figures_from_the_tables_alone_are_the_figures_from_the_runs(
    analysed: tuple[Path, str], tables_only: Path
) -> None:
    done = analyze_cli("--from-tables", tables_only)
    assert done.returncode == 0, done.stderr[-3000:]
    assert {p.name for p in tables_only.glob("*.png")} == set(DRAWN)
    assert (tables_only / "table4.md").read_text() == (analysed[0] / "table4.md").read_text()


# --- one seed: no sigma; runs.csv reruns ------------------------------------------------


def test_a_one_seed_sweep_reports_no_zero_sigma(one_seed: tuple[Path, Path, str]) -> None:
    _, out, log = one_seed
    md = (out / "table4.md").read_text()
    assert "± 0" not in md and "± n/a" in md
    assert md.splitlines()[0] == "| Residual r̂_i (eq. 6) | hvd [allreduce] | ARAR [arar_arar] |"
    assert sum("needs at least 2 members" in line for line in log.splitlines()) == 1
    assert pd.read_csv(out / "residuals.csv").filter(like="sigma_").isna().all().all()


def test_a_row_of_runs_csv_retrains_to_its_residuals(
    one_seed: tuple[Path, Path, str], tmp_path: Path
) -> None:
    out = one_seed[1]
    runs = pd.read_csv(out / "runs.csv")
    assert set(runs["study"]) == {"table4_convergence"} and len(runs) == 2
    row = runs[runs["mode"] == "arar_arar"].iloc[0]
    # The experiment stays in the command; the sweep's own values are those of this job.
    assert row["command"].startswith("sagips ")
    # (sagips takes +experiment=NAME as experiment=NAME, the form its defaults list expects)
    assert {"experiment=table4_convergence", "mode=arar_arar", "train.threads=1", "seed=1"} <= set(
        row["command"].split()
    )
    again = tmp_path / "again"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(f"{row['command']} hydra.run.dir={again}", shell=True, cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert analyze_cli(again, "--out", tmp_path / "out").returncode == 0
    rerun = pd.read_csv(tmp_path / "out" / "runs.csv").iloc[0]
    r = [f"r_{i}" for i in range(6)]
    # Synchronous ring, fixed threads, same seed: the same generator, bit for bit.
    np.testing.assert_allclose(rerun[r].to_numpy(float), row[r].to_numpy(float), rtol=0, atol=1e-6)
    assert rerun["command"] == row["command"]


def test_there_are_notebooks() -> None:
    assert {p.name for p in NOTEBOOKS} >= {"ensembles.ipynb", "scaling.ipynb", "convergence.ipynb"}
