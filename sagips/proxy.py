"""The 1D proxy app: theory (two parton-like densities) and a differentiable sampler.

Parameters p = (p0..p5) define u(x) = p0 x^p1 (1-x)^p2 and d(x) = p3 x^p4 (1-x)^p5;
the observables are sigma_0 = 4u + d (events y0) and sigma_1 = 4d + u (events y1),
eq. (4). Events come from inverse-CDF sampling on a fixed x grid: the bin search
is discrete, but the linear interpolation inside the bin depends on the CDF and
so carries gradients back to p.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

PMIN = (0.0, -1.0, 0.0, 0.0, -1.0, 0.0)
PMAX = (3.0, 1.0, 5.0, 3.0, 1.0, 5.0)
P_TRUE = (2.1875, -0.5, 3.0, 1.09375, -0.5, 4.0)
N_PARAMS = 6


@dataclass(frozen=True)
class ProxyConfig:
    truth: tuple[float, ...] = P_TRUE
    pmin: tuple[float, ...] = PMIN
    pmax: tuple[float, ...] = PMAX
    grid_points: int = 1000
    x_min: float = 0.1
    x_max: float = 0.99999


class ProxyApp:
    """Theory plus sampler on one device; ``sample`` is the environment's pipeline f(x_hat(p))."""

    def __init__(self, cfg: ProxyConfig, device: torch.device | str = "cpu") -> None:
        self.cfg = cfg
        self.device = torch.device(device)
        self.x = torch.linspace(cfg.x_min, cfg.x_max, cfg.grid_points, device=self.device)
        self.log_x = torch.log(self.x)
        self.log_1mx = torch.log1p(-self.x)
        self.dx = self.x[1:] - self.x[:-1]
        self.pmin = torch.tensor(cfg.pmin, device=self.device)
        self.pmax = torch.tensor(cfg.pmax, device=self.device)

    def to_physical(self, p_norm: torch.Tensor) -> torch.Tensor:
        """Map the generator's sigmoid output in [0, 1]^6 onto [pmin, pmax]."""
        return self.pmin + p_norm * (self.pmax - self.pmin)

    def observables(self, p: torch.Tensor) -> torch.Tensor:
        """sigma_0 and sigma_1 on the grid for a batch of parameters: (S, 6) -> (S, 2, grid)."""
        u = p[:, 0:1] * torch.exp(p[:, 1:2] * self.log_x + p[:, 2:3] * self.log_1mx)
        d = p[:, 3:4] * torch.exp(p[:, 4:5] * self.log_x + p[:, 5:6] * self.log_1mx)
        return torch.stack((4.0 * u + d, 4.0 * d + u), dim=1)

    def _cdf(self, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Trapezoid integral (the observable's norm) and the normalised CDF on the grid."""
        areas = 0.5 * (sigma[..., 1:] + sigma[..., :-1]) * self.dx
        cum = torch.cumsum(areas, dim=-1)
        norm = cum[..., -1:]
        cdf = torch.cat((torch.zeros_like(norm), cum / norm), dim=-1)
        return norm.squeeze(-1), cdf

    def sample(
        self, p: torch.Tensor, events_per_sample: int, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw events for each parameter set by inverse-CDF sampling.

        Returns ``events`` of shape (S * events_per_sample, 2) (columns y0, y1,
        drawn independently and paired into rows) and ``norms`` of shape (S, 2),
        the integrals of sigma_0 and sigma_1 over the grid.
        """
        sigma = self.observables(p)  # (S, 2, G)
        norms, cdf = self._cdf(sigma)
        s = p.shape[0]
        u = torch.rand(s, 2, events_per_sample, device=p.device, generator=generator)
        # O(log grid) per event; the index carries no gradient, the CDF values do.
        hi = torch.searchsorted(cdf.detach(), u).clamp_(1, self.cfg.grid_points - 1)
        lo = hi - 1
        c_lo = torch.gather(cdf, -1, lo)
        c_hi = torch.gather(cdf, -1, hi)
        w = (u - c_lo) / (c_hi - c_lo).clamp_min(1e-12)
        x_lo = self.x[lo]
        events = x_lo + w * (self.x[hi] - x_lo)  # (S, 2, E)
        return events.permute(0, 2, 1).reshape(-1, 2), norms

    def reference(self, n_events: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The loop-closure data set: ``n_events`` events at the true parameters, fixed seed."""
        gen = torch.Generator(device=self.device).manual_seed(seed)
        truth = torch.tensor(self.cfg.truth, device=self.device).unsqueeze(0)
        with torch.no_grad():
            events, norms = self.sample(truth, n_events, generator=gen)
        return events, norms[0]
