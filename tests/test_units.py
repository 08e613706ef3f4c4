"""Networks, proxy app, equations, grouping and config checks: pure functions, no MPI."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from sagips.config import validate
from sagips.equations import analysis_rate, ensemble_mean_sigma, param_samples_per_rank, residual
from sagips.errors import ConfigError
from sagips.grouping import grouping
from sagips.networks import Discriminator, Generator, n_trainable
from sagips.paths import conf_dir
from sagips.proxy import P_TRUE, ProxyApp, ProxyConfig


def test_parameter_counts_match_the_paper():
    assert n_trainable(Generator()) == 51_206
    assert n_trainable(Discriminator()) == 50_049


@pytest.mark.parametrize("truth", [P_TRUE, (0.7, 0.3, 1.5, 2.5, -0.8, 0.5)])
def test_sampler_reproduces_sigma_shape(truth):
    """Histogram chi2 of sampled events against the normalised sigma_0 / sigma_1."""
    app = ProxyApp(ProxyConfig(truth=tuple(truth)))
    events, _ = app.reference(200_000, seed=3)
    sigma = app.observables(torch.tensor([truth]))[0].numpy()
    x = app.x.numpy()
    edges = np.linspace(x[0], x[-1], 41)
    fine = np.linspace(x[0], x[-1], 20_001)
    for obs in range(2):
        dens = np.interp(fine, x, sigma[obs])
        mass = np.array([np.trapezoid(dens[(fine >= a) & (fine <= b)], fine[(fine >= a) & (fine <= b)])
                         for a, b in zip(edges[:-1], edges[1:])])  # fmt: skip
        expected = mass / mass.sum() * len(events)
        observed, _ = np.histogram(events[:, obs].numpy(), bins=edges)
        keep = expected > 20
        chi2 = (((observed - expected) ** 2 / expected)[keep]).sum()
        assert chi2 / keep.sum() < 2.0, f"observable {obs}: chi2/ndf {chi2 / keep.sum():.2f}"


def test_sampler_gradients_reach_every_parameter():
    app = ProxyApp(ProxyConfig())
    p = torch.tensor([P_TRUE] * 8, requires_grad=True)
    events, norms = app.sample(p, 500, generator=torch.Generator().manual_seed(0))
    (events.pow(2).sum() + norms.sum()).backward()
    assert torch.isfinite(p.grad).all()
    assert (p.grad.abs().sum(0) > 0).all()


def test_sampler_memory_is_linear_in_events():
    """A grid x events comparison would need 1000 x 1e6 floats; the sorted search does not."""
    app = ProxyApp(ProxyConfig())
    events, norms = app.sample(torch.tensor([P_TRUE]), 1_000_000)
    assert events.shape == (1_000_000, 2) and norms.shape == (1, 2)
    assert float(events.min()) >= app.cfg.x_min and float(events.max()) <= app.cfg.x_max


def test_equations_on_hand_worked_numbers():
    assert residual([2.0, -0.5], [1.5, -0.25]).tolist() == [0.25, 0.5]  # eq. 6
    preds = np.array([[[1.0], [3.0]], [[3.0], [5.0]]])  # M=2 members, k=2 noise vectors
    mean, sigma = ensemble_mean_sigma(preds)  # eqs. 7, 8: means 2 and 4, spreads 1 and 1
    assert mean.tolist() == [3.0] and sigma.tolist() == [1.0]
    assert analysis_rate(8, 102_400, 100_000, 3600.0) == pytest.approx(8 * 102_400 * 100_000 / 3600)
    assert [param_samples_per_rank(n) for n in (1, 3, 20, 60, 2048)] == [1024, 341, 51, 17, 0]


def test_grouping_of_twelve_ranks_like_fig6():
    g = grouping(rank=5, ranks=12, ranks_per_node=4)
    assert (g.inner_group, g.local_rank) == (1, 1)
    assert g.inner_members == (4, 5, 6, 7)
    assert (g.inner_left, g.inner_right) == (4, 6)
    assert g.outer_members() == (0, 4, 8) and not g.in_outer_group()
    assert g.outer_members(column=1) == (1, 5, 9) and g.in_outer_group(column=1)
    assert grouping(0, 12, 4).in_outer_group()
    edge = grouping(7, 12, 4)
    assert (edge.inner_left, edge.inner_right) == (6, 4)


def test_grouping_rejects_bad_shapes():
    with pytest.raises(ValueError):
        grouping(0, 6, 4)
    with pytest.raises(ValueError):
        grouping(6, 6, 3)


@pytest.fixture(scope="module")
def base_cfg() -> dict:
    with initialize_config_dir(config_dir=str(conf_dir()), version_base=None):
        cfg = compose(config_name="config")
    return OmegaConf.to_container(cfg, resolve=True)


@pytest.mark.parametrize("key,value", [
    ("mode", "ring"), ("scale", "huge"), ("cluster.name", "lsf"), ("ranks", 0), ("ranks", "two"),
    ("ranks_per_node", 3), ("h", 0), ("train.data_fraction", 0.0), ("train.data_fraction", 1.5),
    ("proxy.truth", [1.0, 0.5, 3.0]), ("proxy.truth", [4.0, -0.5, 3.0, 1.0, -0.5, 4.0]),
    ("proxy.truth", [2.0, 0.0, 3.0, 1.0, -0.5, 4.0]), ("train.epochs", 0),
    ("transport.fuse", "yes"), ("train.lr_g", -1.0),
])  # fmt: skip
def test_validation_names_key_and_value(base_cfg, key, value):
    cfg = OmegaConf.to_container(OmegaConf.create(base_cfg))
    if key == "ranks_per_node":
        cfg["ranks"] = 4
    node = cfg
    *parents, leaf = key.split(".")
    for part in parents:
        node = node[part]
    node[leaf] = value
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    assert err.value.key == key and repr(value) in str(err.value) and "\n" not in str(err.value)


def test_every_option_of_every_group_composes_and_validates():
    groups = ["mode", "scale", "sampling", "cluster", "model"]
    with initialize_config_dir(config_dir=str(conf_dir()), version_base=None):
        for group in groups:
            for option in sorted(p.stem for p in (conf_dir() / group).glob("*.yaml")):
                cfg = compose(config_name="config", overrides=[f"{group}={option}", "ranks=2"])
                validate(OmegaConf.to_container(cfg, resolve=True))
