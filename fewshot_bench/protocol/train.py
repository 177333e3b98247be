"""The outer loop shared by every learner: each step's meta-loss then its :class:`~.step.OuterStep` (NaN guard,
per-tensor clipping, Adam), validation on fixed episodes, best-checkpoint early stopping and atomic, resumable
checkpoints (written and read through :mod:`fewshot_bench.checkpoints`)."""

from __future__ import annotations

import copy
import logging
import math
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from functools import cache
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from fewshot_bench.api.batches import EpisodeBatch
from fewshot_bench.api.learner import Learner
from fewshot_bench.api.noise import mix64
from fewshot_bench.api.tasks import task_kind
from fewshot_bench.api.training_noise import Noise
from fewshot_bench.checkpoints import (
    ADAM_DEVICE_SETTINGS,
    adam_state_problem,
    load_torch_file,
    plain,
    save_atomic,
    state_dict_problem,
)
from fewshot_bench.console.progress import progress
from fewshot_bench.episodes import TRAIN_QUERY, EpisodeSource, cpu_cores
from fewshot_bench.errors import CheckpointError, DataError
from fewshot_bench.protocol.cuda_graph import WARMUP_STEPS, GraphedStep, warm_up
from fewshot_bench.protocol.evaluate import evaluate
from fewshot_bench.protocol.profiling import Profiler
from fewshot_bench.protocol.spec import RunSpec
from fewshot_bench.protocol.step import OuterStep
from fewshot_bench.records.store import current_train_names

log = logging.getLogger(__name__)


@dataclass
class TrainOptions:
    """How the trainer works besides the run's protocol (its :class:`RunSpec`): query sizes, checkpoint, progress."""

    val_query: int | None = None  # None: all remaining examples of each class
    train_query: int = TRAIN_QUERY
    checkpoint: Path | None = None
    run_key: str = ""
    progress: bool = False  # a tqdm bar (on a terminal)
    progress_every: float | None = None  # else, seconds between one-line progress records on stderr (logs)
    # On CUDA, capture the step in a CUDA graph after a few eager warm-up steps (fewshot_bench.protocol.cuda_graph).
    cuda_graph: bool = True
    # Called after each validation with the result so far (its history holds every validation, those restored
    # from a checkpoint too; read it, do not change it); False stops training there (a search's pruner).
    on_validation: Callable[[TrainResult], bool] | None = None
    # Called after each step with the step's count (from 1) and its detached metrics (device tensors; a CUDA graph
    # overwrites them at the next step: copy, do not keep). It only watches: an experiment tracker (tracking/).
    on_step: Callable[[int, dict[str, torch.Tensor]], None] | None = None


@dataclass
class TrainResult:
    """What meta-training did: steps taken, the best validation metric and its step.

    ``best_val_metric`` and the history's ``val_metric`` hold the task kind's metric,
    named by ``metric`` (``accuracy``; ``mse`` for regression, where lower is better).
    """

    steps: int = 0
    best_step: int = 0
    best_val_metric: float | None = None
    nan_steps: int = 0
    stopped_early: bool = False
    resumed_from: int | None = None
    history: list[dict] = field(default_factory=list)
    metric: str = "accuracy"


@cache
def _prefetch_pool() -> ThreadPoolExecutor:
    """One background thread for drawing the next meta-batch."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="fewshot-prefetch")


def step_seed(seed: int, step: int) -> int:
    """The seed of torch's generators at one meta-training step: resuming at any step replays the same draws."""
    return int(mix64(np.array([seed * 1_000_003 + step], dtype=np.uint64))[0] >> np.uint64(1))


# What to do about a checkpoint that cannot be resumed (sweeps have no --restart: delete the file).
RESUME_WAY_OUT = "delete it, or rerun `fewshot-bench run` with --restart, to start this run over"


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# TrainResult field -> (what a checkpoint's value must be, described for the error).
_RESULT_FIELDS: dict[str, tuple[Any, str]] = {
    "steps": (lambda v: _is_int(v) and v >= 0, "a count"),
    "best_step": (lambda v: _is_int(v) and v >= 0, "a count"),
    "best_val_metric": (lambda v: v is None or _is_number(v), "a number or None"),
    "nan_steps": (lambda v: _is_int(v) and v >= 0, "a count"),
    "stopped_early": (lambda v: isinstance(v, bool), "a bool"),
    "resumed_from": (lambda v: v is None or (_is_int(v) and v >= 0), "a count or None"),
    "history": (
        lambda v: isinstance(v, list) and all(
            isinstance(h, dict) and all(isinstance(k, str) and (x is None or _is_number(x)) for k, x in h.items())
            for h in v
        ),
        "a list of {name: number}",
    ),
    "metric": (lambda v: isinstance(v, str), "a str"),
}


