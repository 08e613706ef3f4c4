"""The scaling model (sagips.scaling_model): each formula on numbers worked out by hand, and
``sagips-bench model`` through the real CLI."""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from sagips.analysis import analyze, draw
from sagips.config import ConfigError
from sagips.scaling_model import Job, Machine, predict
from sagips.scaling_model import profiles as prof
from sagips.scaling_model.calibrate import RING_VARIANTS, compute_from_metrics, fit_network, nonnegative_lstsq
from sagips.scaling_model.overlay import model_curve
from sagips.scaling_model.prediction import exchange_costs, payload
from sagips.scaling_model.rings import Link, Network, Payload, allreduce_time, ring_time, shared_window_time
from sagips.scaling_model.waiting import (
    EpochWork,
    cpu_slowdown,
    expected_max_exponential,
    harmonic,
    simulate_groups,
)
from tests.conftest import run_sagips
from tests.test_analysis_unit import make_run

needs_mpi = pytest.mark.skipif(shutil.which("mpiexec") is None, reason="mpiexec not on PATH")
FREE = Link(0.0, math.inf)


def unit_steps(**overrides: float) -> Network:
    """A network where only the named costs are non-zero: ring times count them."""
    fields = dict(step_s=0.0, message_s=0.0, call_s=0.0, reduce_Bps=math.inf, intra=FREE, inter=FREE)
    return Network(**{**fields, **overrides})


# --- waiting ---------------------------------------------------------------------------------------
def test_harmonic_numbers_and_the_exponential_maximum():
    assert harmonic(1) == 1.0
    assert harmonic(2) == pytest.approx(1.5)
    assert harmonic(4) == pytest.approx(25 / 12)
    assert expected_max_exponential(0.010, 4) == pytest.approx(0.010 * 25 / 12)
    # ASYNC.md: 6.6 m at K = 400
    assert expected_max_exponential(1.0, 400) == pytest.approx(6.57, abs=0.01)


def test_monte_carlo_maximum_agrees_with_the_closed_form():
    rng = np.random.default_rng(1)
    steady = EpochWork(0.004, jitter_s=0.010)
    noisy = EpochWork(0.004, jitter_s=0.010, spread=np.ones(10))  # a spread of ones: steady, drawn
    assert steady.synchronous_epoch(4, rng) == pytest.approx(0.004 + 0.010 * 25 / 12)
    assert noisy.synchronous_epoch(4, rng, trials=200_000) == pytest.approx(0.004 + 0.010 * 25 / 12, rel=0.01)


def test_stale_synchronous_limits():
    rng = np.random.default_rng(2)
    c, m, k, epochs = 0.004, 0.010, 4, 4000
    work = EpochWork(c, m).draw(rng, (2, 1, k, epochs))
    per_epoch = {s: simulate_groups(work, s, 0.0).max(axis=(1, 2)).mean() / epochs for s in (0, 1, 4, 16)}
    never = simulate_groups(work, None, 0.0)
    # s = 0: the synchronous maximum, c + m H_4; s = infinity: each rank's own mean, c + m
    assert per_epoch[0] == pytest.approx(c + m * harmonic(k), rel=0.02)
    assert never.mean() / epochs == pytest.approx(c + m, rel=0.02)
    assert per_epoch[0] > per_epoch[1] > per_epoch[4] > per_epoch[16] > never.mean() / epochs
    # a bound longer than the run never waits: exactly the never-waiting sum
    np.testing.assert_allclose(simulate_groups(work, epochs, 0.0), never, rtol=1e-12)


def test_general_recurrence_equals_the_closed_paths():
    rng = np.random.default_rng(3)
    work = EpochWork(0.002, 0.003).draw(rng, (1, 3, 2, 50))
    no_outer = epochs_past = 51  # an outer period longer than the run: the loop runs, no ring fires
    np.testing.assert_allclose(simulate_groups(work, 0, 0.001, no_outer, 9.0),
                               simulate_groups(work, 0, 0.001))  # fmt: skip
    np.testing.assert_allclose(simulate_groups(work, None, 0.001, epochs_past, 9.0),
                               simulate_groups(work, None, 0.001))  # fmt: skip
    # in pieces that follow each other in time: the same run
    for staleness in (None, 0, 2):
        pieces = [work[..., :20], work[..., 20:]]
        np.testing.assert_allclose(simulate_groups(pieces, staleness, 0.001, 7, 0.5),
                                   simulate_groups(work, staleness, 0.001, 7, 0.5))  # fmt: skip


