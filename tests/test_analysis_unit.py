"""The analysis (section VI) on hand-worked numbers and on synthetic run folders.

The synthetic generators have all weights zero and an output bias logit(q), so
each one predicts pmin + q (pmax - pmin) for every noise vector: with the default
proxy box, q = 0.25 gives p_0 = 0.75, p_1 = -0.5 and q = 0.75 gives p_0 = 2.25, p_1 = 0.5.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from sagips import checkpoints
from sagips.analysis import NoRunsError, analyze, default_out, write_outputs
from sagips.analysis.cli import main
from sagips.analysis.ensemble import confidence_ellipse, ensemble_residuals, residual_sigma, rmse
from sagips.analysis.runs import find_run_dirs, group_runs, label_keys, load_runs
from sagips.analysis.tables import column_title, table4, table4_markdown
from sagips.networks import Generator
from sagips.proxy import PMAX, PMIN

TRUTH = (2.0, 0.5, 2.5, 1.5, 0.5, 2.5)
EPOCHS = (1, 5, 10)


def make_config(
    mode: str, ranks: int, seed: int, truth: Sequence[float] = TRUTH, hidden: int = 8, h: int = 1
) -> dict:
    return {
        "mode": mode, "ranks": ranks, "ranks_per_node": ranks, "h": h, "seed": seed,
        "sampling": "constant", "scale": "smoke", "cluster": {"name": "local"},
        "proxy": {"truth": list(truth), "pmin": list(PMIN), "pmax": list(PMAX),
                  "grid_points": 100, "x_min": 0.1, "x_max": 0.99999},
        "model": {"hidden": hidden, "blocks": 1, "noise_dim": 6},
        "train": {"epochs": 10, "param_samples": 16, "events_per_sample": 10,
                  "data_fraction": 0.5, "checkpoint_every": 5},
        "transport": {"weights_only": True},
    }  # fmt: skip


def constant_generator(q: float, hidden: int = 8) -> dict:
    """State dict of a generator whose sigmoid output is q for every noise vector."""
    net = Generator(noise_dim=6, n_params=6, hidden=hidden, blocks=1)
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
        net[-2].bias.fill_(math.log(q / (1 - q)))
    return net.state_dict()


def make_run(
    root: Path,
    name: str,
    q: Sequence[float],
    mode: str = "ensemble",
    seed: int = 0,
    time_scale: float = 1.0,
    summary: bool = True,
    **cfg_kw,
) -> Path:
    """A finished run folder with one constant generator per rank (q[r] for rank r)."""
    run = root / name
    cfg = make_config(mode, len(q), seed, **cfg_kw)
    checkpoints.config_path(run).parent.mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(cfg), checkpoints.config_path(run))
    for r, qr in enumerate(q):
        for epoch in EPOCHS:
            checkpoints.save_torch(
                checkpoints.generator_path(run, r, epoch),
                {"state_dict": constant_generator(qr, cfg["model"]["hidden"]), "epoch": epoch,
                 "timestamp": 1e9 + epoch, "train_time_s": time_scale * epoch + 0.1 * r,
                 "rank": r, "world_size": len(q)},
            )  # fmt: skip
            torch.save({"junk": 1}, checkpoints.state_path(run, r, epoch))
    if summary:
        checkpoints.write_json(
            checkpoints.summary_path(run),
            {"status": "complete", "mode": mode, "ranks": len(q), "epochs": 10,
             "param_samples": 16, "events_per_sample": 10, "disc_batch": 100,
             "total_train_time_s": 4.0 * time_scale, "analysis_rate": 0.0, "seed": seed},
        )  # fmt: skip
    return run


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    """Two ensemble seeds at ranks=1 and three ARAR seeds at ranks=2."""
    root = tmp_path / "multirun" / "study"
    make_run(root, "mode=ensemble,ranks=1,seed=0", [0.25], seed=0, time_scale=1.0)
    make_run(root, "mode=ensemble,ranks=1,seed=1", [0.75], seed=1, time_scale=2.0)
    for seed in range(3):
        # Rank averages: 0.5, 0.5, 0.5 -> members agree exactly although ranks do not.
        make_run(root, f"mode=arar,ranks=2,seed={seed}", [0.25, 0.75], mode="arar", seed=seed)
    return root


# --- pure functions, numbers worked by hand -------------------------------------------


def test_residual_sigma_is_eq8_on_the_eq6_scale() -> None:
    # sigma / |p|: 0.75 / 2 and 0.25 / |-0.5|
    np.testing.assert_allclose(residual_sigma([2.0, -0.5], [0.75, 0.25]), [0.375, 0.5])


def test_ensemble_residuals_average_over_noise_after_eq7_eq8() -> None:
    # Two members, two noise vectors, one parameter: per noise vector the means
    # are 2 and 4 and the spreads 1 and 1; over the batch p_hat = 3, sigma = 1.
    predictions = np.array([[[1.0], [3.0]], [[3.0], [5.0]]])
    r, s = ensemble_residuals(np.array([4.0]), predictions)
    np.testing.assert_allclose(r, [(4 - 3) / 4])
    np.testing.assert_allclose(s, [1 / 4])


def test_rmse() -> None:
    assert rmse(np.array([3.0, 4.0])) == pytest.approx(math.sqrt(12.5))


def test_confidence_ellipse_of_axis_aligned_cloud() -> None:
    # Sample variances: x 2/3, y 8/3; chi2_2(0.95) = -2 ln 0.05 = 5.9915.
    ell = confidence_ellipse(np.array([-1.0, 1.0, 0.0, 0.0]), np.array([0.0, 0.0, -2.0, 2.0]))
    chi2 = -2 * math.log(0.05)
    assert ell.center == pytest.approx((0.0, 0.0))
    assert ell.width == pytest.approx(2 * math.sqrt(chi2 * 8 / 3))
    assert ell.height == pytest.approx(2 * math.sqrt(chi2 * 2 / 3))
    assert abs(ell.angle_deg) == pytest.approx(90.0)


def test_table4_layout_and_rounding() -> None:
    rows = []
    for group, mode, r0, s0 in (
        ("mode=allreduce", "allreduce", 0.0954, 0.0526),
        ("mode=rma_arar_arar", "rma_arar_arar", -0.0004, 0.009),
    ):
        for c in (0, 1):
            rows.append({"group": group, "mode": mode, "checkpoint": c,
                         **{f"r_{i}": (r0 if c else 1.0) for i in range(6)},
                         **{f"sigma_{i}": s0 for i in range(6)}})  # fmt: skip
    t4 = table4(pd.DataFrame(rows))
    assert list(t4.columns) == ["hvd", "hvd sigma", "RMA-ARAR", "RMA-ARAR sigma"]
    assert t4.loc["r_0", "hvd"] == pytest.approx(95.4)
    md = table4_markdown(t4)
    assert md.splitlines()[0] == "| Residual [1e-3] | hvd | RMA-ARAR |"
    assert "| r̂_0 | 95 ± 53 | 0 ± 9 |" in md


def test_column_title_keeps_what_else_differs() -> None:
    assert column_title("arar", "mode=arar") == "Conv. ARAR"
    assert column_title("arar_arar", "mode=arar_arar ranks=8") == "ARAR (ranks=8)"


# --- run folders -----------------------------------------------------------------------


def test_runs_are_found_recursively_and_grouped_by_all_but_seed(sweep: Path) -> None:
    runs = load_runs(find_run_dirs([sweep.parent]))
    groups = group_runs(runs)
    assert [g.label for g in groups] == ["mode=arar ranks=2", "mode=ensemble ranks=1"]
    assert [len(g.runs) for g in groups] == [3, 2]
    assert [r.seed for r in groups[0].runs] == [0, 1, 2]


def test_labels_name_only_what_tells_groups_apart() -> None:
    follows = [{"mode": "arar", "ranks": r, "ranks_per_node": r, "h": 1} for r in (2, 4)]
    assert label_keys(follows) == ["ranks"]
    split = [{"mode": "arar", "ranks": 8, "ranks_per_node": n, "h": 1} for n in (4, 8)]
    assert label_keys(split) == ["ranks_per_node"]
    assert label_keys([{"mode": "arar", "ranks": 2}]) == ["mode", "ranks"]


def test_ensemble_mode_ranks_are_members(tmp_path: Path) -> None:
    # mode=ensemble: two independent GANs in one job -> M = 2, as two single-rank seeds would give.
    make_run(tmp_path, "ens", [0.25, 0.75])
    row = analyze([tmp_path], noise=2).residuals.iloc[-1]
    assert row["members"] == 2
    assert row["r_0"] == pytest.approx(0.25, abs=1e-6)
    assert row["sigma_0"] == pytest.approx(0.375, abs=1e-6)
    # Each rank's own time: (10 + 10.1) / 2.
    assert row["time_s"] == pytest.approx(10.05)


def test_analysis_numbers(sweep: Path) -> None:
    a = analyze([sweep], noise=4)
    last = a.residuals[a.residuals["checkpoint"] == len(EPOCHS) - 1].set_index("group")
    ens = last.loc["mode=ensemble ranks=1"]
    # p_0: members 0.75 and 2.25 -> mean 1.5, sigma 0.75; truth 2 -> r 0.25, sigma 0.375.
    # p_1: members -0.5 and 0.5 -> mean 0, sigma 0.5; truth 0.5 -> r 1, sigma 1.
    assert ens["r_0"] == pytest.approx(0.25, abs=1e-6)
    assert ens["sigma_0"] == pytest.approx(0.375, abs=1e-6)
    assert ens["r_1"] == pytest.approx(1.0, abs=1e-6)
    assert ens["sigma_1"] == pytest.approx(1.0, abs=1e-6)
    # Times: slowest rank of each member, then the members' mean: epoch 10 -> (10 + 20) / 2.
    assert ens["time_s"] == pytest.approx(15.0)
    arar = last.loc["mode=arar ranks=2"]
    # Ranks average first (section VI-A): every member predicts 1.5, so sigma is 0.
    assert arar["r_0"] == pytest.approx(0.25, abs=1e-6)
    assert arar["sigma_0"] == pytest.approx(0.0, abs=1e-6)
    assert arar["time_s"] == pytest.approx(10.1)
    assert arar["members"] == 3
    # checkpoints.csv keeps each rank: rank 1 of an ARAR run predicts p_0 = 2.25.
    row = a.checkpoints.query("mode == 'arar' and seed == 1 and rank == 1 and epoch == 10")
    assert row["p_hat_0"].item() == pytest.approx(2.25, abs=1e-6)
    assert len(a.checkpoints) == (2 * 1 + 3 * 2) * len(EPOCHS)
    # Eq. (9): 2 ranks * 100 events * 10 epochs / 4 s.
    scaling = a.scaling.set_index("group")
    assert scaling.loc["mode=arar ranks=2", "analysis_rate"] == pytest.approx(500.0)
    assert scaling.loc["mode=ensemble ranks=1", "total_train_time_s"] == pytest.approx(6.0)
    # Fig. 9/10 sub-ensembles only for the 3-member group; M = 3 is the whole ensemble.
    assert set(a.subsamples["group"]) == {"mode=arar ranks=2"}
    assert sorted(a.subsamples["M"].unique()) == [2, 3]
    assert len(a.subsamples) == 2 * 300
    # Every ARAR member predicts q = 0.5: p = (1.5, 0, 2.5, 1.5, 0, 2.5) against TRUTH gives
    # r = (0.25, 1, 0, 0, 1, 0), RMSE sqrt(2.0625 / 6), and no spread, whichever members are drawn.
    np.testing.assert_allclose(a.subsamples["rmse"], math.sqrt(2.0625 / 6), rtol=1e-6)
    np.testing.assert_allclose(a.subsamples["sigma"], 0.0, atol=1e-7)


def test_noise_batch_is_fixed(sweep: Path) -> None:
    pd.testing.assert_frame_equal(analyze([sweep], noise=3).residuals,
                                  analyze([sweep], noise=3).residuals)  # fmt: skip


def test_bad_runs_are_reported_and_left_out(sweep: Path, caplog: pytest.LogCaptureFixture) -> None:
    # A temporary left by a killed write is no checkpoint: the run it sits in stays usable.
    (checkpoints.rank_dir(sweep / "mode=arar,ranks=2,seed=0", 1) / ".tmp-x1y2").write_bytes(b"half")
    truncated = make_run(sweep, "truncated", [0.5], seed=7)
    path = checkpoints.generator_path(truncated, 0, EPOCHS[-1])
    path.write_bytes(path.read_bytes()[:100])
    make_run(sweep, "unfinished", [0.5], seed=8, summary=False)
    make_run(sweep, "other_truth", [0.5], seed=9, truth=(1.0, 0.5, 2.5, 1.5, 0.5, 2.5))
    (sweep / "broken" / ".hydra").mkdir(parents=True)
    (sweep / "broken" / ".hydra" / "config.yaml").write_text("mode: [unclosed\n")
    with caplog.at_level(logging.WARNING):
        a = analyze([sweep], noise=2)
    assert len(a.groups) == 2 and [len(g.runs) for g in a.groups] == [3, 2]
    skipped = [m for m in caplog.messages if m.startswith("skipping run")]
    assert len(skipped) == 4 and not any("\n" in m for m in skipped)
    for name, reason in (
        ("truncated", "unreadable checkpoint"),
        ("unfinished", "summary.json"),
        ("other_truth", "proxy.truth"),
        ("broken", "config.yaml"),
    ):
        assert any(name in m and reason in m for m in skipped), (name, skipped)


def test_empty_input_is_an_error(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(NoRunsError):
        analyze([tmp_path])
    assert main([str(tmp_path)]) != 0
    assert any("no run folder" in m for m in caplog.messages)
    assert main([str(tmp_path / "missing")]) != 0


def test_default_out_is_beside_the_inputs(tmp_path: Path) -> None:
    assert default_out([tmp_path / "sweep"]) == tmp_path.resolve() / "sweep_analysis"
    assert default_out([tmp_path / "a", tmp_path / "b"]) == tmp_path.resolve() / "analysis"


def test_cli_writes_outputs_and_only_its_own(
    sweep: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "fig08_models.png").write_bytes(b"stale")
    with caplog.at_level(logging.WARNING):
        assert main([str(sweep), "--out", str(out), "--noise", "4"]) == 0
    names = {p.name for p in out.iterdir()}
    expected = {"checkpoints.csv", "residuals.csv", "table4.md", "table4.csv", "scaling.csv",
                "fig09_rmse_sigma.png", "fig10_ensemble_size.png", "fig11_total_time.png",
                "fig12_analysis_rate.png", "fig13_14_residual_vs_time.png",
                "fig15_16_mean_sigma_vs_time.png", "notes.txt"}  # fmt: skip
    assert names == expected
    assert (out / "notes.txt").read_text() == "mine"
    assert [m for m in caplog.messages if "skipping fig" in m] == [
        "skipping fig08_models.png: needs ensemble-mode groups that differ in model size or batch size"
    ]
    assert "| r̂_0 | 250 ± 0 | 250 ± 375 |" in (out / "table4.md").read_text()
    residuals = pd.read_csv(out / "residuals.csv")
    assert len(residuals) == 2 * len(EPOCHS)


def test_model_study_figure_with_two_model_sizes(tmp_path: Path) -> None:
    for seed, q in enumerate((0.25, 0.75)):
        make_run(tmp_path, f"small{seed}", [q], seed=seed, hidden=4)
        make_run(tmp_path, f"large{seed}", [q], seed=seed, hidden=8)
    a = analyze([tmp_path], noise=2)
    assert [g.label for g in a.groups] == ["model.hidden=4", "model.hidden=8"]
    written = write_outputs(a, tmp_path / "out")
    assert tmp_path / "out" / "fig08_models.png" in written
    assert sorted(a.residuals["generator_params"].unique()) == [
        6 * 4 + 4 + 4 * 4 + 4 + 4 * 6 + 6,
        6 * 8 + 8 + 8 * 8 + 8 + 8 * 6 + 6,
    ]


def test_weak_scaling_layout_draws_single_rank_references(tmp_path: Path) -> None:
    # Figs. 14-16 study: one mode at ranks 1 and 2, h varied, no mode=ensemble runs at all.
    for h in (10, 2):
        make_run(tmp_path, f"r1h{h}", [0.5], mode="arar", h=h)
        make_run(tmp_path, f"r2h{h}", [0.25, 0.75], mode="arar", h=h)
    a = analyze([tmp_path], noise=2)
    assert [g.label for g in a.groups] == ["ranks=1 h=2", "ranks=1 h=10", "ranks=2 h=2", "ranks=2 h=10"]
    written = {p.name for p in write_outputs(a, tmp_path / "out")}
    assert {"fig11_total_time.png", "fig12_analysis_rate.png", "fig15_16_mean_sigma_vs_time.png"} <= written