# Every key of a run checkpoint (MetaTrainer._checkpoint).
_CHECKPOINT_KEYS = frozenset({"run_key", "learner", "optimizer", "best_state", "result", "since_best"})
# The values a metric can take (a mean over episodes); any number for a metric not named here.
_METRIC_RANGE: dict[str, tuple[float, float]] = {"accuracy": (0.0, 1.0), "mse": (0.0, math.inf)}


def _history_problem(history: list[dict], steps: int, metric: str) -> str | None:
    """Why a checkpoint's validation history cannot be that of ``steps`` steps (None: it can): one entry per
    validation, at increasing steps, the last at ``steps`` (a checkpoint is written after a validation)."""
    low, high = _METRIC_RANGE.get(metric, (-math.inf, math.inf))
    previous = 0
    for i, point in enumerate(history):
        step, value = point.get("step"), point.get("val_metric")
        if not (_is_int(step) and previous < step <= steps):
            return f"'result'['history'][{i}] is at step {step!r:.20}, not after {previous} and at most {steps}"
        if not (_is_number(value) and (math.isnan(value) or low <= value <= high)):
            return f"'result'['history'][{i}] has {metric} {value!r:.20}, outside [{low}, {high}]"
        previous = step
    if previous != steps:
        return f"'result'['history'] ends at step {previous}, not at the checkpoint's step {steps}"
    return None