def test_outer_ring_waits_for_the_slowest_first_member():
    # 2 groups of 1 rank, 2 epochs, outer ring every 2 epochs costing 1 s
    work = np.array([[[[1.0, 1.0]], [[3.0, 3.0]]]])
    done = simulate_groups(work, None, 0.0, outer_every=2, outer_s=1.0)
    # epoch 2: ready at 2 and 6, both leave the outer ring at 6 + 1
    assert done.ravel().tolist() == [7.0, 7.0]


def test_cpu_sharing():
    assert cpu_slowdown(4, 0, 1.0, 2) == 2.0  # 4 ranks in step on 2 cores
    assert cpu_slowdown(2, 0, 1.0, 2) == 1.0
    assert cpu_slowdown(4, 0, 1.0, 4) == 1.0  # one GPU each
    # 1 + Binomial(3, 1/2) busy on 2 cores: (1 x 1 + 3 x 1 + 3 x 1.5 + 1 x 2) / 8
    assert cpu_slowdown(1, 3, 0.5, 2) == pytest.approx(21 / 16)
    assert cpu_slowdown(1, 3, 0.0, 2) == 1.0  # the others always asleep


# --- rings ---------------------------------------------------------------------------------------
def test_ring_step_counts():
    load = Payload(1000, 5)
    step = unit_steps(step_s=1.0)
    assert ring_time(step, 400, False, load, "ring") == 399
    assert ring_time(step, 400, False, load, "chunked") == 798
    assert ring_time(step, 1, False, load, "ring") == 0
    per_message = unit_steps(message_s=1.0)
    assert ring_time(per_message, 4, False, load, "ring") == 15  # 3 steps x 5 tensors
    assert ring_time(per_message, 4, False, Payload(1000, 1), "ring") == 3  # fused
    per_byte = unit_steps(intra=Link(0.0, 1.0))
    assert ring_time(per_byte, 4, False, load, "ring") == 3 * 4000  # the whole buffer per step
    assert ring_time(per_byte, 4, False, load, "chunked") == 6 * 1000  # a quarter per step


def test_averaging_and_shared_window_costs():
    net = unit_steps(reduce_Bps=4000.0)  # one 1000-value buffer read per second
    assert ring_time(net, 4, False, Payload(1000, 1), "ring") == 4.0
    assert shared_window_time(net, 4, Payload(1000, 1)) == 8.0  # publish, 3 copies, 4-row mean
    assert shared_window_time(net, 1, Payload(1000, 1)) == 0.0


def test_allreduce_rounds():
    net = unit_steps(intra=Link(1.0, math.inf), call_s=10.0)
    assert allreduce_time(net, 8, False, Payload(1000, 2)) == 2 * (10 + 6)  # 2 calls, 2 log2(8) rounds


def test_exchange_costs_per_mode_follow_the_nodes():
    """Polaris-like: 4 ranks per node; an inter-node step costs 100, an intra-node step 1."""
    net = unit_steps(step_s=1.0, inter=Link(99.0 / 5, math.inf))  # 5 messages per step (per tensor)
    machine = Machine("t", net, EpochWork(1.0), 1, node_ranks=4, slots=4)
    arar = Job("arar", 400, ranks_per_node=4)
    grouped = Job("arar_arar", 400, ranks_per_node=4)
    assert exchange_costs(arar, machine) == (pytest.approx(399 * 100), 0.0)
    assert exchange_costs(grouped, machine) == (3.0, pytest.approx(99 * 100))
    assert exchange_costs(Job("arar", 4, ranks_per_node=4), machine) == (3.0, 0.0)
    assert exchange_costs(Job("ensemble", 400), machine) == (0.0, 0.0)
    # an inner group wider than a node crosses it
    assert exchange_costs(Job("arar_arar", 16, ranks_per_node=8), machine)[0] == pytest.approx(7 * 100)


