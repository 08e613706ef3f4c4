"""Generator and discriminator of the GAN optimizer (section III, V-A).

With the paper's sizes (hidden width 128, three hidden blocks) the generator has
51,206 and the discriminator 50,049 trainable parameters.
"""

from __future__ import annotations

from torch import nn

LEAK = 0.2


def _mlp(n_in: int, n_out: int, hidden: int, blocks: int) -> nn.Sequential:
    # In place: a Linear's backward needs its input, not its output, so the activation
    # may overwrite the pre-activation; that saves a full-batch tensor per layer.
    layers: list[nn.Module] = [nn.Linear(n_in, hidden), nn.LeakyReLU(LEAK, inplace=True)]
    for _ in range(blocks):
        layers += [nn.Linear(hidden, hidden), nn.LeakyReLU(LEAK, inplace=True)]
    layers += [nn.Linear(hidden, n_out), nn.Sigmoid()]
    net = nn.Sequential(*layers)
    for layer in net:
        if isinstance(layer, nn.Linear) and layer.out_features == hidden:
            nn.init.kaiming_normal_(layer.weight, a=LEAK, nonlinearity="leaky_relu")
    return net


class Generator(nn.Sequential):
    """Noise z ~ N(0, 1) -> normalised parameters in [0, 1]^n_params (sigmoid output)."""

    def __init__(self, noise_dim: int = 6, n_params: int = 6, hidden: int = 128, blocks: int = 3):
        super().__init__(*_mlp(noise_dim, n_params, hidden, blocks))
        self.noise_dim = noise_dim


class Discriminator(nn.Sequential):
    """Events (y0, y1) -> probability of being reference data."""

    def __init__(self, n_obs: int = 2, hidden: int = 128, blocks: int = 3):
        super().__init__(*_mlp(n_obs, 1, hidden, blocks))


def n_trainable(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters() if p.requires_grad)
