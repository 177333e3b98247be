"""Populations: S members of one learner (one seed each) meta-trained as one batched tensor program.

Each member is a :class:`~fewshot_bench.protocol.train.MetaTrainer` of its own (its seed, parameters,
Adam state, training episodes, validation, best checkpoint, early stopping, checkpoint
file), so a member trains exactly as its run alone would. Only the update is batched: the
members' parameters are stacked (``torch.func.stack_module_state``), ``meta_loss`` runs
once under ``torch.func.vmap`` over member-stacked meta-batches, the gradient of the summed
losses gives each member its own gradients, and the NaN guard, per-tensor clipping and Adam
act on each member's slice. Only members still training are stacked: one that stops early
leaves the stack (the others are restacked), so it costs nothing from then on.

A learner that ``vmap`` cannot run (``torch.autograd.grad`` in its inner loop,
data-dependent Python control flow, a random draw that is not a pure function of its key)
gets the plain sequential path: its members train one after another. A population whose
estimated memory (measured on a trial step of two members) exceeds the memory available
trains as groups that fit, one group after another.
"""

from __future__ import annotations

import logging
import math
import os
import resource
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap

from fewshot_bench.api.batches import EpisodeBatch
from fewshot_bench.api.learner import Learner
from fewshot_bench.api.training_noise import Noise
from fewshot_bench.console.progress import progress
from fewshot_bench.errors import ConfigError
from fewshot_bench.protocol.profiling import Profiler
from fewshot_bench.protocol.step import OuterStep
from fewshot_bench.protocol.train import MetaTrainer, TrainResult

log = logging.getLogger(__name__)

BATCHED, SEQUENTIAL = "batched", "sequential"
MEMORY_ENV = "FEWSHOT_BENCH_POPULATION_MEMORY"  # bytes a population may use ("512M", "4G"); default: what is free
FREE_FRACTION = 0.8  # of the memory free before training: headroom for the allocator and everything else
TRIAL_MEMBERS = 2  # members in the trial step that measures a member's memory


class _Objective(nn.Module):
    """A learner's meta-loss (or, without a batch, its NaN fallback loss) as a module call, for ``functional_call``."""

    def __init__(self, learner: Learner) -> None:
        super().__init__()
        self.learner = learner

    def forward(self, batch: dict[str, Tensor] | None) -> tuple[Tensor, dict[str, Tensor]]:
        if batch is None:
            return self.learner.nan_fallback_loss(), {}
        out = self.learner.meta_loss(EpisodeBatch(**batch))
        return out.loss, dict(out.metrics)


def stacked_batch(batches: list[EpisodeBatch]) -> dict[str, Tensor]:
    """The members' meta-batches as one dict of [S, B, ...] tensors (fields that are None left out)."""
    fields = ("support", "support_labels", "query", "query_labels", "episode_ids", "classes")
    return {f: torch.stack([getattr(b, f) for b in batches]) for f in fields if getattr(batches[0], f) is not None}


@dataclass
class PopulationMemory:
    """What a population's training held at its peak: device memory on CUDA, the process's resident set on CPU."""

    peak_bytes: int
    source: str  # "cuda.max_memory_allocated" or "getrusage.ru_maxrss"
    parameter_bytes: int  # stacked parameters, gradients and Adam's two moments


def peak_memory(device: torch.device, parameter_bytes: int) -> PopulationMemory:
    """The peak memory so far (CUDA: allocated on the device; CPU: the process's maximum resident set)."""
    if device.type == "cuda":
        peak, source = int(torch.cuda.max_memory_allocated(device)), "cuda.max_memory_allocated"
    else:  # ru_maxrss is in KiB on Linux
        peak, source = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "getrusage.ru_maxrss"
    return PopulationMemory(peak, source, parameter_bytes)


UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def parse_bytes(text: str) -> int:
    """``"4G"``, ``"512M"``, ``"1.5G"`` or plain bytes -> bytes (binary units; a trailing ``B``/``iB`` is allowed)."""
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = t[-1:] if t[-1:] in UNITS else ""
    try:
        value = float(t[: len(t) - len(unit)])
    except ValueError:
        value = -1.0
    size = value * UNITS[unit]
    if not (math.isfinite(size) and size >= 1):  # nan, inf, 0 and negatives are no budget
        raise ConfigError(f"{MEMORY_ENV}={text!r} is not a size: give a finite, positive number of bytes or e.g. "
                          "512M, 4G")
    return int(size)