def test_exchanged_values():
    assert payload(Job("arar", 2)) == Payload(50_688, 5)  # weights only, one message per tensor
    assert payload(Job("arar", 2, fuse=True)) == Payload(50_688, 1)
    assert payload(Job("allreduce", 2)) == Payload(51_206, 10)  # every generator gradient


# --- calibration -----------------------------------------------------------------------------------
def test_nonnegative_least_squares():
    a = np.array([[1.0, 0.0], [0.0, 1.0]])
    np.testing.assert_allclose(nonnegative_lstsq(a, np.array([2.0, -1.0])), [2.0, 0.0])


def test_network_fit_recovers_known_costs():
    truth = Network(step_s=15e-6, message_s=6e-6, call_s=30e-6, reduce_Bps=10e9,
                    intra=Link(0.0, 4e9), inter=Link(0.0, 4e9))  # fmt: skip
    values, tensors = 50_688, 5
    times = {name: ring_time(truth, 2, False, Payload(values, 1 if fused else tensors), algorithm)
             for name, (algorithm, fused) in RING_VARIANTS.items()}  # fmt: skip
    times["allreduce"] = allreduce_time(truth, 2, False, Payload(values, 1))
    fitted = fit_network(dict(ranks=2, values=values, tensors=tensors, exchange_min_s=times), 10e9)
    assert fitted.step_s == pytest.approx(truth.step_s, rel=1e-6)
    assert fitted.message_s == pytest.approx(truth.message_s, rel=1e-6)
    assert fitted.intra.bandwidth_Bps == pytest.approx(4e9, rel=1e-6)
    assert fitted.call_s == pytest.approx(truth.call_s, rel=1e-6)


def test_compute_from_metrics(tmp_path):
    (tmp_path / "metrics").mkdir()
    rows = ["epoch,train_time_s,g_loss,d_loss,comm_s,staleness,skipped",
            "1,0.012,0,0,0.002,0,0", "2,0.022,0,0,0,0,0", "3,0.042,0,0,0,0,0"]  # fmt: skip
    (tmp_path / "metrics" / "rank0.csv").write_text("\n".join(rows) + "\n")
    work = compute_from_metrics(tmp_path)
    assert work.compute_s == pytest.approx(0.040 / 3)  # 10 + 10 + 20 ms
    np.testing.assert_allclose(work.spread, [0.75, 0.75, 1.5])
    rows[2:] = ["3,0.042,0,0,0,0,0"]  # logged every other epoch: a mean, no spread
    (tmp_path / "metrics" / "rank0.csv").write_text("\n".join(rows) + "\n")
    assert compute_from_metrics(tmp_path).spread is None


# --- profiles and predictions ----------------------------------------------------------------------
def test_shipped_profiles():
    assert {"local", "polaris"} <= set(prof.names())
    polaris = prof.load("polaris")
    assert (polaris.node_ranks, polaris.slots, polaris.ref_events) == (4, 4.0, 102_400)
    assert polaris.inter.bandwidth_Bps == 25e9 and not polaris.calibrates_compute
    local = prof.load("local")
    assert local.node_ranks is None and local.slots is None and local.calibrates_compute
    # without a calibration here, the profile's reference host figures and its own inter-node link
    machine = prof.machine(polaris)
    assert machine.network.step_s == polaris.host.step_s and machine.network.inter == polaris.inter
    with pytest.raises(ValueError, match="calibrated compute"):
        prof.machine(local)


def test_bad_profiles(tmp_path):
    with pytest.raises(ConfigError, match="neither a profile"):
        prof.load("no-such-machine")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ndescription: y\nnode_ranks: 4\nslots: 4\ncompute: calibrate\n")
    with pytest.raises(ConfigError, match=r"missing keys \['inter'\]"):
        prof.load(str(bad))
    bad.write_text("name: x\ndescription: y\nnode_ranks: 4\nslots: -1\ncompute: calibrate\ninter: intra\n")
    with pytest.raises(ConfigError, match="slots"):
        prof.load(str(bad))
    bad.write_text("name: x\ndescription: y\nnode_ranks: 4\nslots: 4\ncompute: calibrate\ninter: intra\n"
                   "host: {step_s: 1.0e-5}\n")  # fmt: skip
    with pytest.raises(ConfigError, match="message_s"):
        prof.load(str(bad))


