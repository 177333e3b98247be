"""Stage 1 of the paper (appendix B.2): supervised pretraining of a backbone on the meta-train classes.

SGD with Nesterov momentum and weight decay, a step learning-rate schedule and random-shift
augmentation. Each epoch ends with an atomic checkpoint; running again with the same
checkpoint path continues from the last finished epoch. Epoch ``e`` draws its shuffling,
augmentation and dropout from a generator seeded by ``(seed, e)``, so an interrupted and
resumed run ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn
from tqdm import tqdm

from fewshot_bench.backbones.base import out_dim
from fewshot_bench.backbones.checkpoint import CHECKPOINT_FORMAT, build_backbone, load_checkpoint
from fewshot_bench.checkpoints import save_atomic
from fewshot_bench.data.images import ImageSpec, ImageSplit, augment
from fewshot_bench.errors import ConfigError

log = logging.getLogger(__name__)
CPU = torch.device("cpu")


@dataclass
class PretrainConfig:
    """Pretraining hyperparameters (``--set key=value``); defaults suit Omniglot at 28x28 on a CPU."""

    epochs: int = 60
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    # Paper Table 4 (miniImageNet): lr x0.2 after 3k, 5k, 7k, 8k, 9k of 10k steps -- the
    # same fractions of this run's total steps.
    lr_milestones: tuple[float, ...] = (0.3, 0.5, 0.7, 0.8, 0.9)
    lr_gamma: float = 0.2
    shift: int = 2  # random translation of up to this many pixels (zero padding)
    flip: bool = False  # random horizontal flips (off for characters, on for natural images)
    label_smoothing: float = 0.0
    seed: int = 0

    def validate(self) -> None:
        """Reject values that cannot train."""
        if self.epochs < 1 or self.batch_size < 1:
            raise ConfigError("pretraining needs epochs >= 1 and batch_size >= 1")
        if self.lr <= 0 or not 0 <= self.momentum < 1 or self.weight_decay < 0:
            raise ConfigError("pretraining needs lr > 0, 0 <= momentum < 1 and weight_decay >= 0")
        if any(not 0 < m < 1 for m in self.lr_milestones):
            raise ConfigError("lr_milestones are fractions of the run, each strictly between 0 and 1")
        if self.shift < 0:
            raise ConfigError("shift must be >= 0 pixels")


def learning_rate(config: PretrainConfig, step: int, total_steps: int) -> float:
    """The step schedule: ``lr * gamma ** (milestones passed)`` at optimisation step ``step``."""
    passed = sum(step >= round(m * total_steps) for m in config.lr_milestones)
    return config.lr * config.lr_gamma**passed


@contextlib.contextmanager
def exclusive(out: Path) -> Iterator[None]:
    """Hold ``<out>.lock`` so two pretraining processes never write the same checkpoint."""
    lock = out.with_name(out.name + ".lock")
    out.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            break
        except FileExistsError:
            try:
                pid = int(lock.read_text().strip() or 0)
                os.kill(pid, 0)  # raises if that process is gone
            except (ValueError, ProcessLookupError, FileNotFoundError):
                lock.unlink(missing_ok=True)  # stale: its process died without cleaning up
                continue
            except PermissionError:
                pass
            raise ConfigError(
                f"another pretraining process (pid {pid}) is writing {out}; wait for it or use another --out"
            ) from None
    else:
        raise ConfigError(f"cannot lock {out}; remove {lock} if no pretraining is running")
    try:
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        yield
    finally:
        lock.unlink(missing_ok=True)


def _epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch * 7_919 + 12_345) % (2**63)


@dataclass
class PretrainState:
    """Everything a checkpoint holds, as live objects."""

    model: nn.Module
    head: nn.Linear
    optimizer: torch.optim.Optimizer
    epoch: int
    history: list[dict[str, float]]


def _new_state(model: nn.Module, num_classes: int, config: PretrainConfig) -> PretrainState:
    head = nn.Linear(out_dim(model), num_classes)
    params = list(model.parameters()) + list(head.parameters())
    opt = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov,
                          weight_decay=config.weight_decay)
    return PretrainState(model, head, opt, 0, [])


def _checkpoint(state: PretrainState, meta: dict[str, Any]) -> dict[str, Any]:
    return {
        **meta,
        "epoch": state.epoch,
        "history": state.history,
        "model": state.model.state_dict(),
        "head": state.head.state_dict(),
        "optimizer": state.optimizer.state_dict(),
    }


def _comparable(config: dict[str, Any]) -> dict[str, Any]:
    """Config fields that must match for a resume (``epochs`` may be raised to train longer)."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in config.items() if k != "epochs"}


