"""Registers the built-in backbones ``conv4``, ``resnet12`` and ``wrn-28-10`` (entry point ``backbones``)."""

from __future__ import annotations

from fewshot_bench.api.hooks import RegisterBackbone, hookimpl
from fewshot_bench.backbones.conv4 import Conv4
from fewshot_bench.backbones.resnet12 import ResNet12
from fewshot_bench.backbones.wrn import WideResNet


@hookimpl
def fewshot_bench_register_backbones(register: RegisterBackbone) -> None:
    """Register Conv-4, ResNet-12 and WRN-28-10 (each factory takes its options as keywords)."""
    register("conv4", Conv4)
    register("resnet12", ResNet12)
    register("wrn-28-10", WideResNet)