def free_memory(device: torch.device) -> int:
    """Bytes free for tensors now: the device's free memory on CUDA, ``MemAvailable`` of /proc/meminfo on CPU."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def configured_memory() -> int | None:
    """``$FEWSHOT_BENCH_POPULATION_MEMORY`` in bytes (None: unset); a value that is not a size is a ConfigError."""
    configured = os.environ.get(MEMORY_ENV, "").strip()
    return parse_bytes(configured) if configured else None


def memory_budget(device: torch.device) -> int:
    """The bytes a population may take: ``$FEWSHOT_BENCH_POPULATION_MEMORY``, else 80% of what is free now."""
    configured = configured_memory()
    return configured if configured is not None else int(FREE_FRACTION * free_memory(device))


@contextmanager
def counting_saved_tensors() -> Iterator[dict[int, int]]:
    """Within the block, autograd's saved tensors as {storage address: bytes}: a step's memory for its backward.

    Tensors saved under ``vmap`` are counted by the storage they batch, so a trial step of S
    members counts S members' activations.
    """
    seen: dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        physical = t
        while torch._C._functorch.is_batchedtensor(physical):
            physical = torch._C._functorch.get_unwrapped(physical)
        try:
            storage = physical.untyped_storage()
            seen[storage.data_ptr()] = storage.nbytes()
        except (RuntimeError, NotImplementedError):  # no storage (a functional wrapper): its own size
            seen[id(physical)] = physical.numel() * physical.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield seen


class Population:
    """S :class:`MetaTrainer` members of one learner (same class, config and task), trained together.

    ``run`` trains every member as its run alone would and leaves each member's best validated
    weights loaded; ``path`` says whether the update is batched over members or the members
    train one after another (``force_sequential``, or a learner ``vmap`` cannot run), and
    ``groups`` how many members each batched group held (one group unless memory was short).
    """

    def __init__(
        self, members: list[MetaTrainer], profiler: Profiler | None = None, force_sequential: bool = False
    ) -> None:
        if not members:
            raise ValueError("a population needs at least one member")
        first = members[0]
        if any(type(m.learner) is not type(first.learner) or m.learner.config != first.learner.config for m in members):
            raise ValueError("the members of a population share one learner class and config")
        self.members, self.profiler = members, profiler or Profiler(False)
        self.device = first.device
        self.why_sequential: str | None = "asked for" if force_sequential else None
        self._objective = _Objective(first.learner)
        self.names = [n for n, p in first.learner.named_parameters()]
        self.trainable = [n for n, p in first.learner.named_parameters() if p.requires_grad]
        # The stacked state: members `live` (indices into members), in that order.
        self.live: list[int] = []
        self.params: dict[str, Tensor] = {}
        self.buffers: dict[str, Tensor] = {}
        self.optimizer: torch.optim.Adam | None = None
        self.outer_step: OuterStep | None = None  # gradients, guard, clipping and Adam of the stacked parameters
        self.noise: Noise | None = None  # the live members' noise keys [S]: each draws with its own row
        # None: a non-finite step is a no-op (zero gradients), as in OuterStep.gradients.
        self.has_fallback = first.learner.nan_fallback_loss() is not None
        self.member_bytes: int | None = None  # a member's estimated training memory (probe)
        self.budget_bytes: int | None = None
        self.groups: list[int] = []
        self.trained_with: dict[int, int] = {}  # member index -> members in its batched group (absent: trained alone)

    @property
    def path(self) -> str:
        """``batched`` or ``sequential``."""
        return SEQUENTIAL if self.why_sequential else BATCHED

    @property
    def parameter_bytes(self) -> int:
        """Bytes of the stacked trainable parameters, their gradients and Adam's two moments."""
        return self._member_parameter_bytes() * len(self.members)

    def _member_parameter_bytes(self) -> int:
        m = self.members[0].learner
        return 4 * sum(p.numel() * p.element_size() for p in m.parameters() if p.requires_grad)

    # --- the batched update ----------------------------------------------------------------

    def _losses(self, params: dict[str, Tensor], batch: dict[str, Tensor] | None) -> tuple[Tensor, dict[str, Tensor]]:
        """Every live member's loss [S] (and metrics [S]) under ``vmap``; ``batch=None``: the NaN fallback losses.

        The learner draws its noise with its member's key (a row of :attr:`noise`'s, keyed
        for the step by :meth:`update`); a draw from torch's generators is refused
        (``randomness="error"``): members could not reproduce their runs alone.
        """
        noise = self._objective.learner.noise
        noise.draws = 0  # each step's draws count from 0, as Noise.start does alone

        def one(p: dict[str, Tensor], b: dict[str, Tensor], x: dict[str, Tensor] | None, key: Tensor):
            with noise.keyed(key):
                return functional_call(self._objective, ({f"learner.{k}": v for k, v in p.items()}
                                                         | {f"learner.{k}": v for k, v in b.items()}), (x,))

        batched = vmap(one, in_dims=(0, 0, None if batch is None else 0, 0), randomness="error")
        return batched(params, self.buffers, batch, self.noise.key)

    def _fallback_losses(self) -> Tensor | None:
        """Every live member's NaN fallback loss [S] (None: the learner has none, a non-finite step is a no-op)."""
        return self._losses(self.params, None)[0] if self.has_fallback else None

    def update(self, step: int, batches: list[EpisodeBatch]) -> dict[str, Tensor]:
        """Meta-losses, per-member NaN guard and clipping, one Adam step for every live member; metrics [S]."""
        self.noise.start(step)
        with self.profiler.section("meta_loss"):
            losses, metrics = self._losses(self.params, stacked_batch(batches))
        finite = self.outer_step(losses, self.profiler)
        return {"loss": losses.detach(), "nan_step": (~finite).float(), **{k: v.detach() for k, v in metrics.items()}}

    def step(self, step: int) -> dict[str, Tensor]:
        """One batched meta-training step: every live member's meta-batch ``step``, then :meth:`update`; metrics [S]."""
        with self.profiler.section("sampling"):
            batches = [self.members[s].meta_batch(step) for s in self.live]
        return self.update(step, batches)

    # --- members <-> stacked state -------------------------------------------------------

    def stack(self, which: list[int] | None = None) -> None:
        """Stack members ``which`` (default: those still training) with their Adam states, e.g. as resumed.

        Every stacked member must be at the same step (one Adam step count for all).
        """
        self.live = self._training() if which is None else list(which)
        members = [self.members[s] for s in self.live]
        params, self.buffers = stack_module_state([m.learner for m in members])
        self.params = {n: params[n] for n in self.names}
        lr = members[0].optimizer.param_groups[0]["lr"]
        wrt = [self.params[n] for n in self.trainable]
        self.optimizer = torch.optim.Adam(wrt, lr=lr, fused=True, capturable=self.device.type == "cuda")
        cfg = members[0].learner.config
        self.outer_step = OuterStep(wrt, self.optimizer, cfg.grad_clip_value, cfg.grad_clip_norm,
                                    self._fallback_losses, self.device, members=True)
        states = [[m.optimizer.state.get(p) for p in m.params] for m in members]
        if states[0] and states[0][0]:  # resumed or restacked: every member is at the same Adam step
            for i, p in enumerate(wrt):
                moments = {k: torch.stack([st[i][k] for st in states]) for k in ("exp_avg", "exp_avg_sq")}
                self.optimizer.state[p] = {"step": states[0][i]["step"].clone(), **moments}
        self.noise = Noise([m.spec.seed for m in members], self.device)

    def unstack(self) -> None:
        """Copy the stacked parameters and Adam state into the live members' own learners and optimizers.

        Each member's learner and optimizer then hold what its run alone would: its validation,
        best checkpoint and checkpoint file are the member's own code path.
        """
        with torch.no_grad():
            for i, s in enumerate(self.live):
                m = self.members[s]
                named = dict(m.learner.named_parameters())
                for n in self.names:
                    named[n].copy_(self.params[n][i])
                for n, p in zip(self.trainable, m.params):
                    stacked = self.optimizer.state.get(self.params[n])
                    if stacked:
                        m.optimizer.state[p] = {"step": stacked["step"].clone(),
                                                "exp_avg": stacked["exp_avg"][i].clone(),
                                                "exp_avg_sq": stacked["exp_avg_sq"][i].clone()}

    def _drop_stack(self) -> None:
        """No member stacked (after the probe's trial step, or when the last live member stopped)."""
        self.live, self.params, self.optimizer, self.outer_step = [], {}, None, None

    @staticmethod
    def _active(m: MetaTrainer) -> bool:
        return m.result.steps < m.spec.steps and not m.result.stopped_early

    def _training(self) -> list[int]:
        """The members still training (neither at their last step nor stopped early)."""
        return [s for s, m in enumerate(self.members) if self._active(m)]

    # --- which path, and how many members at once -------------------------------------------

    @staticmethod
    def _adam_steps(m: MetaTrainer) -> tuple[float, ...]:
        """A member's Adam step count for each of its parameters (none before its first step)."""
        return tuple(float(st["step"]) for st in (m.optimizer.state.get(p) for p in m.params) if st)

    def probe(self) -> str | None:
        """Why the batched path cannot train this population (None: it can), from a trial step's forward and backward.

        The trial step (the first two members still training) also measures what a member's
        step holds for its backward: :attr:`member_bytes`. Nothing is changed: the trial's
        gradients are thrown away.
        """
        if self.why_sequential:
            return self.why_sequential
        active = self._training()
        steps = {self.members[s].result.steps for s in active}
        if len(steps) > 1:
            return f"its members resumed at different steps ({sorted(steps)})"
        if len({self._adam_steps(self.members[s]) for s in active}) > 1:  # stacked, they would share member 0's
            return "its members resumed at different Adam steps"
        if not active:
            return None
        trial = active[:TRIAL_MEMBERS]
        self.stack(trial)
        step = steps.pop()
        try:
            for m in self.members:
                m.learner.train()
            self.noise.start(step)
            batches = [self.members[s].meta_batch(step) for s in trial]
            with counting_saved_tensors() as saved:
                losses, _ = self._losses(self.params, stacked_batch(batches))
            self.outer_step.gradients(losses)
        except Exception as exc:  # whatever vmap refuses: train the members one after another
            first_line = (str(exc).splitlines() or [type(exc).__name__])[0]
            return f"vmap cannot run its meta_loss ({type(exc).__name__}: {first_line[:160]})"
        finally:
            self._drop_stack()
        batch_bytes = sum(t.numel() * t.element_size() for b in batches for t in vars(b).values()
                          if isinstance(t, Tensor))
        # Saved activations, the gradients of as much again, the batch, parameters + grads + Adam.
        self.member_bytes = (2 * sum(saved.values()) + batch_bytes) // len(trial) + self._member_parameter_bytes()
        return None

    def group_size(self) -> int:
        """How many members train at once: all of them, unless :attr:`member_bytes` says they would not fit."""
        if self.member_bytes is None:
            return len(self.members)
        self.budget_bytes = memory_budget(self.device)
        return max(1, min(len(self.members), self.budget_bytes // max(1, self.member_bytes)))

    # --- the loop ------------------------------------------------------------------------

    def run(self) -> list[TrainResult]:
        """Meta-train every member until its steps or its early stop; leaves each member's best weights loaded."""
        self.why_sequential = self.probe()
        if self.why_sequential:
            log.info("population of %d %s: sequential (%s)", len(self.members), self.members[0].learner.name,
                     self.why_sequential)
            return [m.run() for m in self.members]
        active = self._training()
        size = self.group_size()
        self.groups = [len(active[i:i + size]) for i in range(0, len(active), size)]
        if len(self.groups) > 1:
            log.info("population of %d %s: %d groups of at most %d (about %.0f MiB a member, %.0f MiB to use)",
                     len(self.members), self.members[0].learner.name, len(self.groups), size,
                     self.member_bytes / 2**20, self.budget_bytes / 2**20)
        for i in range(0, len(active), size):
            self.trained_with.update({s: len(active[i:i + size]) for s in active[i:i + size]})
            self._run_batched(active[i:i + size])
        for m in self.members:
            m.load_best()
        return [m.result for m in self.members]

    def _run_batched(self, group: list[int]) -> None:
        """Train members ``group`` (at one step) as one stack until each has finished or stopped early."""
        first = self.members[group[0]]
        spec, opts = first.spec, first.options
        nan_steps = torch.zeros(len(self.members), device=self.device)
        for s in group:
            self.members[s].learner.train()
        self.stack(group)
        with progress(spec.steps, f"meta-train {first.learner.name} x{len(group)}", "step", opts.progress,
                      opts.progress_every, initial=first.result.steps, scale=first.batch_size * len(group)) as bar:
            while self.live:
                step = self.members[self.live[0]].result.steps
                metrics = self.step(step)
                for i, s in enumerate(self.live):
                    nan_steps[s] += metrics["nan_step"][i]
                    self.members[s].result.steps += 1
                bar.update(1)
                if (step + 1) % spec.val_every == 0 or step + 1 == spec.steps:
                    self._validate(metrics, nan_steps)
                    bar.set_postfix(best=f"{max(m.result.best_val_metric or 0.0 for m in self.members):.4f}")

    def _validate(self, metrics: dict[str, Tensor], nan_steps: Tensor) -> None:
        """Each live member validates, keeps its best weights, may stop early and writes its checkpoint, as alone.

        Members that finished or stopped leave the stack; the others are restacked.
        """
        self.unstack()
        for i, s in enumerate(self.live):
            m = self.members[s]
            m.record_validation(m.validate(), {k: v[i] for k, v in metrics.items()}, nan_steps[s])
            nan_steps[s] = 0
            m.learner.train()
        still = [s for s in self.live if self._active(self.members[s])]
        if still != self.live:
            if still:
                self.stack(still)
            else:
                self._drop_stack()


def population_report(population: Population) -> dict[str, Any]:
    """What a stored run records of the population it trained in: its size, path and peak memory."""
    memory = peak_memory(population.device, population.parameter_bytes)
    return {
        "members": len(population.members), "path": population.path, "why_sequential": population.why_sequential,
        "peak_bytes": memory.peak_bytes, "peak_source": memory.source, "parameter_bytes": memory.parameter_bytes,
        "groups": population.groups, "member_bytes": population.member_bytes, "budget_bytes": population.budget_bytes,
    }
