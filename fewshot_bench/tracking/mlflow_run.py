"""A tracked run as an MLflow run, written through ``MlflowClient`` (no global active run, no autologging)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fewshot_bench.tracking.run_tracker import RunTracker, Scalar

# The tag that names the stored run an MLflow run shows (export skips runs that already have one).
RUN_ID_TAG = "fewshot_bench.run_id"
RUN_KEY_TAG = "fewshot_bench.run_key"
# MLflow's limits on one log_batch request.
PARAMS_PER_BATCH = 100
METRICS_PER_BATCH = 1000


def client(tracking_uri: str | None) -> Any:
    """An ``MlflowClient`` for ``tracking_uri`` (None: ``$MLFLOW_TRACKING_URI``, else MLflow's own default)."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri)


def experiment_id(mlflow_client: Any, name: str) -> str:
    """The id of the experiment ``name``, created if it does not exist."""
    found = mlflow_client.get_experiment_by_name(name)
    return found.experiment_id if found is not None else mlflow_client.create_experiment(name)


def logged_run_ids(mlflow_client: Any, experiment: str) -> set[str]:
    """The stored run ids that runs of ``experiment`` (an id) show, by their tag."""
    found: set[str] = set()
    token = None
    while True:  # page by page: an experiment may hold more runs than one search returns
        page = mlflow_client.search_runs([experiment], filter_string=f"tags.`{RUN_ID_TAG}` != ''",
                                         max_results=1000, page_token=token)
        found.update(run.data.tags[RUN_ID_TAG] for run in page if RUN_ID_TAG in run.data.tags)
        token = page.token
        if not token:
            return found


class MlflowRun(RunTracker):
    """Parameters, metrics (buffered, written in batches at each flush) and artifacts of one MLflow run."""

    def __init__(self, mlflow_client: Any, experiment: str, name: str, tags: Mapping[str, str]) -> None:
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

        self.client = mlflow_client
        self.run_id = mlflow_client.create_run(experiment, run_name=name, tags=dict(tags)).info.run_id
        self.where = f"MLflow run {self.run_id} (experiment id {experiment}, tracking URI {mlflow_client.tracking_uri})"
        self._max_value = MAX_PARAM_VAL_LENGTH
        self._logged: set[str] = set()
        self._metrics: list[Any] = []

    def params(self, values: Mapping[str, Scalar]) -> None:
        """Log the parameters not logged yet (MLflow refuses to change one)."""
        from mlflow.entities import Param

        new = [Param(k, str(v)[:self._max_value]) for k, v in values.items() if k not in self._logged]
        for start in range(0, len(new), PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, params=new[start:start + PARAMS_PER_BATCH])
        self._logged.update(p.key for p in new)

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        """Buffer the values as metrics at ``step`` (written at the next flush)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._metrics.extend(Metric(name, float(value), now, step) for name, value in values.items())

    def tag(self, name: str, value: str) -> None:
        """Set a tag of the run."""
        self.client.set_tag(self.run_id, name, value)

    def artifact(self, path: Path) -> None:
        """Upload the file under the run's ``figures/`` artifacts."""
        self.client.log_artifact(self.run_id, str(path), artifact_path="figures")

    def flush(self) -> None:
        """Write the buffered metrics in batches MLflow accepts."""
        pending, self._metrics = self._metrics, []
        for start in range(0, len(pending), METRICS_PER_BATCH):
            self.client.log_batch(self.run_id, metrics=pending[start:start + METRICS_PER_BATCH])

    def close(self, failed: bool = False) -> None:
        """Write what is buffered and mark the run FINISHED (FAILED on an error)."""
        self.flush()
        self.client.set_terminated(self.run_id, status="FAILED" if failed else "FINISHED")