def train_epoch(state: PretrainState, split: ImageSplit, spec: ImageSpec, config: PretrainConfig,
                device: torch.device, total_steps: int, progress: bool) -> dict[str, float]:
    """One pass over the training images in a seeded random order; returns loss, accuracy, lr."""
    epoch = state.epoch
    gen = torch.Generator().manual_seed(_epoch_seed(config.seed, epoch))
    torch.manual_seed(_epoch_seed(config.seed, epoch))  # dropout masks
    order = torch.randperm(len(split), generator=gen)
    batches = [order[i : i + config.batch_size] for i in range(0, len(order), config.batch_size)]
    steps_per_epoch = len(batches)
    state.model.train()
    state.head.train()
    loss_fn = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    total_loss = torch.zeros((), dtype=torch.float64)
    correct = 0
    lr = config.lr
    for b, idx in enumerate(tqdm(batches, desc=f"epoch {epoch + 1}/{config.epochs}", disable=not progress,
                                 leave=False)):
        lr = learning_rate(config, epoch * steps_per_epoch + b, total_steps)
        for group in state.optimizer.param_groups:
            group["lr"] = lr
        x = augment(split.images[idx], spec, config.shift, config.flip, gen).to(device)
        y = split.labels[idx].to(device)
        logits = state.head(state.model(x))
        loss = loss_fn(logits, y)
        state.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        state.optimizer.step()
        total_loss += loss.detach().double().cpu() * len(idx)
        correct += int((logits.argmax(-1) == y).sum())
    return {"loss": float(total_loss) / len(split), "accuracy": correct / len(split), "lr": lr}


def pretrain(
    factory: Callable[..., nn.Module],
    backbone: str,
    options: dict[str, Any],
    split: ImageSplit,
    spec: ImageSpec,
    layout: str,
    config: PretrainConfig,
    out: Path,
    device: torch.device = CPU,
    restart: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """Pretrain ``backbone`` on ``split`` (the meta-train classes), checkpointing to ``out`` each epoch.

    An existing checkpoint at ``out`` is resumed unless ``restart``; it must be of the same
    backbone, options, classes and config (``epochs`` excepted). Returns the final checkpoint.
    """
    config.validate()
    with exclusive(out):
        return _pretrain(factory, backbone, options, split, spec, layout, config, out, device, restart, progress)


def _pretrain(factory: Callable[..., nn.Module], backbone: str, options: dict[str, Any], split: ImageSplit,
              spec: ImageSpec, layout: str, config: PretrainConfig, out: Path, device: torch.device,
              restart: bool, progress: bool) -> dict[str, Any]:
    meta = {
        "format": CHECKPOINT_FORMAT,
        "backbone": backbone,
        "options": dict(options),
        "image": dataclasses.asdict(spec),
        "layout": layout,
        "classes": list(split.class_names),
        "config": dataclasses.asdict(config),
    }
    torch.manual_seed(config.seed)  # weight initialisation of backbone and head
    model = build_backbone(factory, backbone, spec.channels, options)
    state = _new_state(model, split.num_classes, config)
    if out.exists() and not restart:
        ckpt = load_checkpoint(out, backbone=backbone)
        for key in ("options", "image", "classes"):
            if ckpt[key] != meta[key]:
                raise ConfigError(
                    f"checkpoint {out} was made with other {key} ({ckpt[key]!r:.80}); "
                    "use another --out or pass --restart"
                )
        if _comparable(ckpt["config"]) != _comparable(meta["config"]):
            diff = {k: v for k, v in _comparable(ckpt["config"]).items() if _comparable(meta["config"]).get(k) != v}
            raise ConfigError(f"checkpoint {out} was made with other settings {diff}; "
                              "rerun with them or pass --restart")
        state.model.load_state_dict(ckpt["model"])
        state.head.load_state_dict(ckpt["head"])
        state.optimizer.load_state_dict(ckpt["optimizer"])
        state.epoch, state.history = int(ckpt["epoch"]), list(ckpt["history"])
        if state.epoch < config.epochs:
            log.info("resuming %s from epoch %d of %d (%s)", backbone, state.epoch, config.epochs, out)
    state.model.to(device)
    state.head.to(device)
    # Optimizer momentum buffers follow their parameters to the device.
    for s in state.optimizer.state.values():
        for k, v in s.items():
            if torch.is_tensor(v) and k != "step":
                s[k] = v.to(device)
    total_steps = config.epochs * -(-len(split) // config.batch_size)
    epochs = tqdm(range(state.epoch, config.epochs), desc=f"pretrain {backbone}", disable=not progress,
                  initial=state.epoch, total=config.epochs)
    for _ in epochs:
        t0 = time.perf_counter()
        stats = train_epoch(state, split, spec, config, device, total_steps, progress)
        state.epoch += 1
        stats = {"epoch": state.epoch, **stats, "seconds": time.perf_counter() - t0}
        state.history.append(stats)
        log.info("epoch %d/%d  loss %.4f  train acc %.3f  lr %.4g  %.1fs", state.epoch, config.epochs,
                 stats["loss"], stats["accuracy"], stats["lr"], stats["seconds"])
        save_atomic(_checkpoint(state, meta), out)
    state.model.to("cpu")
    return _checkpoint(state, meta)
