"""Conv-4: four blocks of 3x3 convolution, batch norm, ReLU and 2x2 max pooling."""

from __future__ import annotations

from torch import Tensor, nn

from fewshot_bench.backbones.base import Backbone


def conv_block(c_in: int, c_out: int) -> nn.Sequential:
    """3x3 conv (padding 1) -> BN -> ReLU -> 2x2 max pool."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


class Conv4(Backbone):
    """The classic 4-block, 64-channel few-shot network (Vinyals et al. 2016; Finn et al. 2017).

    Features are globally average-pooled, so ``feature_dim == width`` for any input size;
    at 28x28 the last map is 1x1, which makes this identical to the classic flatten.
    """

    def __init__(self, in_channels: int = 1, width: int = 64, depth: int = 4) -> None:
        super().__init__()
        blocks = [conv_block(in_channels if i == 0 else width, width) for i in range(depth)]
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = self.out_dim = width

    def forward(self, x: Tensor) -> Tensor:
        """Pooled features ``[B, width]``."""
        return self.pool(self.blocks(x)).flatten(1)
