"""What a tracked run shows, whatever the backend: its parameters, its meta-training curves (streamed live from the
trainer, or read back from a stored run's validation history) and its final metric with the 95% CI.

The names: ``train/loss`` (and the learner's other training metrics) at every step, ``val/METRIC`` at every
validation, ``train/step_time_s`` (wall seconds per meta-training step between validations, validation excluded),
``val/best_METRIC`` at the best step, ``test/METRIC`` and ``test/METRIC_ci95`` at the last step, ``time/train_s``
and ``time/eval_s``. METRIC is the run's metric: ``accuracy``, or ``mse`` for regression.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from fewshot_bench.records.store import RunRecord, current_train_names
from fewshot_bench.tracking.run_tracker import RunTracker, Scalar, flat_params

log = logging.getLogger(__name__)

# Provenance the store keeps beside a run's options that is no parameter: a digest per split (the data id covers them).
NOT_PARAMS = ("data_digests",)


def run_params(
    options: Mapping[str, Any], config: Mapping[str, Any], run_key: str, metric: str,
) -> dict[str, Scalar]:
    """A run's parameters: its protocol (the spec's fields and what the runner adds: data id, plugin, ...), its run
    key and metric, and its resolved config as ``config.KEY``."""
    kept = {k: v for k, v in options.items() if k not in NOT_PARAMS}
    return {**flat_params(kept), **flat_params(config, "config."), "run_key": run_key, "metric": metric}


def record_params(record: RunRecord, protocol_id: str) -> dict[str, Scalar]:
    """A stored run's parameters: :func:`run_params` with its run id, shared protocol id and versions."""
    options = {**record.options, "dataset": record.dataset}
    return {**run_params(options, record.config, record.run_key, record.metric), "run_id": record.run_id,
            "protocol": protocol_id, "episodes": record.episodes or 0, **flat_params(record.versions, "versions.")}


def log_record(tracker: RunTracker, record: RunRecord, protocol_id: str, curves: bool = True) -> None:
    """Log a stored run: its parameters, its validation history as curves (unless ``curves`` is False: a live run
    streamed them), its best validation and its final metric with the CI."""
    train = current_train_names(record.summary.get("train")) or {}
    metric = record.metric
    tracker.params(record_params(record, protocol_id))
    if curves:
        for point in train.get("history") or []:
            values = {f"val/{metric}": point.get("val_metric"), "train/loss": point.get("loss")}
            tracker.scalars(int(point["step"]), {k: v for k, v in values.items() if v is not None})
    last = int(train.get("steps") or 0)
    if train.get("best_val_metric") is not None:
        tracker.scalars(int(train.get("best_step") or 0), {f"val/best_{metric}": train["best_val_metric"]})
    final = {f"test/{metric}": record.mean, f"test/{metric}_ci95": record.ci95,
             **{f"time/{k}": record.timings.get(k) for k in ("train_s", "eval_s")}}
    tracker.scalars(last, {k: float(v) for k, v in final.items() if isinstance(v, (int, float))})
    tracker.flush()


class TrainingLog:
    """Streams one run's meta-training to its tracked run as it happens (the trainer's ``on_step`` and
    ``on_validation`` callbacks), without touching what the trainer computes.

    A step's metrics are copied on the device (a CUDA graph's outputs are overwritten by the next replay) and read
    back at the next validation, which waits for the device anyway: tracking adds no synchronisation per step. A
    backend that fails (a full disk, a tracking server gone) stops the tracking with one warning; the run goes on.
    """

    def __init__(self, tracker: RunTracker) -> None:
        self.tracker: RunTracker | None = tracker
        self._pending: list[tuple[int, dict[str, Any]]] = []
        self._mark = (time.perf_counter(), 0)  # (when, at which step) the current stretch of steps began
        self._last_step_at = self._mark[0]

    def _safely(self, write: Callable[[RunTracker], None]) -> None:
        if self.tracker is None:
            return
        try:
            write(self.tracker)
        except Exception as exc:
            self._stop(exc)

    def _stop(self, exc: Exception) -> None:
        log.warning("tracking stopped (%s: %s); the run goes on and is stored as usual",
                    type(exc).__name__, str(exc).strip().splitlines()[0][:200] if str(exc).strip() else "")
        self.tracker = None

    def params(self, values: Mapping[str, Scalar]) -> None:
        """Log parameters."""
        self._safely(lambda t: (t.params(values), t.flush()))

    def begin(self, result: Any) -> None:
        """Training starts (or resumes) at ``result.steps``; a resumed run's restored validations are logged."""
        history = result.history

        def restored(t: RunTracker) -> None:
            for point in history:
                t.scalars(point["step"], {f"val/{result.metric}": point["val_metric"], "train/loss": point["loss"]})
            t.flush()

        if history:
            self._safely(restored)
        self._mark = (time.perf_counter(), result.steps)
        self._last_step_at = self._mark[0]

    def step(self, step: int, metrics: Mapping[str, Any]) -> None:
        """After meta-training step ``step`` (counted from 1): keep a copy of its loss and the learner's metrics."""
        if self.tracker is None:
            return
        try:  # a plugin's metric that is no scalar tensor (a float, a vector) is left out; it never stops the run
            kept = {k: v.detach().clone() if hasattr(v, "detach") else float(v) for k, v in metrics.items()
                    if k != "nan_step" and (not hasattr(v, "numel") or v.numel() == 1)}
        except Exception as exc:
            self._stop(exc)
            return
        self._pending.append((step, kept))
        self._last_step_at = time.perf_counter()

    def validation(self, result: Any) -> None:
        """After a validation: the steps since the last one, this validation's metric and the time per step."""
        point = result.history[-1]
        pending, self._pending = self._pending, []
        start, first = self._mark
        steps = point["step"] - first
        step_time = (self._last_step_at - start) / steps if steps > 0 else None

        def write(t: RunTracker) -> None:
            for step, values in pending:
                t.scalars(step, {f"train/{k}": float(v) for k, v in values.items()})
            at_validation = {f"val/{result.metric}": point["val_metric"]}
            if step_time is not None:
                at_validation["train/step_time_s"] = step_time
            t.scalars(point["step"], at_validation)
            t.flush()

        self._safely(write)
        self._mark = (time.perf_counter(), point["step"])

    def then(self, on_validation: Callable[[Any], bool] | None) -> Callable[[Any], bool]:
        """The trainer's ``on_validation``: log this validation, then ask ``on_validation`` (a pruner) if given."""
        def call(result: Any) -> bool:
            self.validation(result)
            return on_validation is None or on_validation(result)

        return call

    def finish(self, record: RunRecord, protocol_id: str, mark: Callable[[RunTracker], None]) -> None:
        """The stored run's parameters and final numbers (its curves were streamed); ``mark`` names it in the
        tracked run."""
        self._safely(lambda t: (log_record(t, record, protocol_id, curves=False), mark(t)))

    def close(self, failed: bool = False) -> None:
        """End the tracked run."""
        self._safely(lambda t: t.close(failed))
