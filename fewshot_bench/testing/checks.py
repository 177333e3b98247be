"""The conformance checks: plain functions, each proving one rule of the Learner contract.

Every check takes a learner class and :class:`CheckOptions`, returns a one-line detail on
success, raises :class:`CheckFailed` (an ``AssertionError``) naming what is wrong, or
:class:`CheckSkipped` (a ``unittest.SkipTest``, so pytest reports a skip) when the rule
does not apply, e.g. meta-training a learner with nothing to meta-train.
"""

from __future__ import annotations

import copy
import dataclasses
import io
import json
import math
import time
import traceback
import unittest
from dataclasses import dataclass, replace
from typing import Callable, Iterable

import torch

from fewshot_bench.api.batches import EpisodeBatch
from fewshot_bench.api.learner import LEARNER_NAME, Learner, LearnerConfig, LossOutput
from fewshot_bench.api.linear import linear_logits
from fewshot_bench.api.tasks import task_kind
from fewshot_bench.config import config_to_dict
from fewshot_bench.errors import PluginError
from fewshot_bench.episodes import TRAIN_QUERY
from fewshot_bench.protocol.evaluate import evaluate, readout_disagreements, readout_follows_predict
from fewshot_bench.protocol.population import Population
from fewshot_bench.protocol.spec import RunSpec
from fewshot_bench.protocol.train import MetaTrainer, TrainOptions
from fewshot_bench.testing.harness import (
    BUDGET_ENV,
    KIND_SETTINGS,
    CheckOptions,
    KindSetting,
    close,
    concat,
    dataset,
    default_options,
    episodes,
    make_learner,
    max_diff,
)
from fewshot_bench.testing.timing import Bench, has_readout, measure, readout_hint


class CheckFailed(AssertionError):
    """A learner broke the rule a check tests; the message says which and how."""


class CheckSkipped(unittest.SkipTest):
    """The rule a check tests does not apply to this learner."""


@dataclass(frozen=True)
class Check:
    """One named conformance check; call it with a learner class to run it (raises on failure)."""

    name: str
    summary: str
    func: Callable[[type[Learner], CheckOptions], str]

    def __call__(self, learner: type[Learner], options: CheckOptions | None = None) -> str:
        """Run the check; returns its detail line, raises CheckFailed or CheckSkipped."""
        torch.set_flush_denormal(True)  # inner loops can produce subnormals: ~100x slower on CPU
        return self.func(learner, options or default_options())

    def __repr__(self) -> str:
        return f"Check({self.name})"


@dataclass
class CheckResult:
    """The outcome of one check: ``status`` is passed, failed or skipped."""

    check: str
    status: str
    detail: str
    seconds: float
    traceback: str | None = None


CHECKS: dict[str, Check] = {}


def check(name: str, summary: str) -> Callable:
    """Register a check function under ``name`` (checks run in registration order)."""

    def wrap(func: Callable[[type[Learner], CheckOptions], str]) -> Check:
        CHECKS[name] = Check(name, summary, func)
        return CHECKS[name]

    return wrap


def fail_unless(condition: bool, message: str) -> None:
    """Raise CheckFailed with ``message`` unless ``condition`` holds."""
    if not condition:
        raise CheckFailed(message)


def run_checks(
    learner: type[Learner], options: CheckOptions | None = None, only: Iterable[str] | None = None
) -> list[CheckResult]:
    """Run the checks (all, or those named in ``only``) on a learner class; never raises for a failing check."""
    options = options or default_options()
    names = list(only) if only is not None else list(CHECKS)
    unknown = [n for n in names if n not in CHECKS]
    if unknown:
        raise KeyError(f"unknown check(s) {', '.join(unknown)}; known checks: {', '.join(CHECKS)}")
    return [run_check(CHECKS[n], learner, options) for n in names]


