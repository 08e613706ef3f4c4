"""``sagips-analyze`` as a user runs it (a subprocess), on synthetic run folders: no MPI, seconds.

Issue 14 items 5-8: sigma of one member, a read-only run folder, one name per group
everywhere, --param, plain argument errors and counts; issue 11: runs.csv, figures
redrawn from the tables alone, per-study outputs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from matplotlib.lines import Line2D
from matplotlib.patches import Ellipse

from sagips.analysis import analyze, draw, read_tables
from sagips.analysis.outputs import FIGURE_FILES
from tests.test_analysis_unit import make_run

CLI = shutil.which("sagips-analyze")
pytestmark = pytest.mark.skipif(CLI is None, reason="sagips-analyze is not installed (pip install -e .)")
TABLES = {"runs.csv", "checkpoints.csv", "residuals.csv", "scaling.csv", "subsamples.csv",
          "table4.csv", "table4.md"}  # fmt: skip


def analyze_cli(*args: str | Path, wrap: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*(wrap or []), CLI, *map(str, args)], capture_output=True, text=True, timeout=600)


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line]


@pytest.fixture
def modes(tmp_path: Path) -> Path:
    """A Tab. IV-like sweep: hvd and RMA-ARAR with three seeds, ARAR with one, a single-rank ensemble."""
    root = tmp_path / "multirun" / "table4"
    for seed in range(3):
        for mode in ("allreduce", "rma_arar_arar"):
            make_run(root, f"mode={mode},seed={seed}", [0.25, 0.75], mode=mode, seed=seed, noisy=True)
    make_run(root, "mode=arar_arar,seed=0", [0.25, 0.75], mode="arar_arar", noisy=True)
    for seed in range(2):
        make_run(root, f"mode=ensemble,ranks=1,seed={seed}", [0.5], seed=seed, noisy=True)
    return root


# --- item 5: one member has no sigma ---------------------------------------------------


def test_a_one_seed_sweep_reports_no_zero_sigma(tmp_path: Path) -> None:
    root = tmp_path / "multirun" / "one_seed"
    for mode in ("allreduce", "arar_arar"):
        make_run(root, f"mode={mode},seed=0", [0.25, 0.75], mode=mode, noisy=True)
    done = analyze_cli(root, "--out", tmp_path / "out", "--noise", "8")
    assert done.returncode == 0, done.stderr
    md = (tmp_path / "out" / "table4.md").read_text()
    assert "± 0" not in md and md.count("± n/a") == 12
    note = "n/a: sigma (eq. 8) needs at least 2 members"
    assert sum(line.startswith(note) for line in md.splitlines()) == 1
    # Said once on the terminal too, naming both groups.
    warned = [line for line in done.stderr.splitlines() if "needs at least 2 members" in line]
    assert len(warned) == 1 and "hvd [allreduce]" in warned[0] and "ARAR [arar_arar]" in warned[0]
    for name in ("residuals.csv", "table4.csv"):
        table = pd.read_csv(tmp_path / "out" / name)
        assert table.filter(like="sigma").isna().all().all(), name
    scaling = pd.read_csv(tmp_path / "out" / "scaling.csv")
    assert scaling[["total_train_time_s_std", "analysis_rate_std"]].isna().all().all()


def test_one_member_figures_draw_no_band_and_no_sigma_line(modes: Path) -> None:
    a = analyze([modes], noise=8)
    fig = draw(a, "fig13_14_residual_vs_time.png")
    panels = {ax.get_title(): ax for ax in fig.axes if ax.get_visible() and ax.get_title()}
    lonely = panels["ARAR [arar_arar] ranks=2, M=1"]
    assert not lonely.collections and any("n/a" in t.get_text() for t in lonely.texts)
    assert panels["hvd [allreduce] ranks=2, M=3"].collections  # the 1 sigma band
    fig = draw(a, "fig15_16_mean_sigma_vs_time.png")
    top = {ax.get_title(): ax for ax in fig.axes if ax.get_title()}
    assert not top["ARAR [arar_arar]"].lines or all(
        "arar_arar" not in line.get_label() for line in top["ARAR [arar_arar]"].lines
    )
    assert any("n/a" in t.get_text() for t in top["ARAR [arar_arar]"].texts)
    assert len(top["hvd [allreduce]"].lines) == 2  # its group and the single-GPU ensemble


# --- item 6: read-only run folder ------------------------------------------------------


def _read_only(folder: Path) -> list[str] | None:
    """A command prefix under which ``folder`` is read-only, or None where none works here."""
    if os.geteuid() != 0:
        for p in [folder, *folder.rglob("*")]:
            if p.is_dir():
                p.chmod(0o555)
        return []
    unshare = shutil.which("unshare")
    if unshare is None or subprocess.run([unshare, "-rm", "true"], capture_output=True).returncode:
        return None
    # root ignores file modes: a read-only bind mount in a user and mount namespace instead.
    script = f'mount --bind "{folder}" "{folder}" && mount -o remount,bind,ro "{folder}" && exec "$@"'
    return [unshare, "-rm", "sh", "-c", script, "sh"]


def test_a_read_only_run_folder_is_one_line_and_exit_2(tmp_path: Path) -> None:
    root = tmp_path / "ro"
    run = make_run(root, "mode=arar,seed=0", [0.25, 0.75], mode="arar")
    wrap = _read_only(root)
    if wrap is None:
        pytest.skip("no way to make a read-only folder here")
    try:
        done = analyze_cli(run, wrap=wrap)
    finally:
        for p in [root, *root.rglob("*")]:
            if not wrap and p.is_dir():
                p.chmod(0o755)  # as it was, so that pytest can clean up
    out = root / "mode=arar,seed=0_analysis"
    assert done.returncode == 2, done.stderr
    assert lines(done.stderr) == [
        f"sagips-analyze: error: cannot write the outputs to {out} "
        f"({'Read-only file system' if wrap else 'Permission denied'}); "
        "choose a writable folder with --out DIR"
    ]
    assert done.stdout == ""
    done = analyze_cli(run, "--out", tmp_path / "elsewhere", wrap=wrap)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "elsewhere" / "table4.md").is_file()


# --- item 7: one naming, --param, titles ------------------------------------------------


@pytest.mark.slow  # draws every figure more than once
def test_every_output_names_a_group_the_same_way(modes: Path, tmp_path: Path) -> None:
    done = analyze_cli(modes, "--out", tmp_path / "out", "--noise", "8")
    assert done.returncode == 0, done.stderr
    out = tmp_path / "out"
    names = ["hvd [allreduce]", "RMA-ARAR [rma_arar_arar]", "ARAR [arar_arar]", "ensemble [ensemble] ranks=1"]
    names = [f"{n} ranks=2" if "ranks" not in n else n for n in names]
    assert lines((out / "table4.md").read_text())[0] == f"| Residual r̂_i (eq. 6) | {' | '.join(names)} |"
    for csv in ("residuals.csv", "scaling.csv", "runs.csv", "checkpoints.csv"):
        assert list(dict.fromkeys(pd.read_csv(out / csv)["group"])) == names, csv
    assert set(pd.read_csv(out / "subsamples.csv")["group"]) == {names[0], names[1]}
    header = pd.read_csv(out / "table4.csv").columns
    assert list(header) == ["residual"] + [c for n in names for c in (n, f"{n} sigma")]
    # The figures use the same names, and each is titled with its study.
    a = read_tables(out)
    for filename in FIGURE_FILES:
        fig = draw(a, filename)
        if fig is None:
            continue
        assert fig.get_suptitle().endswith("study: table4"), filename
        shown = " ".join([ax.get_title() for ax in fig.axes] + [t.get_text() for ax in fig.axes
                         for t in (ax.get_legend().get_texts() if ax.get_legend() else [])])  # fmt: skip
        assert "mode=" not in shown, (filename, shown)
        assert any(n in shown or n.split(" ranks")[0] in shown for n in names), (filename, shown)


def test_param_picks_the_residual_of_figs_8_10_13_14(modes: Path, tmp_path: Path) -> None:
    done = analyze_cli(modes, "--out", tmp_path / "out", "--noise", "8", "--param", "3")
    assert done.returncode == 0, done.stderr
    a = read_tables(tmp_path / "out")
    fig = draw(a, "fig13_14_residual_vs_time.png", param=3)
    assert r"\hat r_3" in fig.axes[0].get_ylabel() and r"\hat r_3" in fig.get_suptitle()
    ax = fig.axes[0]
    group = a.residuals[a.residuals["group"] == ax.get_title().rsplit(",", 1)[0]]
    assert list(ax.lines[0].get_ydata()) == pytest.approx(list(group["r_3"]))
    fig = draw(a, "fig10_ensemble_size.png", param=3)
    assert r"\hat r_3" in fig.axes[1].get_ylabel()


def test_fig9_legend_has_an_artist_per_entry_and_explains_the_arrow(modes: Path, tmp_path: Path) -> None:
    # Three identical members: every sub-ensemble gives the same point, so no size has a contour.
    for seed in range(3):
        make_run(tmp_path / "same", f"seed={seed}", [0.5, 0.5], mode="arar", seed=seed)
    for root in (modes, tmp_path / "same"):
        fig = draw(analyze([root], noise=4), "fig09_rmse_sigma.png")
        for ax in fig.axes:
            legend = ax.get_legend()
            for text, handle in zip(legend.get_texts(), legend.legend_handles):
                label = text.get_text()
                if isinstance(handle, Line2D):  # a point or the arrow, drawn with a marker
                    assert handle.get_marker() not in (None, "None", ""), label
                else:
                    patch = next(p for p in ax.patches if p.get_label() == label)
                    assert isinstance(patch, Ellipse) and patch.width > 0, label
            assert "increasing M" in [t.get_text() for t in legend.get_texts()]


def test_fig12_draws_each_series_own_single_rank_rate(tmp_path: Path) -> None:
    for mode, time in (("arar", 1.0), ("arar_arar", 3.0)):
        for ranks in (1, 2):
            make_run(tmp_path, f"{mode}{ranks}", [0.5] * ranks, mode=mode, time_scale=time)
    fig = draw(analyze([tmp_path], noise=2), "fig12_analysis_rate.png")
    ax = fig.axes[0]
    dashed = [line for line in ax.lines if line.get_linestyle() == "--" and len(line.get_ydata()) == 2]
    series = {c.get_label(): c.lines[0] for c in ax.containers}  # the errorbar series
    # Eq. (9) at 1 rank: 100 events x 10 epochs / 4 s, and a third of that for the slower mode.
    assert sorted(line.get_ydata()[0] for line in dashed) == pytest.approx([250 / 3, 250])
    assert {line.get_color() for line in dashed} == {line.get_color() for line in series.values()}
    assert set(series) == {"Conv. ARAR [arar]", "ARAR [arar_arar]"}


# --- item 8: plain argument errors, counts ----------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--noise", "abc"], "--noise: 'abc' is not a positive integer"),
        (["--noise", "0"], "--noise: '0' is not a positive integer"),
        (["--param", "6"], "--param: '6' is not a parameter index 0..5"),
    ],
)
def test_bad_arguments_are_one_plain_line(modes: Path, args: list[str], message: str) -> None:
    done = analyze_cli(modes, *args)
    assert done.returncode == 2
    assert lines(done.stderr) == [f"sagips-analyze: error: {message} (see sagips-analyze --help)"]


def test_no_runs_is_one_line_and_exit_2(tmp_path: Path) -> None:
    done = analyze_cli(tmp_path)
    assert done.returncode == 2
    assert lines(done.stderr) == [
        f"sagips-analyze: error: no run folder (with .hydra/config.yaml) under {tmp_path}"
    ]
    assert not (tmp_path.parent / f"{tmp_path.name}_analysis").exists()


def test_counts_agree_with_their_nouns(modes: Path, tmp_path: Path) -> None:
    done = analyze_cli(modes, "--out", tmp_path / "out", "--noise", "2")
    assert "(1 rank x 3 checkpoints)" in done.stderr and "(2 ranks x 3 checkpoints)" in done.stderr
    assert "1 ranks" not in done.stderr and "1 members" not in done.stderr


# --- issue 11: runs.csv, tables alone, studies apart ------------------------------------


def test_runs_csv_has_one_row_per_run_with_its_command(modes: Path, tmp_path: Path) -> None:
    assert analyze_cli(modes, "--out", tmp_path / "out", "--noise", "8").returncode == 0
    runs = pd.read_csv(tmp_path / "out" / "runs.csv")
    r = [f"r_{i}" for i in range(6)]
    assert list(runs.columns[:14]) == ["study", "mode", "ranks", "ranks_per_node", "seed", "epochs", *r,
                                       "total_train_time_s", "command"]  # fmt: skip
    assert len(runs) == 9 and set(runs["study"]) == {"table4"}
    row = runs[(runs["mode"] == "rma_arar_arar") & (runs["seed"] == 2)].iloc[0]
    assert row["command"] == "sagips mode=rma_arar_arar ranks=2 seed=2 'train.straggler.ranks=[0]'"
    # The mean of the two ranks' predictions at the last checkpoint, as checkpoints.csv has them.
    ck = pd.read_csv(tmp_path / "out" / "checkpoints.csv")
    last = ck[(ck["run"] == row["run"]) & (ck["epoch"] == ck["epoch"].max())]
    truth = pd.Series([2.0, 0.5, 2.5, 1.5, 0.5, 2.5])
    p_hat = last[[f"p_hat_{i}" for i in range(6)]].mean().to_numpy()
    assert [row[f"r_{i}"] for i in range(6)] == pytest.approx(list((truth - p_hat) / truth), rel=1e-9)


@pytest.mark.slow  # draws every figure more than once
def test_tables_alone_redraw_every_figure(modes: Path, tmp_path: Path) -> None:
    done = analyze_cli(modes, "--out", tmp_path / "out", "--noise", "8")
    assert done.returncode == 0, done.stderr
    drawn = {p.name for p in (tmp_path / "out").glob("*.png")}
    assert len(drawn) == 6  # all but Fig. 8 (one model size)
    committed = tmp_path / "docs" / "results" / "cpu" / "table4"  # as committed: tables, no checkpoints
    committed.mkdir(parents=True)
    for name in ("runs.csv", "residuals.csv", "scaling.csv", "subsamples.csv"):
        shutil.copy(tmp_path / "out" / name, committed)
    again = analyze_cli("--from-tables", tmp_path / "docs", "--param", "0")
    assert again.returncode == 0, again.stderr
    assert {p.name for p in committed.glob("*.png")} == drawn
    assert (committed / "table4.md").read_text() == (tmp_path / "out" / "table4.md").read_text()
    # Redrawing elsewhere leaves the committed folder as it is.
    before = {p.name: p.stat().st_mtime_ns for p in committed.iterdir()}
    assert analyze_cli("--from-tables", committed, "--out", tmp_path / "redrawn").returncode == 0
    assert {p.name for p in (tmp_path / "redrawn").glob("*.png")} == drawn
    assert {p.name: p.stat().st_mtime_ns for p in committed.iterdir()} == before
    missing = analyze_cli("--from-tables", modes)
    assert missing.returncode == 2 and lines(missing.stderr)[-1].startswith(
        "sagips-analyze: error: no tables of sagips-analyze (residuals.csv) under"
    )


@pytest.mark.slow  # draws every figure more than once
def test_per_study_outputs_do_not_overwrite_each_other(modes: Path, tmp_path: Path) -> None:
    other = tmp_path / "multirun" / "h_sweep"
    for seed in range(2):
        make_run(other, f"h=2,seed={seed}", [0.25, 0.75], mode="arar_arar", seed=seed, h=2, study="h_sweep")
    out = tmp_path / "results"
    done = analyze_cli(modes, other, "--out", out, "--noise", "4", "--per-study")
    assert done.returncode == 0, done.stderr
    assert {p.name for p in out.iterdir()} == {"table4", "h_sweep", "runs.csv"}
    for study, groups in (("table4", 4), ("h_sweep", 1)):
        assert TABLES <= {p.name for p in (out / study).iterdir()}
        assert set(pd.read_csv(out / study / "runs.csv")["study"]) == {study}
        assert len(lines((out / study / "table4.md").read_text())[0].split(" | ")) == groups + 1
    assert pd.read_csv(out / "runs.csv")["study"].value_counts().to_dict() == {"table4": 9, "h_sweep": 2}
    # Redrawing the whole tree from its tables finds both studies.
    again = analyze_cli("--from-tables", out)
    assert again.returncode == 0 and again.stderr.count("redrawing from the tables in") == 2


def test_writes_outputs_and_only_its_own(modes: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "fig08_models.png").write_bytes(b"stale")
    assert analyze_cli(modes, "--out", out, "--noise", "4").returncode == 0
    names = {p.name for p in out.iterdir()}
    assert names == TABLES | {"notes.txt"} | (set(FIGURE_FILES) - {"fig08_models.png"})
    assert (out / "notes.txt").read_text() == "mine"
