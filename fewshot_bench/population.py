"""Populations: S members of one learner (one seed each) meta-trained as one batched tensor program.

Each member is a :class:`~fewshot_bench.train.MetaTrainer` of its own (its seed, parameters,
Adam state, training episodes, validation, best checkpoint, early stopping, checkpoint
file), so a member trains exactly as its run alone would. Only the update is batched: the
members' parameters are stacked (``torch.func.stack_module_state``), ``meta_loss`` runs
once under ``torch.func.vmap`` over member-stacked meta-batches, the gradient of the summed
losses gives each member its own gradients, and the NaN guard, per-tensor clipping and Adam
act on each member's slice. A learner that ``vmap`` cannot run (``torch.autograd.grad`` in
its inner loop, data-dependent Python control flow, a random draw that is not a pure
function of its key) gets the plain sequential path: its members train one after another.
"""

from __future__ import annotations

import logging
import resource
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap

from fewshot_bench.api.batches import EpisodeBatch
from fewshot_bench.api.learner import Learner
from fewshot_bench.api.training_noise import Noise
from fewshot_bench.profiling import Profiler
from fewshot_bench.progress import progress
from fewshot_bench.train import MetaTrainer, TrainResult, laid_out_like

log = logging.getLogger(__name__)

BATCHED, SEQUENTIAL = "batched", "sequential"


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


def clip_members(grads: list[Tensor], value: float | None, norm: float | None) -> None:
    """:func:`~fewshot_bench.train.clip_per_tensor` for member-stacked gradients [S, ...]: each member's slice alone."""
    if value is not None:
        torch._foreach_clamp_min_(grads, -value)
        torch._foreach_clamp_max_(grads, value)
    if norm is not None:
        for g in grads:
            norms = torch.linalg.vector_norm(g.reshape(g.shape[0], -1), dim=1)
            scale = (norm / norms.clamp_min(1e-12)).clamp(max=1.0)
            g.mul_(scale.view(-1, *([1] * (g.dim() - 1))))


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