def run_check(chk: Check, learner: type[Learner], options: CheckOptions) -> CheckResult:
    """Run one check and record its outcome, time and (on an unexpected error) traceback."""
    t0 = time.perf_counter()
    try:
        detail, status, tb = chk(learner, options), "passed", None
    except CheckSkipped as exc:
        detail, status, tb = str(exc), "skipped", None
    except CheckFailed as exc:
        detail, status, tb = str(exc), "failed", traceback.format_exc()
    except Exception as exc:  # the learner itself raised: that fails the check, with its traceback
        detail, status, tb = f"raised {type(exc).__name__}: {exc}", "failed", traceback.format_exc()
    return CheckResult(chk.name, status, detail, time.perf_counter() - t0, tb)


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _predict(learner: Learner, batch: EpisodeBatch) -> torch.Tensor:
    """Eval-mode predictions of a labelled batch as evaluation asks for them (no labels, under ``torch.no_grad``)."""
    learner.eval()
    with torch.no_grad():
        return learner.predict(batch.inputs())



def per_kind(
    cls: type[Learner], body: Callable[[KindSetting], str], only_meta_trainable: bool = False
) -> str:
    """Run ``body`` for every task kind the learner claims; returns the details, prefixed by kind when several.

    Kinds the checks have no embedded dataset for are left out (and named); with
    ``only_meta_trainable``, so are kinds whose implementation has nothing to meta-train.
    """
    details, left_out = [], []
    for kind in cls.kinds:
        setting = KIND_SETTINGS.get(kind)
        if setting is None:
            left_out.append(f"{kind} (no embedded dataset for this kind)")
        elif only_meta_trainable and not cls.for_kind(kind).meta_trainable:
            left_out.append(f"{kind} (not meta-trainable: meta_trainable = False)")
        else:
            details.append((kind, body(setting)))
    if not details:
        raise CheckSkipped("does not apply: " + "; ".join(left_out))
    text = details[0][1] if len(details) == 1 else "; ".join(f"{k}: {d}" for k, d in details)
    return text + (f"; left out {', '.join(left_out)}" if left_out else "")


# --- the checks ----------------------------------------------------------------------------


@check("name", "the name is well formed and no other installed learner uses it")
def check_name(cls: type[Learner], opts: CheckOptions) -> str:
    name = getattr(cls, "name", None)
    fail_unless(
        isinstance(name, str) and bool(LEARNER_NAME.match(name)),
        f"name {name!r} must be lower-case letters and digits joined by '-', e.g. 'my-learner'",
    )
    description = getattr(cls, "description", "")
    fail_unless(
        isinstance(description, str) and description.strip() != "" and "\n" not in description,
        "description must be one non-empty line (it is shown by `fewshot-bench learners`)",
    )
    host = opts.plugin_host()
    rejected = host.duplicate_learners.get(name, [])
    if name not in host.learners:
        return f"{name!r} (not installed yet; no installed learner uses the name)"
    owner = host.learners[name]
    fail_unless(
        _qualname(owner.obj) == _qualname(cls),
        f"name {name!r} is already taken by {_qualname(owner.obj)} from distribution "
        f"{owner.plugin.distribution!r}; choose another name",
    )
    fail_unless(
        not rejected,
        f"name {name!r} is registered again by distribution(s) {', '.join(map(repr, rejected))}; "
        "every learner name must be unique",
    )
    return f"{name!r}, registered by distribution {owner.plugin.distribution!r}"


@check("config", "Config is a LearnerConfig dataclass and default_config works for every claimed setting")
def check_config(cls: type[Learner], opts: CheckOptions) -> str:
    def body(setting: KindSetting) -> str:
        impl = cls.for_kind(setting.kind)
        config_cls = impl.Config
        fail_unless(
            isinstance(config_cls, type) and dataclasses.is_dataclass(config_cls)
            and issubclass(config_cls, LearnerConfig),
            f"{impl.__qualname__}.Config must be a @dataclass extending fewshot_bench.api.LearnerConfig",
        )
        settings = list(dict.fromkeys([*impl.tuned_settings, *((setting.dataset, k) for k in setting.shots)]))
        for data, k_shot in settings:
            where = f"{impl.__qualname__}.default_config({data!r}, {k_shot})"
            config = impl.default_config(data, k_shot)
            fail_unless(isinstance(config, config_cls),
                        f"{where} returned {type(config).__name__}, not {config_cls.__name__}")
            try:
                json.dumps(config_to_dict(config))
            except TypeError as exc:
                raise CheckFailed(f"{where} is not JSON-serialisable (run keys hash it): {exc}") from None
            dtype = getattr(torch, str(config.dtype), None)
            fail_unless(
                isinstance(dtype, torch.dtype) and dtype.is_floating_point,
                f"{where}.dtype = {config.dtype!r} is not a torch floating-point type such as 'float32'",
            )
            fail_unless(int(config.meta_batch_size) >= 1, f"{where}.meta_batch_size must be at least 1")
            fail_unless(float(config.outer_lr) > 0, f"{where}.outer_lr must be positive")
        return (f"{len(settings)} setting{'s' if len(settings) != 1 else ''} ("
                + ", ".join(f"{d}/{k}-shot" for d, k in settings) + ")")

    return per_kind(cls, body)