def test_predictions_on_hand_worked_machines():
    net = unit_steps(step_s=0.001)
    machine = Machine("t", net, EpochWork(0.010), 1000, node_ranks=None, slots=2)
    # ensemble, 2 ranks on 2 cores: compute only; eq. (9) = 2 x 1000 x 10 / 0.1 s
    ens = predict(Job("ensemble", 2, epochs=10, disc_batch=1000), machine)
    assert ens.epoch_s == pytest.approx(0.010) and ens.analysis_rate == pytest.approx(200_000)
    # arar, 4 ranks on 2 cores: compute doubles, 3 ring steps, exponential jitter max of 4
    arar = predict(Job("arar", 4, epochs=10, disc_batch=1000, jitter_s=0.004), machine)
    assert arar.epoch_s == pytest.approx(0.020 + 0.004 * 25 / 12 + 0.003)
    # twice the events, twice the compute
    assert predict(Job("ensemble", 1, epochs=10, disc_batch=2000), machine).epoch_s == pytest.approx(0.020)


def test_grouped_modes_scale_where_the_conventional_ring_does_not():
    polaris = prof.machine(prof.load("polaris"), unit_steps(step_s=20e-6, message_s=5e-6, reduce_Bps=10e9))
    rate = {(mode, n): predict(Job(mode, n, ranks_per_node=4, epochs=10_000), polaris).analysis_rate
            for mode in ("arar", "arar_arar", "rma_arar_arar") for n in (4, 400)}  # fmt: skip
    assert rate["arar_arar", 400] / rate["arar_arar", 4] > 95
    assert rate["rma_arar_arar", 400] / rate["rma_arar_arar", 4] > 95
    assert rate["arar", 400] / rate["arar", 4] < 90


def test_staleness_buys_time_under_jitter():
    machine = Machine("t", unit_steps(), EpochWork(0.005), 102_400, node_ranks=4, slots=4)
    job = Job("rma_arar_arar", 8, ranks_per_node=4, h=100, epochs=2000, jitter_s=0.010)
    sync, stale = predict(replace(job, staleness=0), machine), predict(replace(job, staleness=4), machine)
    assert sync.epoch_s == pytest.approx(0.005 + 0.010 * 25 / 12, rel=0.05)
    assert stale.epoch_s < 0.8 * sync.epoch_s


# --- the command -----------------------------------------------------------------------------------
def bench_model(*args: str, cwd) -> dict:
    out = run_sagips("model", *args, cwd=cwd, module="sagips.bench", timeout=1200)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(("args", "message"), [
    (("--profile", "no-such-machine"), "--profile='no-such-machine': neither a profile"),
    (("--h", "0"), "--h=0: must be >= 1"),
])  # fmt: skip
def test_model_names_bad_input(tmp_path, args, message):
    out = run_sagips("model", *args, cwd=tmp_path, module="sagips.bench")
    assert out.returncode == 2 and out.stdout == "" and not list(tmp_path.iterdir())
    assert out.stderr.strip().count("\n") == 0 and message in out.stderr


@needs_mpi
@pytest.mark.slow
def test_model_quick_with_local_check(tmp_path):
    """The check runs the modes asked for: here the asynchronous one, with and without jitter."""
    figures = bench_model("--quick", "--ranks", "4,16,400", "--modes", "rma_arar_arar",
                          "--out", str(tmp_path / "fig.png"), cwd=tmp_path)  # fmt: skip
    assert (tmp_path / "fig.png").stat().st_size > 0
    series = figures["modes"]["rma_arar_arar"]
    assert list(figures["modes"]) == ["rma_arar_arar"] and series["ranks"] == [4, 16, 400]
    assert len(series["train_time_s"]) == len(series["analysis_rate"]) == 3
    assert figures["gain_4_to_400"]["rma_arar_arar"] > 1
    checked = {(c["mode"], c["ranks"], c["jitter_ms"] > 0) for c in figures["local_check"]}
    assert checked == {("rma_arar_arar", r, j) for r in (1, 2, 4) for j in (False, True)}
    for c in figures["local_check"]:
        assert c["measured_rate"] > 0 and c["predicted_rate"] > 0
    assert figures["max_local_error"] == max(c["error"] for c in figures["local_check"])