class Population:
    """S :class:`MetaTrainer` members of one learner (same class, config and task), trained together.

    ``run`` trains every member as its run alone would and leaves each member's best validated
    weights loaded; ``path`` says whether the update is batched over members or the members
    train one after another (``force_sequential``, or a learner ``vmap`` cannot run).
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
        self.params: dict[str, Tensor] = {}
        self.buffers: dict[str, Tensor] = {}
        self.optimizer: torch.optim.Adam | None = None
        self.frozen: dict[int, dict[str, Tensor]] = {}  # stopped member -> its parameters and Adam moments
        # None: a non-finite step is a no-op (zero gradients), as in MetaTrainer.gradients.
        self.has_fallback = first.learner.nan_fallback_loss() is not None
        # The members' noise keys, [S]: under vmap each member draws with its own row, what it draws alone.
        self.noise = Noise([m.spec.seed for m in members], self.device)

    @property
    def path(self) -> str:
        """``batched`` or ``sequential``."""
        return SEQUENTIAL if self.why_sequential else BATCHED

    @property
    def parameter_bytes(self) -> int:
        """Bytes of the stacked trainable parameters, their gradients and Adam's two moments."""
        m = self.members[0].learner
        per_member = sum(p.numel() * p.element_size() for p in m.parameters() if p.requires_grad)
        return 4 * per_member * len(self.members)

    # --- the batched update ----------------------------------------------------------------

    def _losses(self, params: dict[str, Tensor], batch: dict[str, Tensor] | None) -> tuple[Tensor, dict[str, Tensor]]:
        """Every member's loss [S] (and metrics [S]) under ``vmap``; ``batch=None``: the NaN fallback losses.

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

    def _gradients(self, loss: Tensor) -> list[Tensor]:
        """d (sum of the members' losses) / d stacked parameters: each member's own gradients in its slice."""
        wrt = [self.params[n] for n in self.trainable]
        grads = torch.autograd.grad(loss.sum(), wrt, allow_unused=True)
        # vmap leaves some gradients strided (e.g. transposed): see laid_out_like.
        return [torch.zeros_like(p) if g is None else laid_out_like(g, p) for p, g in zip(wrt, grads)]

    def _guard_nan(self, losses: Tensor, grads: list[Tensor]) -> tuple[list[Tensor], Tensor]:
        """Per member: its meta-gradients if its loss and all of them are finite, else its fallback gradients.

        A member's non-finite step touches only its own slice; as in :meth:`MetaTrainer.guard_nan`
        the fallback is computed on CPU only when some member needs it.
        """
        finite = losses.isfinite()
        for g in grads:
            finite = finite & g.reshape(g.shape[0], -1).isfinite().all(dim=1)
        if self.device.type == "cpu" and bool(finite.all()):
            return grads, finite
        if self.has_fallback:
            safe = self._gradients(self._losses(self.params, None)[0])
        else:
            safe = [torch.zeros_like(g) for g in grads]
        return [torch.where(finite.view(-1, *([1] * (g.dim() - 1))), g, s) for g, s in zip(grads, safe)], finite

    def update(self, step: int, batches: list[EpisodeBatch]) -> dict[str, Tensor]:
        """Meta-losses, per-member NaN guard and clipping, one Adam step for every active member; metrics [S]."""
        prof, cfg = self.profiler, self.members[0].learner.config
        self.noise.start(step)
        with prof.section("meta_loss"):
            losses, metrics = self._losses(self.params, stacked_batch(batches))
        with prof.section("backward"):
            grads, finite = self._guard_nan(losses.detach(), self._gradients(losses))
            clip_members(grads, cfg.grad_clip_value, cfg.grad_clip_norm)
        with prof.section("optimizer"):
            for n, g in zip(self.trainable, grads):
                self.params[n].grad = g
            self.optimizer.step()
            self._restore_frozen()
        return {"loss": losses.detach(), "nan_step": (~finite).float(), **{k: v.detach() for k, v in metrics.items()}}

    def step(self, step: int) -> dict[str, Tensor]:
        """One batched meta-training step: every member's meta-batch ``step``, then :meth:`update`; metrics [S]."""
        with self.profiler.section("sampling"):
            batches = [m.meta_batch(step) for m in self.members]
        return self.update(step, batches)

    def _restore_frozen(self) -> None:
        """Put stopped members' parameters and Adam moments back: a stopped member does not move."""
        if not self.frozen:
            return
        with torch.no_grad():
            for s, saved in self.frozen.items():
                for n in self.trainable:
                    p = self.params[n]
                    p[s] = saved[n]
                    state = self.optimizer.state[p]
                    state["exp_avg"][s] = saved[f"{n}.exp_avg"]
                    state["exp_avg_sq"][s] = saved[f"{n}.exp_avg_sq"]

    def _freeze(self, s: int) -> None:
        """Keep member ``s`` where it is from now on (it stopped early)."""
        saved = {}
        for n in self.trainable:
            p = self.params[n]
            state = self.optimizer.state.get(p, {})
            saved[n] = p.detach()[s].clone()
            for moment in ("exp_avg", "exp_avg_sq"):
                saved[f"{n}.{moment}"] = state[moment][s].clone() if moment in state else torch.zeros_like(saved[n])
        self.frozen[s] = saved

    # --- members <-> stacked state -------------------------------------------------------

    def _stack(self) -> None:
        """Stack the members' parameters and Adam states (e.g. as resumed from their checkpoints)."""
        learners = [m.learner for m in self.members]
        params, self.buffers = stack_module_state(learners)
        self.params = {n: params[n] for n in self.names}
        first = self.members[0]
        lr = first.optimizer.param_groups[0]["lr"]
        wrt = [self.params[n] for n in self.trainable]
        self.optimizer = torch.optim.Adam(wrt, lr=lr, fused=True, capturable=self.device.type == "cuda")
        states = [[m.optimizer.state.get(p) for p in m.params] for m in self.members]
        active = [s for s, m in enumerate(self.members) if self._active(m)]
        if states[active[0]][0]:  # resumed: every active member is at the same Adam step
            for i, p in enumerate(wrt):
                st = [states[s][i] or {} for s in range(len(self.members))]
                ref = st[active[0]]
                moments = {k: torch.stack([x.get(k, torch.zeros_like(ref[k])) for x in st])
                           for k in ("exp_avg", "exp_avg_sq")}
                self.optimizer.state[p] = {"step": ref["step"].clone(), **moments}
        for s, m in enumerate(self.members):
            if not self._active(m):
                self._freeze(s)

    def _unstack(self, which: list[int]) -> None:
        """Copy the stacked parameters and Adam state of members ``which`` into their own learners and optimizers.

        Each member's learner and optimizer then hold what its run alone would: its validation,
        best checkpoint and checkpoint file are the member's own code path.
        """
        with torch.no_grad():
            for s in which:
                m = self.members[s]
                named = dict(m.learner.named_parameters())
                for n in self.names:
                    named[n].copy_(self.params[n][s])
                for n, p in zip(self.trainable, m.params):
                    stacked = self.optimizer.state.get(self.params[n])
                    if stacked:
                        m.optimizer.state[p] = {"step": stacked["step"].clone(),
                                                "exp_avg": stacked["exp_avg"][s].clone(),
                                                "exp_avg_sq": stacked["exp_avg_sq"][s].clone()}

    @staticmethod
    def _active(m: MetaTrainer) -> bool:
        return m.result.steps < m.spec.steps and not m.result.stopped_early

    # --- which path ------------------------------------------------------------------------

    def probe(self) -> str | None:
        """Why the batched path cannot train this population (None: it can), from a trial step's forward and backward.

        Nothing is changed: the trial's gradients are thrown away.
        """
        if self.why_sequential:
            return self.why_sequential
        steps = {m.result.steps for m in self.members if self._active(m)}
        if len(steps) > 1:
            return f"its members resumed at different steps ({sorted(steps)})"
        if not any(self._active(m) for m in self.members):
            return None
        self._stack()
        step = steps.pop()
        try:
            for m in self.members:
                m.learner.train()
            self.noise.start(step)
            losses, _ = self._losses(self.params, stacked_batch([m.meta_batch(step) for m in self.members]))
            self._gradients(losses)
        except Exception as exc:  # whatever vmap refuses: train the members one after another
            first_line = (str(exc).splitlines() or [type(exc).__name__])[0]
            return f"vmap cannot run its meta_loss ({type(exc).__name__}: {first_line[:160]})"
        return None

    # --- the loop ------------------------------------------------------------------------

    def run(self) -> list[TrainResult]:
        """Meta-train every member until its steps or its early stop; leaves each member's best weights loaded."""
        self.why_sequential = self.probe()
        if self.why_sequential:
            log.info("population of %d %s: sequential (%s)", len(self.members), self.members[0].learner.name,
                     self.why_sequential)
            return [m.run() for m in self.members]
        return self._run_batched()

    def _run_batched(self) -> list[TrainResult]:
        members = self.members
        first = members[0]
        spec, opts = first.spec, first.options
        nan_steps = torch.zeros(len(members), device=self.device)
        metrics: dict[str, Tensor] = {}
        for m in members:
            m.learner.train()
        start = min(m.result.steps for m in members)
        with progress(spec.steps, f"meta-train {first.learner.name} x{len(members)}", "step", opts.progress,
                      opts.progress_every, initial=start, scale=first.batch_size * len(members)) as bar:
            while any(self._active(m) for m in members):
                active = [s for s, m in enumerate(members) if self._active(m)]
                step = members[active[0]].result.steps
                metrics = self.step(step)
                nan_steps += metrics["nan_step"]
                for s in active:
                    members[s].result.steps += 1
                bar.update(1)
                if (step + 1) % spec.val_every == 0 or step + 1 == spec.steps:
                    self._validate(active, metrics, nan_steps)
                    bar.set_postfix(best=f"{max(m.result.best_val_accuracy or 0.0 for m in members):.4f}")
        self._unstack(list(range(len(members))))
        for m in members:
            m.load_best()
        return [m.result for m in members]

    def _validate(self, active: list[int], metrics: dict[str, Tensor], nan_steps: Tensor) -> None:
        """Each active member validates, keeps its best weights, may stop early and writes its checkpoint, as alone."""
        self._unstack(active)
        for s in active:
            m = self.members[s]
            mine = {k: v[s] for k, v in metrics.items()}
            m.record_validation(m.validate(), mine, nan_steps[s])
            nan_steps[s] = 0
            m.learner.train()
            if m.result.stopped_early:
                self._freeze(s)


def population_report(population: Population) -> dict[str, Any]:
    """What a stored run records of the population it trained in: its size, path and peak memory."""
    memory = peak_memory(population.device, population.parameter_bytes)
    return {
        "members": len(population.members), "path": population.path, "why_sequential": population.why_sequential,
        "peak_bytes": memory.peak_bytes, "peak_source": memory.source, "parameter_bytes": memory.parameter_bytes,
    }