class MetaTrainer:
    """Meta-trains one learner on one split, validating on another, as its run's :class:`RunSpec` says.

    The spec gives the episode shape, the seed, the steps, the validation schedule and the
    patience; :class:`TrainOptions` how the trainer works; the learner's Config its outer-loop
    hyperparameters (the :class:`LearnerConfig` fields: Adam's rate, meta-batch size, clipping).
    """

    def __init__(
        self,
        learner: Learner,
        train_split: EpisodeSource,
        val_split: EpisodeSource,
        spec: RunSpec,
        options: TrainOptions,
        device: torch.device,
        profiler: Profiler | None = None,
    ) -> None:
        self.learner, self.spec, self.options, self.device = learner, spec, options, device
        n_way, k_shot = spec.way, spec.shot
        self.n_way, self.k_shot = n_way, k_shot
        self.val_split = val_split
        self.profiler = profiler or Profiler(False)
        cfg = learner.config
        self.batch_size = int(cfg.meta_batch_size)
        self.kind = task_kind(learner.task.kind)
        self.sampler = train_split.sampler(n_way, k_shot, options.train_query, spec.seed, stream="train")
        learner.noise = Noise(spec.seed, device)  # keyed per step by seed_step
        self._next: tuple[int, Future] | None = None  # (step, its meta-batch being drawn in the background)
        # Fail now, not after hours of training, if validation episodes cannot be drawn.
        val_split.sampler(n_way, k_shot, options.val_query or 1, spec.seed, stream="val")
        if options.val_query is None and val_split.default_query(k_shot) < 1:
            raise DataError(f"validation split {val_split.name!r} has a class with no rows left after K = {k_shot}")
        self.params = [p for p in learner.parameters() if p.requires_grad]
        # The fused kernel: one call per step for all parameters; capturable keeps its state on the GPU.
        self.optimizer = torch.optim.Adam(self.params, lr=float(cfg.outer_lr), fused=True,
                                          capturable=device.type == "cuda")
        self.outer_step = OuterStep(self.params, self.optimizer, cfg.grad_clip_value, cfg.grad_clip_norm,
                                    learner.nan_fallback_loss, device)
        self.capture = options.cuda_graph and device.type == "cuda"
        self.graphed: GraphedStep | None = None
        self._warmups = 0
        self.result = TrainResult(metric=self.kind.metric)
        self.best_state: dict | None = None
        self._since_best = 0

    # --- checkpoints ---------------------------------------------------------------------

    def _checkpoint(self) -> dict:
        """What resuming needs, as tensors and plain data only (``torch.load(weights_only=True)`` reads it)."""
        return {
            "run_key": self.options.run_key,
            "learner": self.learner.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "best_state": self.best_state,
            "result": plain(asdict(self.result)),
            "since_best": int(self._since_best),
        }

    def _check_checkpoint(self, state: dict) -> str | None:
        """Why this run's checkpoint ``state`` cannot be resumed, or None: every key, tensor and counter is
        checked against this run (its spec, its fresh learner and optimizer) before any is used."""
        keys = set(state)
        if keys != _CHECKPOINT_KEYS:
            return (f"keys {sorted(_CHECKPOINT_KEYS - keys)} missing, "
                    f"{sorted(keys - _CHECKPOINT_KEYS, key=repr)[:3]} unexpected")
        problem = self._result_problem(state["result"], state["since_best"])
        if problem:
            return problem
        reference = self.learner.state_dict()
        best_state = state["best_state"]
        if (best_state is None) != (state["result"]["best_val_metric"] is None):
            return f"'best_state' is {type(best_state).__name__}, yet 'result'['best_val_metric'] is " \
                   f"{state['result']['best_val_metric']!r:.20}"
        return (state_dict_problem(state["learner"], reference, "'learner'")
                or (best_state is not None and state_dict_problem(best_state, reference, "'best_state'"))
                or adam_state_problem(state["optimizer"], self.optimizer, state["result"]["steps"], "'optimizer'"))

    def _result_problem(self, result: Any, since_best: Any) -> str | None:
        """Why a checkpoint's ``result`` and ``since_best`` cannot be this run's after the steps they count."""
        if not isinstance(result, dict):
            return f"'result' is {type(result).__name__}, not a dict"
        names = {f.name for f in fields(TrainResult)}
        if set(result) != names:
            return f"'result' has keys {sorted(set(result) ^ names)} missing or unexpected"
        for name, (ok, kind) in _RESULT_FIELDS.items():
            if not ok(result[name]):
                return f"'result'[{name!r}] is {result[name]!r:.40}, not {kind}"
        if result["metric"] != self.result.metric:
            return f"'result' holds {result['metric']!r}, not {self.result.metric!r}"
        steps = result["steps"]
        if steps > self.spec.steps:
            return f"'result'['steps'] is {steps}, more than this run's {self.spec.steps}"
        for name in ("best_step", "nan_steps", "resumed_from"):
            if (result[name] or 0) > steps:
                return f"'result'[{name!r}] is {result[name]}, more than its {steps} steps"
        history = result["history"]
        problem = _history_problem(history, steps, result["metric"]) or self._best_problem(result)
        if problem:
            return problem
        after_best = sum(point["step"] > result["best_step"] for point in history)
        if not (_is_int(since_best) and since_best == after_best):
            return f"'since_best' is {since_best!r:.40}, not the {after_best} validation(s) since the best"
        if result["stopped_early"] and (self.spec.patience is None or since_best < self.spec.patience):
            return f"'result' stopped early after {since_best} validation(s) without progress, " \
                   f"not this run's patience {self.spec.patience}"
        return None

    @staticmethod
    def _best_problem(result: dict) -> str | None:
        """Why ``result``'s best validation is not one of its history's (None: it is)."""
        best, history = result["best_val_metric"], result["history"]
        if best is None:
            return None if not history and result["best_step"] == 0 else \
                "'result'['best_val_metric'] is None after validations"
        low, high = _METRIC_RANGE.get(result["metric"], (-math.inf, math.inf))
        if not (math.isfinite(best) and low <= best <= high):
            return f"'result'['best_val_metric'] is {best!r}, outside the {result['metric']} range [{low}, {high}]"
        if not any(p["step"] == result["best_step"] and p["val_metric"] == best for p in history):
            return f"'result'['best_val_metric'] {best!r} at step {result['best_step']} is not in its history"
        return None

    def _optimizer_state(self, checked: dict) -> dict:
        """A checked optimizer state with this optimizer's group settings: they equal the checkpoint's (checked),
        but for those that follow the device (a checkpoint written on CPU resumed on CUDA)."""
        mine = self.optimizer.state_dict()["param_groups"]
        groups = [{**ref, **{k: v for k, v in group.items() if k not in ADAM_DEVICE_SETTINGS}}
                  for group, ref in zip(checked["param_groups"], mine)]
        return {"state": checked["state"], "param_groups": groups}

    def try_resume(self, restart: bool = False) -> bool:
        """Restore from this run's checkpoint if one exists; returns whether it did.

        The file is loaded with ``weights_only=True`` (nothing in it can run) and used whole
        or not at all: a checkpoint that is unreadable, truncated, foreign or malformed (any tensor,
        setting or counter that this run's fresh learner, optimizer and spec could not have
        written: :meth:`_check_checkpoint`) is a :class:`CheckpointError` naming it, and leaves
        the learner and optimizer untouched. A
        well-formed checkpoint of another run (another run key) is ignored with a warning.
        With ``restart`` the checkpoint is deleted, unread, and training starts over.
        """
        path = self.options.checkpoint
        if path is None or not path.exists():
            return False
        if path.is_dir():
            raise CheckpointError(f"checkpoint {path} is a directory, not a checkpoint file; "
                                  "remove it to start this run over")
        if restart:
            path.unlink()
            log.info("deleted checkpoint %s (--restart); starting over", path)
            return False
        state = load_torch_file(path, self.device, "checkpoint", RESUME_WAY_OUT)
        if not isinstance(state, dict) or not isinstance(state.get("run_key"), str):
            raise CheckpointError(f"checkpoint {path} is not a fewshot-bench run checkpoint; {RESUME_WAY_OUT}")
        if state["run_key"] != self.options.run_key:
            log.warning("ignoring checkpoint %s: it belongs to another run", path)
            return False
        state["result"] = current_train_names(state.get("result"))  # written before metric-neutral names
        problem = self._check_checkpoint(state)
        if problem:
            raise CheckpointError(f"checkpoint {path} is malformed ({problem}); nothing was loaded from it; "
                                  f"{RESUME_WAY_OUT}")
        learner_before = {k: v.detach().clone() if torch.is_tensor(v) else copy.deepcopy(v)
                          for k, v in self.learner.state_dict().items()}
        optimizer_before = copy.deepcopy(self.optimizer.state_dict())
        try:
            self.learner.load_state_dict(state["learner"])
            self.optimizer.load_state_dict(self._optimizer_state(state["optimizer"]))
        except Exception as exc:  # whole or not at all
            self.learner.load_state_dict(learner_before)
            self.optimizer.load_state_dict(optimizer_before)
            raise CheckpointError(
                f"checkpoint {path} does not fit this learner "
                f"({type(exc).__name__}: {str(exc).splitlines()[0][:120]}); "
                f"nothing was loaded from it; {RESUME_WAY_OUT}"
            ) from None
        self.best_state = state["best_state"]
        self.result = TrainResult(**state["result"])
        self.result.resumed_from = self.result.steps
        self._since_best = state["since_best"]
        return True

    # --- one step ------------------------------------------------------------------------

    def step(self, step: int) -> dict[str, torch.Tensor]:
        """One meta-training step on meta-batch ``step``; returns detached metrics."""
        self.seed_step(step)
        with self.profiler.section("sampling"):
            batch = self.meta_batch(step)
        if not self.capture:
            return self.update(batch, self.profiler)
        with self.profiler.section("step (CUDA graph)"):
            return self.graphed_update(batch)

    def seed_step(self, step: int) -> None:
        """Key the learner's noise for step ``step`` (in place, on the device), and seed torch's generators.

        Learners draw from ``learner.noise`` (:class:`~fewshot_bench.api.Noise`), a pure
        function of (seed, step, draw, element). torch's CPU and GPU generators are seeded
        too, for plugins that still draw from them: such a run is reproducible and resumable
        alone, but a population cannot reproduce it. Seeded as ``torch.manual_seed`` does,
        without its 70 us of visiting every other backend.
        """
        self.learner.noise.start(step)
        seed = step_seed(self.spec.seed, step)
        torch.default_generator.manual_seed(seed)
        if self.device.type == "cuda":
            torch.cuda.manual_seed_all(seed)

    def meta_batch(self, step: int) -> EpisodeBatch:
        """Meta-batch ``step``; on CPU, with a core that torch's threads leave free, the next one is drawn meanwhile.

        Episodes are a pure function of their index, so a batch is the same whichever thread
        draws it; numpy and torch release the GIL, so drawing overlaps the step's compute. On
        CUDA the step is asynchronous already; with every core busy in torch's thread pool a
        third thread only makes its threads wait for each other.
        """
        def draw(i: int) -> EpisodeBatch:
            return self.sampler.batch(i * self.batch_size, self.batch_size, self.device, self.learner.dtype)

        if self.device.type != "cpu" or torch.get_num_threads() >= cpu_cores():
            return draw(step)
        pending, self._next = self._next, None
        batch = pending[1].result() if pending is not None and pending[0] == step else draw(step)
        self._next = (step + 1, _prefetch_pool().submit(draw, step + 1))
        return batch

    def graphed_update(self, batch: EpisodeBatch) -> dict[str, torch.Tensor]:
        """The update through a CUDA graph: eager warm-up steps on a side stream, then capture once, then replay."""
        quiet = Profiler(False)  # no synchronisation may happen inside a capture
        if self.graphed is None:
            if self._warmups < WARMUP_STEPS:
                self._warmups += 1
                return warm_up(lambda b: self.update(b, quiet), batch, torch.cuda.Stream(self.device))
            try:
                self.graphed = GraphedStep(lambda b: self.update(b, quiet), batch)
            except RuntimeError as exc:  # e.g. a learner that reads a value back to the host
                log.warning("cannot capture %s's meta-training step in a CUDA graph (%s); running it eagerly",
                            self.learner.name, exc)
                self.capture = False
                return self.update(batch, self.profiler)
        return self.graphed(batch)

    def update(self, batch: EpisodeBatch, prof: Profiler) -> dict[str, torch.Tensor]:
        """Meta-loss, meta-gradients, NaN guard, clipping and one Adam step on ``batch``; returns detached metrics."""
        with prof.section("meta_loss"):
            out = self.learner.meta_loss(batch)
        finite = self.outer_step(out.loss, prof)
        metrics = {"loss": out.loss.detach(), "nan_step": (~finite).float()}
        metrics.update(out.metrics)
        return metrics

    # --- the loop ------------------------------------------------------------------------

    def validate(self) -> float:
        """Mean metric (accuracy, or MSE for regression) on the fixed validation episodes."""
        with self.profiler.section("validation"):
            acc = evaluate(
                self.learner,
                self.val_split,
                self.n_way,
                self.k_shot,
                seed=self.spec.seed,
                episodes=self.spec.val_episodes,
                n_query=self.options.val_query,
                device=self.device,
                stream="val",
            )
        return float(acc.mean())

    def run(self) -> TrainResult:
        """Meta-train until ``steps`` or early stopping; leaves the best validated weights loaded."""
        spec, opts, res = self.spec, self.options, self.result
        self.learner.train()
        nan_steps = torch.zeros((), device=self.device)
        metrics: dict[str, torch.Tensor] = {}
        with progress(spec.steps, f"meta-train {self.learner.name}", "step", opts.progress, opts.progress_every,
                      initial=res.steps, scale=self.batch_size) as bar:
            while res.steps < spec.steps and not res.stopped_early:
                metrics = self.step(res.steps)
                nan_steps += metrics["nan_step"]
                res.steps += 1
                if opts.on_step is not None:
                    opts.on_step(res.steps, metrics)
                bar.update(1)
                if res.steps % spec.val_every == 0 or res.steps == spec.steps:
                    self.record_validation(self.validate(), metrics, nan_steps)
                    nan_steps.zero_()
                    bar.set_postfix(val=f"{res.history[-1]['val_metric']:.4f}", best=f"{res.best_val_metric:.4f}")
                    self.learner.train()
        self.load_best()
        return res

    def load_best(self) -> None:
        """Load the best validated weights (if any validation happened)."""
        if self.best_state is not None:
            self.learner.load_state_dict(self.best_state)

    def record_validation(self, val_acc: float, metrics: dict, nan_steps: torch.Tensor) -> None:
        """Record a validation: history, best weights, early stopping, and the checkpoint file."""
        res = self.result
        res.nan_steps += int(nan_steps.item())
        res.history.append({"step": res.steps, "val_metric": val_acc, "loss": float(metrics["loss"])})
        if self.kind.better(val_acc, res.best_val_metric):
            res.best_val_metric, res.best_step = val_acc, res.steps
            self.best_state = copy.deepcopy(self.learner.state_dict())
            self._since_best = 0
        else:
            self._since_best += 1
            if self.spec.patience is not None and self._since_best >= self.spec.patience:
                res.stopped_early = True
        if self.options.checkpoint is not None:
            with self.profiler.section("checkpoint"):
                save_atomic(self._checkpoint(), self.options.checkpoint)
        # Stopped after the checkpoint, so the checkpoint never holds this stop: the callback is not part of the run
        # (nor of its key), and a resumed run asks it again.
        if self.options.on_validation is not None and not self.options.on_validation(res):
            res.stopped_early = True
