"""One rank's training objects, built from the shipped config like the trainer builds them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from sagips.networks import Discriminator, Generator
from sagips.paths import conf_dir
from sagips.proxy import ProxyApp, ProxyConfig


def load_config(scale: str, overrides: Sequence[str] = ()) -> DictConfig:
    """The composed ``sagips`` config for a ``scale`` preset, as a run would see it."""
    with initialize_config_dir(config_dir=str(conf_dir()), version_base=None):
        return compose("config", overrides=[f"scale={scale}", *overrides])


def make_proxy(cfg: DictConfig, device: torch.device) -> ProxyApp:
    """The proxy app of ``cfg.proxy`` on ``device``."""
    p = cfg.proxy
    config = ProxyConfig(tuple(p.truth), tuple(p.pmin), tuple(p.pmax), p.grid_points, p.x_min, p.x_max)
    return ProxyApp(config, device)


@dataclass
class Workload:
    """Networks, optimizers, proxy app and this rank's share of the reference data."""

    cfg: DictConfig
    samples: int
    events: int
    G: Generator
    D: Discriminator
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    proxy: ProxyApp
    pool: torch.Tensor
    ref_norms: torch.Tensor

    @property
    def disc_batch(self) -> int:
        return self.samples * self.events

    @classmethod
    def build(cls, cfg: DictConfig, samples: int, events: int, device: torch.device) -> Workload:
        torch.manual_seed(0)
        p, m, t = cfg.proxy, cfg.model, cfg.train
        proxy = make_proxy(cfg, device)
        reference, ref_norms = proxy.reference(p.reference_events, p.reference_seed)
        keep = max(1, round(t.data_fraction * len(reference)))
        pool = reference[torch.randperm(len(reference), device=device)[:keep]]
        G = Generator(m.noise_dim, 6, m.hidden, m.blocks).to(device)
        D = Discriminator(2, m.hidden, m.blocks).to(device)
        betas = (0.5, 0.999)
        opt_g = torch.optim.Adam(G.parameters(), lr=t.lr_g, betas=betas)
        opt_d = torch.optim.Adam(D.parameters(), lr=t.lr_d, betas=betas)
        return cls(cfg, samples, events, G, D, opt_g, opt_d, proxy, pool, ref_norms)