@check("predict", "predict returns finite predictions of the kind's shape and leaves the batch untouched")
def check_predict(cls: type[Learner], opts: CheckOptions) -> str:
    def body(setting: KindSetting) -> str:
        for k_shot in setting.shots:
            learner = make_learner(cls, opts, setting, k_shot)
            batch = episodes(opts, setting, k_shot, learner)
            before = (batch.support.clone(), batch.query.clone())
            out = _predict(learner, batch)
            fail_unless(isinstance(out, torch.Tensor), f"predict returned {type(out).__name__}, not a tensor")
            expected = tuple(setting.trivial(batch).shape)
            fail_unless(
                tuple(out.shape) == expected,
                f"{k_shot}-shot {setting.kind}: predict returned shape {list(out.shape)}, expected {list(expected)} "
                + ("[B, M, N]" if setting.kind == "classification" else "[B, M, 1]") + " for M queries per episode",
            )
            fail_unless(out.is_floating_point(), f"predict returned {out.dtype}; return floating-point scores")
            bad = int((~out.isfinite()).sum())
            fail_unless(bad == 0,
                        f"{k_shot}-shot {setting.kind}: {bad} of {out.numel()} predictions are NaN or infinite")
            fail_unless(
                torch.equal(before[0], batch.support) and torch.equal(before[1], batch.query),
                "predict modified the episode batch in place; clone before changing features",
            )
        return f"finite {list(out.shape[1:])} per episode for K = {', '.join(map(str, setting.shots))}"

    return per_kind(cls, body)


@check("meta-loss",
       "meta_loss returns a finite scalar whose gradients reach the parameters, and hands predict no labels")
def check_meta_loss(cls: type[Learner], opts: CheckOptions) -> str:
    def body(setting: KindSetting) -> str:
        learner = make_learner(cls, opts, setting, setting.train_shot)
        params = [p for p in learner.parameters() if p.requires_grad]
        fail_unless(bool(params),
                    "a meta-trainable learner needs trainable parameters; set meta_trainable = False otherwise")
        learner.train()
        out, handed = _meta_loss_watching_predict(learner, episodes(opts, setting, setting.train_shot, learner,
                                                                    split="train"))
        fail_unless(not any(isinstance(b, EpisodeBatch) for b in handed),
                    "meta_loss hands predict a labelled EpisodeBatch, but predict receives a PredictionBatch "
                    "(no query labels): call self.predict(batch.inputs())")
        fail_unless(isinstance(out, LossOutput),
                    f"meta_loss returned {type(out).__name__}, not fewshot_bench.LossOutput")
        loss = out.loss
        fail_unless(isinstance(loss, torch.Tensor) and loss.ndim == 0, "LossOutput.loss must be a scalar tensor")
        fail_unless(bool(loss.detach().isfinite()), f"meta_loss is {float(loss.detach())} on a fresh learner")
        fail_unless(loss.requires_grad,
                    "LossOutput.loss does not require grad: it must be computed from the parameters")
        for key, value in out.metrics.items():
            fail_unless(
                not (isinstance(value, torch.Tensor) and (value.requires_grad or value.numel() != 1)),
                f"metric {key!r} must be a detached scalar (call .detach()); it keeps the graph alive",
            )
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        reached = sum(1 for g in grads if g is not None and bool(g.abs().sum() > 0))
        fail_unless(reached > 0, "meta_loss gives no gradient to any parameter")
        bad = sum(1 for g in grads if g is not None and not bool(g.isfinite().all()))
        fail_unless(bad == 0, f"{bad} parameter gradient(s) of meta_loss are not finite on a fresh learner")
        return f"loss {float(loss.detach()):.4f}; gradients reach {reached} of {len(params)} parameter tensors"

    return per_kind(cls, body, only_meta_trainable=True)


