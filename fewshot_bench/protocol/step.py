"""What follows a meta-loss in every meta-training step: gradients, the NaN guard, per-tensor clipping, Adam.

One :class:`OuterStep` serves :class:`~fewshot_bench.protocol.train.MetaTrainer` (one learner's
parameters) and :class:`~fewshot_bench.protocol.population.Population` (parameters stacked over
members, ``[S, ...]``, where the guard and the clipping act on each member's slice alone), so a
member steps exactly as its run alone would. The CUDA graph (``cuda_graph.py``) captures the
trainer's whole update, this step included.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from fewshot_bench.protocol.profiling import Profiler


def laid_out_like(grad: Tensor, param: Tensor) -> Tensor:
    """``grad`` with ``param``'s memory layout (a copy only when the strides differ).

    The fused Adam kernel pairs a parameter's and its gradient's elements by memory position,
    not by index: a gradient laid out otherwise (a custom autograd function's, or vmap's
    transposed ones) would update every element with another's gradient, silently.
    """
    return grad if grad.stride() == param.stride() else torch.empty_like(param).copy_(grad)


def _per_member(flags: Tensor, like: Tensor) -> Tensor:
    """Member flags [S] shaped to broadcast over a member-stacked tensor [S, ...]."""
    return flags.view(-1, *([1] * (like.dim() - 1)))


def clip_per_tensor(grads: list[Tensor], value: float | None, norm: float | None, members: bool = False) -> None:
    """Clip each gradient in place, first elementwise to [-value, value], then to L2 norm ``norm``.

    With ``members``, gradients are member-stacked [S, ...] and each member's slice is clipped
    to the norm alone. Multi-tensor (``_foreach``) kernels: a few calls for all tensors, not a
    few per tensor.
    """
    if value is not None:
        torch._foreach_clamp_min_(grads, -value)
        torch._foreach_clamp_max_(grads, value)
    if norm is None:
        return
    if not members:
        norms = torch.stack(torch._foreach_norm(grads))
        torch._foreach_mul_(grads, list(_norm_scale(norms, norm).unbind()))
        return
    for g in grads:
        norms = torch.linalg.vector_norm(g.reshape(g.shape[0], -1), dim=1)
        g.mul_(_per_member(_norm_scale(norms, norm), g))


def _norm_scale(norms: Tensor, norm: float) -> Tensor:
    """The factors that bring tensors of L2 norms ``norms`` down to ``norm`` (1 for those already within it)."""
    return (norm / norms.clamp_min(1e-12)).clamp(max=1.0)


def all_finite(loss: Tensor, grads: Sequence[Tensor], members: bool = False) -> Tensor:
    """Whether the loss and every gradient are finite: one flag, or with ``members`` one per member [S]."""
    if not members:
        return loss.isfinite() & torch.cat([g.reshape(-1) for g in grads]).isfinite().all()
    finite = loss.isfinite()
    for g in grads:
        finite = finite & g.reshape(g.shape[0], -1).isfinite().all(dim=1)
    return finite


@dataclass
class OuterStep:
    """The step after a meta-loss: its gradients, the NaN guard, per-tensor clipping and one optimizer step.

    ``fallback_loss`` is the learner's NaN fallback loss at the current parameters (None: a
    non-finite step is a no-op, with zero gradients). With ``members`` the parameters are
    member-stacked [S, ...], the loss holds one value per member [S], and a member's
    non-finite step touches only its own slice.
    """

    params: list[Tensor]
    optimizer: torch.optim.Optimizer
    clip_value: float | None
    clip_norm: float | None
    fallback_loss: Callable[[], Tensor | None]
    device: torch.device
    members: bool = False

    def __call__(self, loss: Tensor, prof: Profiler) -> Tensor:
        """Step on ``loss``; returns whether it was finite (one flag, or one per member)."""
        with prof.section("backward"):
            grads, finite = self.guard_nan(loss.detach(), self.gradients(loss))
            clip_per_tensor(grads, self.clip_value, self.clip_norm, self.members)
        with prof.section("optimizer"):
            for p, g in zip(self.params, grads):
                p.grad = g
            self.optimizer.step()
        return finite

    def gradients(self, loss: Tensor | None) -> list[Tensor]:
        """d loss / d params (members: of the summed losses, each member's own in its slice), laid out like the
        parameters; zeros for parameters the loss does not reach (and for ``loss=None``)."""
        if loss is None:
            grads = [None] * len(self.params)
        else:
            grads = torch.autograd.grad(loss.sum() if self.members else loss, self.params, allow_unused=True)
        return [torch.zeros_like(p) if g is None else laid_out_like(g, p) for p, g in zip(self.params, grads)]

    def guard_nan(self, loss: Tensor, grads: list[Tensor]) -> tuple[list[Tensor], Tensor]:
        """The meta-gradients where the loss and all of them are finite, else the fallback loss's gradients.

        On CUDA the choice is made on the device (``torch.where``), with no host sync, so the
        step can be captured in a CUDA graph; on CPU reading the flags costs nothing, and the
        fallback (rarely needed) is only computed when some flag says it is.
        """
        finite = all_finite(loss, grads, self.members)
        if self.device.type == "cpu" and bool(finite.all()):
            return grads, finite
        safe = self.gradients(self.fallback_loss())
        return [torch.where(_per_member(finite, g) if self.members else finite, g, s)
                for g, s in zip(grads, safe)], finite
