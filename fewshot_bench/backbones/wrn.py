"""Wide ResNet WRN-d-k (Zagoruyko & Komodakis 2016), the paper's feature extractor (appendix B.2).

Three stages of ``(d - 4) / 6`` pre-activation basic blocks, widths 16k, 32k, 64k, strides
1, 2, 2, dropout between the two convolutions of every block. The exported features are
the paper's "layer 21" of WRN-28-10: counting the stem convolution as layer 1 and two
convolutions per block, layer 21 is the output of block 2 of stage 3. It is passed
through a ReLU and average-pooled over space: 64k = 640 dimensions, non-negative.
Pretraining classifies from the full network (all blocks, final BN-ReLU, pooling).
"""

from __future__ import annotations

from torch import Tensor, nn

from fewshot_bench.backbones.base import Backbone
from fewshot_bench.errors import ConfigError


class WideBlock(nn.Module):
    """Pre-activation basic block: BN-ReLU-conv3x3-dropout-BN-ReLU-conv3x3 plus shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.drop = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.relu = nn.ReLU()
        # A 1x1 projection only where the shape changes, as in the WRN paper.
        self.shortcut = (None if (c_in == c_out and stride == 1)
                         else nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        """One block."""
        o = self.relu(self.bn1(x))
        skip = x if self.shortcut is None else self.shortcut(o)
        o = self.conv1(o)
        o = self.conv2(self.drop(self.relu(self.bn2(o))))
        return o + skip


class WideResNet(Backbone):
    """WRN-``depth``-``widen`` with dropout in blocks; ``embed`` returns stage-3 block-``export_block`` features."""

    def __init__(
        self,
        in_channels: int = 3,
        depth: int = 28,
        widen: int = 10,
        dropout: float = 0.5,
        export_block: int = 2,
    ) -> None:
        super().__init__()
        if depth < 10 or (depth - 4) % 6:
            raise ConfigError(f"WRN depth must be 6n + 4 with n >= 1 (10, 16, 22, 28, ...), got {depth}")
        n = (depth - 4) // 6
        if not 1 <= export_block <= n:
            raise ConfigError(f"export_block must be in 1..{n} for WRN depth {depth}, got {export_block}")
        widths = [16, 16 * widen, 32 * widen, 64 * widen]
        self.stem = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)
        stages = []
        for s, stride in enumerate((1, 2, 2)):
            blocks = [WideBlock(widths[s] if b == 0 else widths[s + 1], widths[s + 1], stride if b == 0 else 1, dropout)
                      for b in range(n)]
            stages.append(nn.Sequential(*blocks))
        self.stage1, self.stage2, self.stage3 = stages
        self.bn = nn.BatchNorm2d(widths[3])
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.export_block = export_block
        self.feature_dim = self.out_dim = widths[3]

    def _stage3_input(self, x: Tensor) -> Tensor:
        return self.stage2(self.stage1(self.stem(x)))

    def forward(self, x: Tensor) -> Tensor:
        """The classifier's features: all blocks, final BN-ReLU, average pool, ``[B, 64 * widen]``."""
        return self.pool(self.relu(self.bn(self.stage3(self._stage3_input(x))))).flatten(1)

    def embed(self, x: Tensor) -> Tensor:
        """Exported features: ReLU of stage-3 block ``export_block``'s output, average-pooled."""
        h = self._stage3_input(x)
        for block in self.stage3[: self.export_block]:
            h = block(h)
        return self.pool(self.relu(h)).flatten(1)
