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
from sagips.analysis import NoRunsError, analyze, by_study, default_out, read_tables, write_outputs
from sagips.analysis.ensemble import confidence_ellipse, ensemble_residuals, residual_sigma, rmse
from sagips.analysis.names import mode_name, plural
from sagips.analysis.predictions import noise_batch
from sagips.analysis.runs import find_run_dirs, group_runs, label_keys, load_runs
from sagips.analysis.tables import table4, table4_markdown
from sagips.networks import Generator
from sagips.proxy import PMAX, PMIN

TRUTH = (2.0, 0.5, 2.5, 1.5, 0.5, 2.5)
EPOCHS = (1, 5, 10)


def make_config(
    mode: str, ranks: int, seed: int, truth: Sequence[float] = TRUTH, hidden: int = 8, h: int = 1,
    study: str | None = None,
) -> dict:  # fmt: skip
    return {
        "mode": mode, "ranks": ranks, "ranks_per_node": ranks, "h": h, "seed": seed,
        **({"study": study} if study else {}),
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


def random_generator(seed: int, hidden: int = 8) -> dict:
    """State dict of a generator with random weights: its output depends on the noise vector."""
    torch.manual_seed(seed)
    return Generator(noise_dim=6, n_params=6, hidden=hidden, blocks=1).state_dict()


def make_run(
    root: Path,
    name: str,
    q: Sequence[float],
    mode: str = "ensemble",
    seed: int = 0,
    time_scale: float = 1.0,
    summary: bool = True,
    noisy: bool = False,
    **cfg_kw,
) -> Path:
    """A finished run folder with one constant generator per rank (q[r] for rank r).

    ``noisy``: random generators instead (seeded by seed, rank and epoch), whose
    predictions depend on the noise batch.
    """
    run = root / name
    cfg = make_config(mode, len(q), seed, **cfg_kw)
    checkpoints.config_path(run).parent.mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(cfg), checkpoints.config_path(run))
    overrides = [f"mode={mode}", f"ranks={len(q)}", f"seed={seed}", "train.straggler.ranks=[0]"]
    OmegaConf.save(OmegaConf.create(overrides), run / ".hydra" / "overrides.yaml")
    hidden = cfg["model"]["hidden"]
    for r, qr in enumerate(q):
        for epoch in EPOCHS:
            state = (random_generator(100 * seed + 10 * r + epoch, hidden) if noisy
                     else constant_generator(qr, hidden))  # fmt: skip
            checkpoints.save_torch(
                checkpoints.generator_path(run, r, epoch),
                {"state_dict": state, "epoch": epoch,
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
    for group, mode, members, r0, s0 in (
        ("hvd [allreduce]", "allreduce", 5, 0.0954, 0.0526),
        ("RMA-ARAR [rma_arar_arar]", "rma_arar_arar", 5, -0.0004, 0.009),
        ("ARAR [arar_arar]", "arar_arar", 1, 0.3994, float("nan")),
    ):
        for c in (0, 1):
            rows.append({"group": group, "mode": mode, "checkpoint": c, "members": members,
                         **{f"r_{i}": (r0 if c else 1.0) for i in range(6)},
                         **{f"sigma_{i}": s0 for i in range(6)}})  # fmt: skip
    t4 = table4(pd.DataFrame(rows))
    assert list(t4.columns)[:4] == ["hvd [allreduce]", "hvd [allreduce] sigma", "RMA-ARAR [rma_arar_arar]",
                                    "RMA-ARAR [rma_arar_arar] sigma"]  # fmt: skip
    assert t4.loc["r_0", "hvd [allreduce]"] == pytest.approx(0.0954)
    members = {"hvd [allreduce]": 5, "RMA-ARAR [rma_arar_arar]": 5, "ARAR [arar_arar]": 1}
    md = table4_markdown(t4, members, ["s"])
    lines = md.splitlines()
    assert lines[0] == f"| Residual r̂_i (eq. 6) | {' | '.join(members)} |"
    # Three decimals: the paper's integers of 1e-3; no "-0.000"; one member has no sigma.
    assert "| r̂_0 | 0.095 ± 0.053 | 0.000 ± 0.009 | 0.399 ± n/a |" in lines
    assert "| members M | 5 | 5 | 1 |" in lines
    assert sum("n/a:" in line for line in lines) == 1
    assert "± 0 " not in md and "± 0.000" not in md


def test_names_are_the_papers_label_then_the_mode() -> None:
    assert [mode_name(m) for m in ("allreduce", "rma_arar_arar", "arar_arar", "arar", "ensemble")] == [
        "hvd [allreduce]", "RMA-ARAR [rma_arar_arar]", "ARAR [arar_arar]", "Conv. ARAR [arar]",
        "ensemble [ensemble]",
    ]  # fmt: skip
    assert mode_name("new_mode") == "new_mode [new_mode]"
    assert [plural(1, "rank"), plural(3, "checkpoint"), plural(2, "study", "studies")] == [
        "1 rank", "3 checkpoints", "2 studies"
    ]  # fmt: skip


# --- run folders -----------------------------------------------------------------------


def test_runs_are_found_recursively_and_grouped_by_all_but_seed(sweep: Path) -> None:
    runs = load_runs(find_run_dirs([sweep.parent]))
    groups = group_runs(runs)
    assert [g.label for g in groups] == ["Conv. ARAR [arar] ranks=2", "ensemble [ensemble] ranks=1"]
    assert [len(g.runs) for g in groups] == [3, 2]
    assert [r.seed for r in groups[0].runs] == [0, 1, 2]
    # No experiment: the study is the sweep folder, as Hydra's multirun/${oc.select:study,sweep}.
    assert {g.study for g in groups} == {"study"}


def test_labels_name_only_what_tells_groups_apart() -> None:
    follows = [{"mode": "arar", "ranks": r, "ranks_per_node": r, "h": 1} for r in (2, 4)]
    assert label_keys(follows) == ["ranks"]
    split = [{"mode": "arar", "ranks": 8, "ranks_per_node": n, "h": 1} for n in (4, 8)]
    assert label_keys(split) == ["ranks_per_node"]
    assert label_keys([{"mode": "arar", "ranks": 2}]) == ["mode", "ranks"]


def test_ensemble_mode_ranks_are_members(tmp_path: Path) -> None:
    # mode=ensemble: two independent GANs in one job -> M = 2, as two single-rank seeds would give.
    make_run(tmp_path, "ens", [0.25, 0.75])
    a = analyze([tmp_path], noise=2)
    row = a.residuals.iloc[-1]
    assert row["members"] == 2
    assert row["r_0"] == pytest.approx(0.25, abs=1e-6)
    assert row["sigma_0"] == pytest.approx(0.375, abs=1e-6)
    # Each rank's own time: (10 + 10.1) / 2.
    assert row["time_s"] == pytest.approx(10.05)
    # runs.csv: the mean of the ranks' predictions, q = 0.5 -> p_0 = 1.5 against 2.
    assert a.runs.loc[0, "r_0"] == pytest.approx(0.25, abs=1e-6)


def test_one_member_has_no_sigma(tmp_path: Path) -> None:
    # One seed of a distributed mode: eq. (8) over one member would be 0, which is no spread.
    make_run(tmp_path, "one", [0.25, 0.75], mode="arar_arar")
    a = analyze([tmp_path], noise=2)
    assert a.residuals["members"].eq(1).all()
    assert a.residuals[[f"sigma_{i}" for i in range(6)]].isna().all().all()
    assert a.scaling[["total_train_time_s_std", "analysis_rate_std"]].isna().all().all()
    assert a.subsamples.empty


def test_analysis_numbers(sweep: Path) -> None:
    a = analyze([sweep], noise=4)
    last = a.residuals[a.residuals["checkpoint"] == len(EPOCHS) - 1].set_index("group")
    ens = last.loc["ensemble [ensemble] ranks=1"]
    # p_0: members 0.75 and 2.25 -> mean 1.5, sigma 0.75; truth 2 -> r 0.25, sigma 0.375.
    # p_1: members -0.5 and 0.5 -> mean 0, sigma 0.5; truth 0.5 -> r 1, sigma 1.
    assert ens["r_0"] == pytest.approx(0.25, abs=1e-6)
    assert ens["sigma_0"] == pytest.approx(0.375, abs=1e-6)
    assert ens["r_1"] == pytest.approx(1.0, abs=1e-6)
    assert ens["sigma_1"] == pytest.approx(1.0, abs=1e-6)
    # Times: slowest rank of each member, then the members' mean: epoch 10 -> (10 + 20) / 2.
    assert ens["time_s"] == pytest.approx(15.0)
    arar = last.loc["Conv. ARAR [arar] ranks=2"]
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
    assert scaling.loc["Conv. ARAR [arar] ranks=2", "analysis_rate"] == pytest.approx(500.0)
    assert scaling.loc["ensemble [ensemble] ranks=1", "total_train_time_s"] == pytest.approx(6.0)
    # Fig. 9/10 sub-ensembles only for the 3-member group; M = 3 is the whole ensemble.
    assert set(a.subsamples["group"]) == {"Conv. ARAR [arar] ranks=2"}
    assert sorted(a.subsamples["M"].unique()) == [2, 3]
    assert len(a.subsamples) == 2 * 300
    # Every ARAR member predicts q = 0.5: p = (1.5, 0, 2.5, 1.5, 0, 2.5) against TRUTH gives
    # r = (0.25, 1, 0, 0, 1, 0), RMSE sqrt(2.0625 / 6), and no spread, whichever members are drawn.
    np.testing.assert_allclose(a.subsamples["rmse"], math.sqrt(2.0625 / 6), rtol=1e-6)
    np.testing.assert_allclose(a.subsamples["mean_sigma"], 0.0, atol=1e-7)
    np.testing.assert_allclose(a.subsamples["r_4"], 1.0, atol=1e-6)
    # runs.csv: one row per run, the ranks' mean prediction of the last checkpoint.
    runs = a.runs.set_index(["mode", "seed"])
    assert len(runs) == 5
    assert runs.loc[("ensemble", 1), "r_0"] == pytest.approx((2 - 2.25) / 2, abs=1e-6)
    assert runs.loc[("arar", 2), "r_1"] == pytest.approx(1.0, abs=1e-6)
    assert runs.loc[("arar", 2), "command"] == "sagips mode=arar ranks=2 seed=2 'train.straggler.ranks=[0]'"


def test_noise_batch_is_fixed(tmp_path: Path) -> None:
    # Generators with random weights, so that what they predict depends on the noise vectors.
    for seed in range(2):
        make_run(tmp_path, f"seed={seed}", [0.5, 0.5], seed=seed, noisy=True)
    first = analyze([tmp_path], noise=3).residuals
    torch.manual_seed(99)  # the global generator must not matter
    torch.randn(100)
    pd.testing.assert_frame_equal(first, analyze([tmp_path], noise=3).residuals)
    # ...and the batch is the documented one: torch.Generator().manual_seed(1234), drawn k x noise_dim.
    noise = torch.randn(3, 6, generator=torch.Generator().manual_seed(1234))
    torch.testing.assert_close(noise_batch(3, 6), noise)
    # The check above can fail: another batch moves every residual.
    other = analyze([tmp_path], noise=3, noise_seed=4321).residuals
    r = [f"r_{i}" for i in range(6)]
    assert (other[r] - first[r]).abs().min().min() > 1e-6


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
    assert len(a.runs) == 5 and [len(g) for _, g in a.runs.groupby("group", sort=False)] == [3, 2]
    skipped = [m for m in caplog.messages if m.startswith("skipping run")]
    assert len(skipped) == 4 and not any("\n" in m for m in skipped)
    for name, reason in (
        ("truncated", "unreadable checkpoint"),
        ("unfinished", "summary.json"),
        ("other_truth", "proxy.truth"),
        ("broken", "config.yaml"),
    ):
        assert any(name in m and reason in m for m in skipped), (name, skipped)


def test_empty_input_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(NoRunsError, match="no run folder"):
        analyze([tmp_path])
    with pytest.raises(NoRunsError, match="not a folder"):
        analyze([tmp_path / "missing"])


def test_default_out_is_beside_the_inputs(tmp_path: Path) -> None:
    assert default_out([tmp_path / "sweep"]) == tmp_path.resolve() / "sweep_analysis"
    assert default_out([tmp_path / "a", tmp_path / "b"]) == tmp_path.resolve() / "analysis"


def test_tables_read_back_are_the_tables_written(sweep: Path, tmp_path: Path) -> None:
    a = analyze([sweep], noise=2)
    write_outputs(a, tmp_path / "out")
    b = read_tables(tmp_path / "out")
    for field in ("runs", "checkpoints", "residuals", "scaling", "subsamples"):
        pd.testing.assert_frame_equal(getattr(a, field), getattr(b, field), check_dtype=False)


def test_studies_are_analysed_apart(tmp_path: Path) -> None:
    for seed in range(2):
        make_run(tmp_path / "multirun" / "a", f"seed={seed}", [0.25], seed=seed, study="table4_convergence")
        make_run(tmp_path / "multirun" / "b", f"seed={seed}", [0.75], seed=seed)
    studies = by_study([tmp_path])
    assert list(studies) == ["table4_convergence", "b"]
    assert studies["table4_convergence"].runs["r_0"].round(6).tolist() == [0.625, 0.625]  # p_0 = 0.75
    assert studies["b"].studies == ["b"]


def test_model_study_figure_with_two_model_sizes(tmp_path: Path) -> None:
    for seed, q in enumerate((0.25, 0.75)):
        make_run(tmp_path, f"small{seed}", [q], seed=seed, hidden=4)
        make_run(tmp_path, f"large{seed}", [q], seed=seed, hidden=8)
    a = analyze([tmp_path], noise=2)
    assert list(dict.fromkeys(a.residuals["group"])) == [
        "ensemble [ensemble] model.hidden=4", "ensemble [ensemble] model.hidden=8"
    ]  # fmt: skip
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
    assert list(a.scaling["group"]) == [
        "Conv. ARAR [arar] ranks=1 h=2", "Conv. ARAR [arar] ranks=1 h=10",
        "Conv. ARAR [arar] ranks=2 h=2", "Conv. ARAR [arar] ranks=2 h=10",
    ]  # fmt: skip
    written = {p.name for p in write_outputs(a, tmp_path / "out")}
    assert {"fig11_total_time.png", "fig12_analysis_rate.png", "fig15_16_mean_sigma_vs_time.png"} <= written
