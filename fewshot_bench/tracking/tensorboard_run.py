"""A tracked run as a TensorBoard run: one folder of event files, written with torch's ``SummaryWriter``."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from fewshot_bench.tracking.run_tracker import RunTracker, Scalar

# Tags of the final numbers, shown beside the parameters in TensorBoard's HPARAMS tab.
RESULT_PREFIXES = ("test/", "val/best_")


def markdown_table(values: Mapping[str, Scalar]) -> str:
    """Parameters as a two-column Markdown table (TensorBoard's TEXT tab renders it)."""
    rows = "\n".join(f"| {name} | {str(value).replace('|', '/')} |" for name, value in sorted(values.items()))
    return f"| parameter | value |\n|---|---|\n{rows}"


class TensorBoardRun(RunTracker):
    """Scalars, parameters (TEXT and HPARAMS tabs) and PNG figures (IMAGES tab) in ``folder``'s event files."""

    def __init__(self, folder: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package: checked by the caller

        self.folder = folder
        self.where = f"TensorBoard run {folder} (tensorboard --logdir {folder.parent})"
        self.writer = SummaryWriter(log_dir=str(folder))
        self._params: dict[str, Scalar] = {}
        self._results: set[str] = set()
        self._param_writes = 0

    def params(self, values: Mapping[str, Scalar]) -> None:
        """Add to the parameters; the TEXT tab's ``params`` table is rewritten whole at the next step."""
        self._params.update(values)
        self.writer.add_text("params", markdown_table(self._params), global_step=self._param_writes)
        self._param_writes += 1

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        """One scalar event per value, tagged by its name."""
        for name, value in values.items():
            self.writer.add_scalar(name, value, global_step=step)
            if name.startswith(RESULT_PREFIXES):
                self._results.add(name)

    def artifact(self, path: Path) -> None:
        """A PNG figure as an image named after its file (other formats are refused before any run is opened)."""
        from matplotlib.image import imread

        pixels = imread(path)
        self.writer.add_image(f"figures/{path.name}", pixels[..., :3], dataformats="HWC")

    def flush(self) -> None:
        """Write the buffered events to the file now."""
        self.writer.flush()

    def close(self, failed: bool = False) -> None:
        """Write the HPARAMS summary (parameters beside the final numbers), then close the event file."""
        from torch.utils.tensorboard.summary import hparams

        if self._params:
            # Written into this run's own file (SummaryWriter.add_hparams would start another run folder).
            for summary in hparams(self._params, {name: 0.0 for name in sorted(self._results)}):
                self.writer.file_writer.add_summary(summary)
        if failed:
            self.writer.add_text("status", "failed")
        self.writer.close()
