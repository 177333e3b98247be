"""ResNet-12: four residual stages of three 3x3 convolutions with 2x2 max pooling.

The few-shot variant of Oreshkin et al. (TADAM, 2018) and Lee et al. (MetaOptNet, 2019):
widths 64-160-320-640, leaky ReLU (0.1), a 1x1 convolution on the shortcut.
"""

from __future__ import annotations

from torch import Tensor, nn

from fewshot_bench.backbones.base import Backbone


class ResBlock12(nn.Module):
    """Three conv-BN-(leaky ReLU) layers plus a projected shortcut, then max pool and dropout."""

    def __init__(self, c_in: int, c_out: int, dropout: float) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(3):
            layers += [nn.Conv2d(c_in if i == 0 else c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out)]
            if i < 2:
                layers.append(nn.LeakyReLU(0.1, inplace=True))
        self.body = nn.Sequential(*layers)
        self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out))
        self.out = nn.Sequential(nn.LeakyReLU(0.1), nn.MaxPool2d(2), nn.Dropout(dropout))

    def forward(self, x: Tensor) -> Tensor:
        """One residual stage."""
        return self.out(self.body(x) + self.shortcut(x))


class ResNet12(Backbone):
    """ResNet-12 with configurable stage widths; features are average-pooled, ``widths[-1]``-d."""

    def __init__(
        self, in_channels: int = 3, widths: tuple[int, ...] = (64, 160, 320, 640), dropout: float = 0.0
    ) -> None:
        super().__init__()
        widths = [int(w) for w in widths]
        chans = [in_channels, *widths]
        self.stages = nn.Sequential(*(ResBlock12(chans[i], chans[i + 1], dropout) for i in range(len(widths))))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = self.out_dim = widths[-1]

    def forward(self, x: Tensor) -> Tensor:
        """Pooled features ``[B, widths[-1]]``."""
        return self.pool(self.stages(x)).flatten(1)
