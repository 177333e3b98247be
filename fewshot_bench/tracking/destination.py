"""Where tracked runs go (``--tracker tensorboard|mlflow`` and its options), checked before any work, and opening
one tracked run there. The backends' packages are optional extras, imported only when a tracker is used."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fewshot_bench.errors import ConfigError
from fewshot_bench.tracking.mlflow_run import RUN_ID_TAG, RUN_KEY_TAG, MlflowRun, client, experiment_id, logged_run_ids
from fewshot_bench.tracking.run_tracker import RunTracker
from fewshot_bench.tracking.tensorboard_run import TensorBoardRun

log = logging.getLogger(__name__)

TRACKERS = ("tensorboard", "mlflow")
# tracker -> (the module it imports, the extra that installs it, the requirement the extra holds)
EXTRAS = {"tensorboard": ("tensorboard", "tensorboard>=2.14"), "mlflow": ("mlflow", "mlflow>=2.9")}
DEFAULT_LOG_DIR = Path("runs")  # TensorBoard's and torch's usual folder: `tensorboard --logdir runs`
DEFAULT_EXPERIMENT = "fewshot-bench"


def run_name(learner: str, dataset: str, way: int, shot: int, seed: int, run_key: str) -> str:
    """A tracked run's name (its TensorBoard folder): the setting, the seed and the run key's first 8 digits."""
    name = f"{learner}-{dataset}-{way}w{shot}s-seed{seed}-{run_key[:8]}"
    return re.sub(r"[^\w.+-]", "_", name)  # a folder name whatever a plugin calls its learner or dataset


def require_extra(tracker: str) -> None:
    """A one-line :class:`ConfigError` naming the extra to install when ``tracker``'s package cannot be imported."""
    module, requirement = EXTRAS[tracker]
    try:
        __import__(module)
    except ImportError as exc:
        raise ConfigError(f"--tracker {tracker} needs the {tracker} extra ({exc}): python -m pip install "
                          f"'fewshot-bench[{tracker}]' (or '{requirement}')") from None


@dataclass(frozen=True)
class Tracking:
    """A checked tracking destination: TensorBoard run folders under ``log_dir``, or MLflow runs of ``experiment`` at
    ``tracking_uri`` (None: ``$MLFLOW_TRACKING_URI``, else MLflow's default local store)."""

    tracker: str
    log_dir: Path | None = None
    tracking_uri: str | None = None
    experiment: str | None = None

    @classmethod
    def checked(
        cls, tracker: str | None, log_dir: str | Path | None = None, tracking_uri: str | None = None,
        experiment: str | None = None,
    ) -> Tracking | None:
        """The destination the options name (None: no tracking), or a one-line error; imports the backend's
        package (so a missing extra fails here, before any work). ``--log-dir`` alone means TensorBoard."""
        if tracker is None and log_dir is not None:
            tracker = "tensorboard"
        if tracker is None:
            for given, flag in ((tracking_uri, "--tracking-uri"), (experiment, "--experiment")):
                if given is not None:
                    raise ConfigError(f"{flag} is MLflow's: add --tracker mlflow")
            return None
        if tracker not in TRACKERS:
            raise ConfigError(f"--tracker {tracker!r}: choose one of {', '.join(TRACKERS)}")
        if tracker == "tensorboard" and (tracking_uri is not None or experiment is not None):
            raise ConfigError("--tracking-uri and --experiment are MLflow's; TensorBoard writes under --log-dir")
        if tracker == "mlflow" and log_dir is not None:
            raise ConfigError("--log-dir is TensorBoard's; MLflow writes where --tracking-uri (or "
                              "$MLFLOW_TRACKING_URI) says")
        if experiment is not None and not experiment.strip():
            raise ConfigError("--experiment needs a name")
        require_extra(tracker)
        if tracker == "tensorboard":
            folder = Path(log_dir) if log_dir is not None else DEFAULT_LOG_DIR
            if folder.exists() and not folder.is_dir():
                raise ConfigError(f"--log-dir {folder} is a file, not a folder")
            return cls(tracker, log_dir=folder)
        name = experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT
        return cls(tracker, tracking_uri=tracking_uri, experiment=name)

    def check_artifacts(self, paths: Iterable[str | Path]) -> list[Path]:
        """The files to attach, each an existing file TensorBoard or MLflow can show (one-line error otherwise)."""
        files = [Path(p) for p in paths]
        for path in files:
            if not path.is_file():
                raise ConfigError(f"--artifact {path}: no such file")
            if self.tracker == "tensorboard" and path.suffix.lower() != ".png":
                raise ConfigError(f"--artifact {path}: TensorBoard shows PNG figures only (write it with --format png, "
                                  "or use --to mlflow, which keeps any file)")
        return files

    def connect(self) -> Connection:
        """Open the destination: the run folder's parent, or the MLflow tracking store and experiment."""
        return Connection(self)


class Connection:
    """An open tracking destination: which stored runs it shows already, and new tracked runs in it."""

    def __init__(self, tracking: Tracking) -> None:
        self.tracking = tracking
        self._client: Any = None
        self._experiment = ""
        if tracking.tracker == "mlflow":
            try:
                self._client = client(tracking.tracking_uri)
                self._experiment = experiment_id(self._client, str(tracking.experiment))
            except Exception as exc:  # MLflow's own errors: a bad URI, a store it cannot open
                uri = tracking.tracking_uri or "$MLFLOW_TRACKING_URI or MLflow's default"
                raise ConfigError(f"MLflow cannot open tracking URI {uri} ({type(exc).__name__}: "
                                  f"{str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ''})") from None

    @property
    def description(self) -> str:
        """Where runs go, for the terminal."""
        if self._client is None:
            return f"TensorBoard folder {self.tracking.log_dir} (tensorboard --logdir {self.tracking.log_dir})"
        return (f"MLflow experiment {self.tracking.experiment!r} (id {self._experiment}) at "
                f"{self._client.tracking_uri}")

    def logged(self) -> tuple[set[str], set[str]]:
        """(stored run ids, run names) this destination shows already: export skips them."""
        if self._client is not None:
            return logged_run_ids(self._client, self._experiment), set()
        folder = self.tracking.log_dir
        names = {p.name for p in folder.iterdir() if p.is_dir() and any(p.glob("events.out.tfevents.*"))} \
            if folder is not None and folder.is_dir() else set()
        return set(), names

    def open_run(self, name: str, run_key: str) -> RunTracker:
        """A new tracked run named ``name`` (a TensorBoard folder of that name: a resumed run continues its curves)."""
        if self._client is not None:
            return MlflowRun(self._client, self._experiment, name, {RUN_KEY_TAG: run_key})
        assert self.tracking.log_dir is not None
        return TensorBoardRun(self.tracking.log_dir / name)

    def mark_stored(self, tracker: RunTracker, run_id: str) -> None:
        """Name the stored run a tracked run shows (MLflow: a tag, by which export knows it is there)."""
        if isinstance(tracker, MlflowRun):
            tracker.tag(RUN_ID_TAG, run_id)