def _meta_loss_watching_predict(learner: Learner, batch: EpisodeBatch) -> tuple[object, list[object]]:
    """``learner.meta_loss(batch)`` and the batches its calls of ``self.predict`` received."""
    handed: list[object] = []
    predict = learner.predict

    def watched(batch: object, *args: object, **kwargs: object) -> torch.Tensor:
        handed.append(batch)
        return predict(batch, *args, **kwargs)

    learner.predict = watched  # an instance attribute shadows the method for this one call
    try:
        return learner.meta_loss(batch), handed
    finally:
        del learner.predict


@check("deterministic", "the same seed gives the same learner and the same predictions")
def check_deterministic(cls: type[Learner], opts: CheckOptions) -> str:
    def body(setting: KindSetting) -> str:
        k_shot = setting.shots[-1]
        a = make_learner(cls, opts, setting, k_shot)
        b = make_learner(cls, opts, setting, k_shot)
        batch = episodes(opts, setting, k_shot, a)
        # Reseeding before each call separates an unseeded initialisation from sampling at evaluation.
        torch.manual_seed(opts.seed)
        first = _predict(a, batch)
        torch.manual_seed(opts.seed)
        diff = max_diff(first, _predict(b, batch))
        fail_unless(
            diff == 0.0,
            f"two learners built after torch.manual_seed({opts.seed}) predict differently (max diff {diff:.3g}): "
            "draw every random initial value from torch's global generator",
        )
        diff = max_diff(first, _predict(a, batch))
        fail_unless(
            diff == 0.0,
            f"predicting the same batch twice in eval mode differs (max diff {diff:.3g}): eval mode must "
            "not sample or keep state between calls",
        )
        return "identical predictions from equal seeds and from repeated calls"

    return per_kind(cls, body)


@check("permutation", "permuting the episodes of a batch permutes the predictions")
def check_permutation(cls: type[Learner], opts: CheckOptions) -> str:
    def body(setting: KindSetting) -> str:
        k_shot = setting.shots[-1]
        learner = make_learner(cls, opts, setting, k_shot)
        batch = episodes(opts, setting, k_shot, learner, size=max(3, opts.batch_episodes))
        perm = torch.roll(torch.arange(batch.batch_size).flip(0), 1)  # moves every episode
        ref = _predict(learner, batch)[perm]
        out = _predict(learner, batch.select(perm))
        diff = max_diff(out, ref)
        fail_unless(
            close(out, ref, opts.rtol),
            f"episode predictions depend on their position in the batch (max diff {diff:.3g}); "
            "compute each episode from its own support set only",
        )
        return f"max diff {diff:.2g} over {batch.batch_size} permuted episodes"

    return per_kind(cls, body)


@check("isolation", "changing one episode's data does not change another episode's predictions")
def check_isolation(cls: type[Learner], opts: CheckOptions) -> str:
    def body(setting: KindSetting) -> str:
        k_shot = setting.shots[-1]
        learner = make_learner(cls, opts, setting, k_shot)
        batch = episodes(opts, setting, k_shot, learner, size=max(2, opts.batch_episodes))
        # Episode 0 is replaced by an episode of the training split; the others are kept.
        other = episodes(opts, setting, k_shot, learner, size=1, split="train")
        changed = concat([other, batch.select(slice(1, None))])
        ref = _predict(learner, batch)[1:]
        out = _predict(learner, changed)[1:]
        diff = max_diff(out, ref)
        fail_unless(
            close(out, ref, opts.rtol),
            f"replacing episode 0 changed the predictions for episodes 1..{batch.batch_size - 1} "
            f"(max diff {diff:.3g}): "
            "information leaks between the episodes of a batch (e.g. statistics over the batch dimension)",
        )
        return f"max diff {diff:.2g} on the {batch.batch_size - 1} untouched episodes"

    return per_kind(cls, body)


