"""One command's tracking: a live run's tracked run, and stored runs logged after the fact, each run once."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from fewshot_bench.errors import FewshotBenchError, TrackingError
from fewshot_bench.records.store import RunRecord
from fewshot_bench.tracking.destination import Connection, Tracking, run_name
from fewshot_bench.tracking.run_log import TrainingLog, log_record

log = logging.getLogger(__name__)


@dataclass
class Logged:
    """What logging stored runs did: the run ids logged now, those the destination showed already, and where."""

    where: str
    logged: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


@contextmanager
def backend_errors(where: str) -> Iterator[None]:
    """A backend's own exception as one line naming the destination (the runs stay stored: export logs them later)."""
    try:
        yield
    except FewshotBenchError:
        raise
    except Exception as exc:
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise TrackingError(f"logging to {where} failed ({type(exc).__name__}: {first}); the runs are stored: "
                            "`fewshot-bench export` logs them once the destination works") from exc


class TrackingSession:
    """An open destination for one command's runs."""

    def __init__(self, tracking: Tracking) -> None:
        self.connection: Connection = tracking.connect()

    @property
    def where(self) -> str:
        """Where the runs go, for the terminal."""
        return self.connection.description

    def live(self, learner: str, dataset: str, way: int, shot: int, seed: int, run_key: str) -> TrainingLog:
        """A new tracked run for a run about to be computed, streamed as it trains (:class:`TrainingLog`)."""
        with backend_errors(self.where):
            tracker = self.connection.open_run(run_name(learner, dataset, way, shot, seed, run_key), run_key)
        log.info("tracking: %s", tracker.where)
        return TrainingLog(tracker)

    def finish(self, training: TrainingLog, record: RunRecord, protocol_id: str) -> None:
        """A live run was stored as ``record``: its parameters and final numbers, then the end of its tracked run."""
        training.finish(record, protocol_id, lambda tracker: self.connection.mark_stored(tracker, record.run_id))
        training.close()

    def stored(
        self, records: Iterable[RunRecord], protocol_id: Callable[[RunRecord], str], artifacts: Iterable[Path] = (),
    ) -> Logged:
        """Log each of ``records`` the destination does not show yet (its curves from its validation history),
        with ``artifacts`` attached to each."""
        report = Logged(self.where)
        files = list(artifacts)
        with backend_errors(self.where):
            run_ids, names = self.connection.logged()
            for record in records:
                name = run_name(record.learner, record.dataset, record.way, record.shot, record.seed, record.run_key)
                if record.run_id in run_ids or name in names:
                    report.skipped.append(record.run_id)
                    continue
                tracker = self.connection.open_run(name, record.run_key)
                try:
                    log_record(tracker, record, protocol_id(record))
                    for path in files:
                        tracker.artifact(path)
                    self.connection.mark_stored(tracker, record.run_id)
                except BaseException:
                    tracker.close(failed=True)
                    raise
                tracker.close()
                names.add(name)
                report.logged.append(record.run_id)
        return report