def test_a_long_run_extrapolates_the_slowest_ranks_lead():
    """Independent ranks: the slowest one's lead over the mean grows as sqrt(epochs), not epochs."""
    machine = Machine("t", unit_steps(), EpochWork(0.005), 102_400, node_ranks=4, slots=4)
    short, long = (predict(Job("ensemble", 400, epochs=e, jitter_s=0.010), machine) for e in (2000, 100_000))
    assert short.epoch_s > 0.015 + 0.0005  # max of 400 random walks over 2,000 epochs
    assert 0.015 < long.epoch_s < short.epoch_s and long.epoch_s - 0.015 < (short.epoch_s - 0.015) / 5


def test_model_curve_beside_measured_runs(monkeypatch):
    """sagips-analyze --model: the local profile calibrates on the series' fewest ranks."""
    monkeypatch.setattr(prof, "cores", lambda: 2)
    series = pd.DataFrame(dict(mode="arar", ranks=[4, 1, 2], epochs=100, disc_batch=320,
                               ranks_per_node=[4, 1, 2], total_train_time_s=[9.9, 1.0, 9.9]))  # fmt: skip
    curve = model_curve(series, "local")
    assert curve["ranks"].tolist() == [1, 2, 4]
    assert curve["total_train_time_s"].iloc[0] == pytest.approx(1.0, rel=1e-3)  # the calibration point
    # 2 ranks on 2 cores: the same compute; 4 ranks: twice (plus the rings, 3 steps of the host figures)
    assert curve["total_train_time_s"].iloc[1] == pytest.approx(1.0, rel=0.02)
    assert curve["total_train_time_s"].iloc[2] == pytest.approx(2.0, rel=0.05)
    assert curve["analysis_rate"].iloc[0] == pytest.approx(1 * 320 * 100 / 1.0, rel=1e-3)
    paper = pd.DataFrame(dict(mode="arar", ranks=[4, 400], epochs=100_000, disc_batch=102_400,
                              ranks_per_node=4, fuse=False, total_train_time_s=[1.0, 1.0]))  # fmt: skip
    expected = predict(Job("arar", 400, 4), prof.machine(prof.load("polaris"))).train_time_s
    assert model_curve(paper, "polaris")["total_train_time_s"].iloc[1] == pytest.approx(expected)


def test_analyze_draws_the_model_beside_measured_runs(tmp_path, monkeypatch):
    """sagips-analyze --model local: a dotted curve per series through its 1-rank point."""
    monkeypatch.setattr(prof, "cores", lambda: 2)
    for ranks, time_scale in ((1, 1.0), (2, 1.1), (4, 2.3)):
        make_run(tmp_path / "runs", f"arar{ranks}", [0.5] * ranks, mode="arar", time_scale=time_scale)
    analysis = replace(analyze([tmp_path / "runs"], noise=2), model="local")
    assert {"epochs", "disc_batch", "ranks_per_node", "jitter_ms", "max_staleness"} <= set(analysis.scaling)
    ax = draw(analysis, "fig12_analysis_rate.png").axes[0]
    dotted = [line for line in ax.lines if line.get_linestyle() == ":" and len(line.get_xdata()) == 3]
    assert len(dotted) == 1
    rates = dotted[0].get_ydata()
    assert rates[0] == pytest.approx(250, rel=1e-3)  # eq. (9) at 1 rank: 100 events x 10 epochs / 4 s
    assert rates[1] == pytest.approx(500, rel=0.01) and rates[2] == pytest.approx(500, rel=0.01)  # 2 cores


def test_analyze_names_a_bad_model_profile(tmp_path):
    make_run(tmp_path, "arar1", [0.5], mode="arar")
    out = run_sagips(str(tmp_path), "--model", "nope", cwd=tmp_path, module="sagips.analysis")
    assert out.returncode == 2 and out.stderr.strip().count("\n") == 0
    assert "--model: 'nope': neither a profile" in out.stderr