@check("query-order", "reordering an episode's queries reorders its predictions the same way")
def check_query_order(cls: type[Learner], opts: CheckOptions) -> str:
    def body(setting: KindSetting) -> str:
        k_shot = setting.shots[-1]
        learner = make_learner(cls, opts, setting, k_shot)
        batch = episodes(opts, setting, k_shot, learner)
        g = torch.Generator().manual_seed(opts.seed + 2)
        order = torch.stack([torch.randperm(batch.n_queries, generator=g) for _ in range(batch.batch_size)])
        ref = _predict(learner, batch)
        ref = ref.gather(1, order[..., None].expand(-1, -1, ref.shape[-1]))
        out = _predict(learner, batch.permute_queries(order))
        diff = max_diff(out, ref)
        fail_unless(
            close(out, ref, opts.rtol),
            f"predictions do not follow their queries when an episode's queries are reordered (max diff {diff:.3g}): "
            "a query's position carries no information (evaluation shuffles them); compute each prediction "
            "from the query's features, never from its index",
        )
        return f"max diff {diff:.2g} over {batch.batch_size} episodes of {batch.n_queries} reordered queries"

    return per_kind(cls, body)


@check("inductive",
       "a query's prediction does not depend on the episode's other queries (or the learner is transductive)")
def check_inductive(cls: type[Learner], opts: CheckOptions) -> str:
    if getattr(cls, "transductive", False):
        return ("declared transductive (transductive = True): predictions may use all of an episode's queries; "
                "tables mark its rows")

    def body(setting: KindSetting) -> str:
        k_shot = setting.shots[-1]
        learner = make_learner(cls, opts, setting, k_shot)
        batch = episodes(opts, setting, k_shot, learner)
        keep = max(1, batch.n_queries // 2)
        ref = _predict(learner, batch)[:, :keep]
        # The other queries replaced by queries of training episodes, then left out altogether.
        other = episodes(opts, setting, k_shot, learner, size=batch.batch_size, split="train")
        swapped = replace(batch, query=torch.cat([batch.query[:, :keep], other.query[:, keep:]], 1))
        alone = replace(batch, query=batch.query[:, :keep], query_labels=batch.query_labels[:, :keep])
        outs = [_predict(learner, b)[:, :keep] for b in (swapped, alone)]
        diffs = [max_diff(out, ref) for out in outs]
        fail_unless(
            all(close(out, ref, opts.rtol) for out in outs),
            f"a query's prediction changes with the episode's other queries (max diff {max(diffs):.3g} when they are "
            "replaced or left out): predict each query from the support set and that query alone (no statistics "
            "over the queries), or declare the learner transductive (class attribute transductive = True), "
            "which tables then mark",
        )
        return f"max diff {max(diffs):.2g} for {keep} queries per episode with the others replaced or left out"

    return per_kind(cls, body)


@check("readout", "where linear_readout is defined, it predicts the classes predict does")
def check_readout_agrees(cls: type[Learner], opts: CheckOptions) -> str:
    setting = KIND_SETTINGS["classification"]
    if "classification" not in cls.kinds:
        raise CheckSkipped("does not apply: linear readouts are for classification")
    details = []
    for k_shot in setting.shots:
        learner = make_learner(cls, opts, setting, k_shot)
        if not readout_follows_predict(learner):
            raise CheckSkipped("linear_readout is inherited from above the class that defines predict: "
                               "evaluation ignores it")
        batch = episodes(opts, setting, k_shot, learner, size=max(3, opts.batch_episodes))
        logits = _predict(learner, batch)
        with torch.no_grad():  # as evaluation calls it
            readout = learner.linear_readout(batch.inputs())
        if readout is None:
            raise CheckSkipped("no linear_readout: evaluation calls predict")
        weights, bias = readout
        expected = (batch.batch_size, batch.n_way, batch.query.shape[-1])
        fail_unless(
            tuple(weights.shape) == expected and (bias is None or tuple(bias.shape) == expected[:2]),
            f"linear_readout returned weights {list(weights.shape)} "
            f"and bias {None if bias is None else list(bias.shape)}; "
            f"expected {list(expected)} and {list(expected[:2])} or None",
        )
        wrong = int(readout_disagreements(logits, linear_logits(batch.query, weights, bias)).sum())
        fail_unless(
            wrong == 0,
            f"{k_shot}-shot: linear_readout picks another class than predict for {wrong} of "
            f"{batch.batch_size * batch.n_queries} queries; the readout must reproduce predict from each episode's "
            "support set alone (no statistics over the batch), or be deleted so evaluation calls predict",
        )
        details.append(f"{k_shot}-shot")
    return f"readout agrees with predict on every query ({', '.join(details)})"


@check("batching", "a batch of episodes predicts what the episodes predict one at a time")
def check_batching(cls: type[Learner], opts: CheckOptions) -> str:
    def body(setting: KindSetting) -> str:
        k_shot = setting.shots[-1]
        learner = make_learner(cls, opts, setting, k_shot)
        batch = episodes(opts, setting, k_shot, learner)
        together = _predict(learner, batch)
        alone = torch.cat([_predict(learner, batch.select(slice(i, i + 1))) for i in range(batch.batch_size)])
        diff = max_diff(together, alone)
        fail_unless(
            close(together, alone, opts.rtol),
            f"batched and one-at-a-time predictions differ (max diff {diff:.3g}); "
            "results must not depend on the batch size",
        )
        return f"max diff {diff:.2g} over {batch.batch_size} episodes"

    return per_kind(cls, body)


@check("state-dict", "state_dict round-trips into a fresh instance with identical predictions")
def check_state_dict(cls: type[Learner], opts: CheckOptions) -> str:
    def body(setting: KindSetting) -> str:
        k_shot = setting.shots[-1]
        source = make_learner(cls, opts, setting, k_shot)
        state = source.state_dict()
        if not state:
            return "no state to save (no parameters or buffers)"
        # Move the source away from its initial values so a fresh instance cannot match by accident.
        g = torch.Generator().manual_seed(opts.seed + 1)
        with torch.no_grad():
            for t in state.values():
                if t.is_floating_point():
                    t.add_(0.01 * (t.abs().mean() + 1e-3) * torch.randn(t.shape, generator=g).to(t))
        buffer = io.BytesIO()
        torch.save(source.state_dict(), buffer)
        buffer.seek(0)
        fresh = make_learner(cls, opts, setting, k_shot, seed=opts.seed + 1)
        fresh.load_state_dict(torch.load(buffer, weights_only=True))
        batch = episodes(opts, setting, k_shot, source)
        diff = max_diff(_predict(source, batch), _predict(fresh, batch))
        fail_unless(
            diff == 0.0,
            f"a fresh instance loaded with the state_dict predicts differently (max diff {diff:.3g}); keep all "
            "learned state in parameters or registered buffers",
        )
        return f"{len(state)} tensors, {sum(t.numel() for t in state.values()):,} values"

    return per_kind(cls, body)


@check("meta-training", "a short meta-training on the embedded dataset beats a trivial predictor")
def check_meta_training(cls: type[Learner], opts: CheckOptions) -> str:
    def body(setting: KindSetting) -> str:
        ds, k_shot = dataset(opts, setting), setting.train_shot
        changes = {} if opts.train_batch is None else {"meta_batch_size": opts.train_batch}
        learner = make_learner(cls, opts, setting, k_shot, **changes)
        before = copy.deepcopy(learner.state_dict())
        spec = RunSpec(cls.name, way=setting.n_way, shot=k_shot, seed=opts.seed, steps=opts.train_steps,
                       val_every=opts.train_steps, val_episodes=20, patience=None)
        t0 = time.perf_counter()
        trainer = MetaTrainer(learner, ds.split("train"), ds.split("val"), spec,
                              TrainOptions(val_query=setting.score_query), torch.device("cpu"))
        result = trainer.run()
        seconds = time.perf_counter() - t0
        fail_unless(
            result.nan_steps <= opts.train_steps // 10,
            f"{result.nan_steps} of {opts.train_steps} meta-training steps had a non-finite loss or gradient",
        )
        after = learner.state_dict()
        fail_unless(
            any(not torch.equal(before[k], after[k]) for k in before),
            "meta-training did not change any parameter: meta_loss must depend on the learner's parameters",
        )
        kind = task_kind(setting.kind)
        score = dict(split=ds.split("test"), n_way=setting.n_way, k_shot=k_shot, seed=opts.seed,
                     episodes=opts.score_episodes, n_query=setting.score_query)
        mine = evaluate(learner, **score)
        trivial = evaluate(TrivialLearner(setting, learner.task), **score)
        # Paired per-episode gain over the trivial predictor, three standard errors clear of zero.
        gain = (mine - trivial) if kind.higher_is_better else (trivial - mine)
        mean_gain, stderr = float(gain.mean()), float(gain.std(ddof=1)) / math.sqrt(len(gain))
        summary = (
            f"{kind.metric} {float(mine.mean()):.3f} vs {float(trivial.mean()):.3f} for "
            f"{TrivialLearner.names[setting.kind]} on {opts.score_episodes} test episodes after {opts.train_steps} "
            f"steps of {trainer.batch_size} episodes ({seconds:.1f} s)"
        )
        fail_unless(mean_gain - 3 * stderr > 0, f"not better than a trivial predictor: {summary}")
        return summary

    return per_kind(cls, body, only_meta_trainable=True)


# Meta-training steps of the population check, and how far a member's predictions may drift
# from its run alone's (relative to their scale): batched products round differently, and a
# few steps keep that at rounding level even for learners whose training amplifies it (LEO).
# Predictions, not parameters: Adam turns a gradient that is zero but for rounding (e.g. a
# bias that cancels out) into steps of +-lr, which move the parameter and no prediction.
POPULATION_STEPS = 3
POPULATION_RTOL = 1e-3


@check("population", "members meta-trained as one population match their runs alone (reports batched or sequential)")
def check_population(cls: type[Learner], opts: CheckOptions) -> str:
    def body(setting: KindSetting) -> str:
        ds, k_shot = dataset(opts, setting), setting.train_shot
        changes = {} if opts.train_batch is None else {"meta_batch_size": opts.train_batch}
        seeds = (opts.seed, opts.seed + 1)

        def members() -> list[MetaTrainer]:
            out = []
            for seed in seeds:
                learner = make_learner(cls, opts, setting, k_shot, seed=seed, **changes)
                spec = RunSpec(cls.name, way=setting.n_way, shot=k_shot, seed=seed, steps=POPULATION_STEPS,
                               val_every=POPULATION_STEPS, val_episodes=10, patience=None)
                out.append(MetaTrainer(learner, ds.split("train"), ds.split("val"), spec,
                                       TrainOptions(val_query=setting.score_query), torch.device("cpu")))
            return out

        alone = members()
        for member in alone:
            member.run()
        together = members()
        population = Population(together)
        population.run()
        worst = 0.0
        for a, b in zip(alone, together):
            batch = episodes(opts, setting, k_shot, a.learner)
            mine, theirs = _predict(b.learner, batch), _predict(a.learner, batch)
            drift = max_diff(theirs, mine) / max(1.0, float(theirs.abs().max()) if theirs.numel() else 1.0)
            fail_unless(
                drift <= POPULATION_RTOL,
                f"member seed {a.spec.seed} trained in a {population.path} population predicts {drift:.2e} (of the "
                f"predictions' scale) away from its run alone after {POPULATION_STEPS} steps: draw noise from "
                "self.noise and keep no state outside parameters and buffers",
            )
            worst = max(worst, drift)
        how = population.path + (f" ({population.why_sequential})" if population.why_sequential else "")
        return f"{how}; {len(seeds)} members match their runs alone after {POPULATION_STEPS} steps (drift {worst:.1e})"

    return per_kind(cls, body, only_meta_trainable=True)


class TrivialLearner(Learner):
    """What a learner that learned nothing predicts: chance for classification, the support mean for regression."""

    name = "trivial"
    names = {"classification": "chance", "regression": "the support mean"}

    def __init__(self, setting: KindSetting, task) -> None:
        super().__init__(None, task)
        self.setting = setting

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    def predict(self, batch):
        return self.setting.trivial(batch)


@check("cpu-budget", "meta-training steps and test episodes finish within the CPU budget; evaluation is not much "
                    "slower than the built-ins' (else: what to add)")
def check_cpu_budget(cls: type[Learner], opts: CheckOptions) -> str:
    total = 0.0

    def body(setting: KindSetting) -> str:
        nonlocal total
        ds, k_shot = dataset(opts, setting), setting.train_shot
        learner = make_learner(cls, opts, setting, k_shot)
        parts = []
        if cls.for_kind(setting.kind).meta_trainable:
            spec = RunSpec(cls.name, way=setting.n_way, shot=k_shot, seed=opts.seed, steps=opts.budget_steps,
                           val_every=opts.budget_steps, val_episodes=1, patience=None)
            trainer = MetaTrainer(learner, ds.split("train"), ds.split("val"), spec, TrainOptions(),
                                  torch.device("cpu"))
            learner.train()
            t0 = time.perf_counter()
            for step in range(opts.budget_steps):
                trainer.step(step)
            seconds = time.perf_counter() - t0
            total += seconds
            parts.append(
                f"{opts.budget_steps} steps of {trainer.batch_size} episodes in {seconds:.2f} s "
                f"({1000 * seconds / opts.budget_steps:.0f} ms/step)"
            )
        if setting.kind == "classification":
            seconds, comparison = _evaluation_beside_the_builtins(cls, opts, setting, learner)
            total += seconds
            parts.append(comparison)
            return ", ".join(parts)
        t0 = time.perf_counter()
        evaluate(learner, ds.split("test"), setting.n_way, k_shot, seed=opts.seed, episodes=opts.budget_episodes,
                 n_query=TRAIN_QUERY)
        seconds = time.perf_counter() - t0
        total += seconds
        parts.append(f"{opts.budget_episodes} test episodes in {seconds:.2f} s")
        return ", ".join(parts)

    detail = per_kind(cls, body)
    summary = f"{detail}; total {total:.1f} s of a {opts.cpu_budget_s:g} s budget"
    fail_unless(total <= opts.cpu_budget_s, f"over budget: {summary} (raise it with --budget or {BUDGET_ENV})")
    return summary


_reference_seconds: dict[tuple, float] = {}


def _evaluation_beside_the_builtins(
    cls: type[Learner], opts: CheckOptions, setting: KindSetting, learner: Learner
) -> tuple[float, str]:
    """Seconds of the learner's evaluation as a run makes it (every remaining example a query), and a note comparing
    it with the built-ins' (``opts.speed_references``), with what to add when it is much slower and has no
    readout."""
    host, ds, k_shot = opts.plugin_host(), dataset(opts, setting), setting.train_shot
    bench = Bench(host=host, features=ds, eval_episodes=opts.budget_episodes)
    work = bench.evaluation(cls, k_shot)
    try:
        bench.evaluation(cls, k_shot, episodes=2).call()  # a warm-up: first-call costs are not the learner's speed
        t0 = time.perf_counter()
        work.call()
    except PluginError as exc:  # a run would refuse it too (a readout that disagrees with predict, ...): not speed
        raise CheckSkipped(f"evaluation refused, so not timed (the check that owns it fails): {exc}") from None
    seconds = time.perf_counter() - t0
    slower = {}
    for name in opts.speed_references:
        if name == cls.name or name not in host.learners:
            continue
        key = (name, k_shot, opts.budget_episodes, id(ds))
        if key not in _reference_seconds:  # the built-ins do not change within a process: timed once
            _reference_seconds[key] = measure(bench.evaluation(name, k_shot), min_rounds=1, min_seconds=0).seconds
        slower[name] = seconds / max(_reference_seconds[key], 1e-9)
    text = f"{work.episodes} test episodes (all remaining queries) in {seconds:.2f} s"
    if slower:
        text += " (" + ", ".join(f"{t:.1f}x the time of {name}" for name, t in slower.items()) + ")"
    batch = episodes(opts, setting, k_shot, learner, size=1)
    hint = readout_hint(slower, has_readout(learner, batch.inputs()))
    return seconds, text + (f"; {hint}" if hint else "")
