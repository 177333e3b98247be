"""Writing a figure: PNG, PDF or SVG, with its provenance drawn under it and stored in the file's metadata.

A figure sent to a co-author must say where it came from without the terminal that drew it:
the learner(s), dataset, way/shot, steps or budget, preset, seeds and run ids go into a short
caption line at the bottom of the figure, and the same text into the file's metadata
(PNG text chunks, the PDF info dictionary, SVG's Dublin Core block), where
:func:`read_metadata` and ordinary tools (``exiftool``, ``pdfinfo``) find it.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fewshot_bench import atomic
from fewshot_bench.errors import ConfigError
from fewshot_bench.records.store import RunRecord

FORMATS = ("png", "pdf", "svg")
CREATOR = "fewshot-bench"


@dataclass(frozen=True)
class Provenance:
    """What a figure was drawn from: its runs, and the protocol they share."""

    learners: tuple[str, ...]
    dataset: str
    way: int | None
    shot: int | None
    steps: str  # e.g. "1,000 steps" or "1,000 steps (stopped early at 400)"
    preset: str
    seeds: tuple[int, ...]
    run_ids: tuple[str, ...]
    protocol: str = ""  # the shared protocol's short id
    extra: tuple[str, ...] = field(default_factory=tuple)  # figure-specific items, e.g. "1,000 test episodes"

    @classmethod
    def of(cls, records: Iterable[RunRecord], protocol: str = "", extra: Iterable[str] = ()) -> Provenance:
        """The provenance of a figure drawn from ``records`` (one shared protocol, as every figure uses)."""
        runs = list(records)
        if not runs:
            raise ValueError("a figure's provenance needs at least one run")
        first = runs[0]
        steps = sorted({r.options.get("steps") for r in runs if r.options.get("steps") is not None})
        steps_text = "/".join(f"{s:,}" for s in steps) + " steps" if steps else "no meta-training"
        early = sorted({r.summary.get("train", {}).get("steps") for r in runs
                        if r.summary.get("train", {}).get("stopped_early")} - {None})
        if early:
            steps_text += f" (stopped early at {'/'.join(f'{s:,}' for s in early)})"
        return cls(
            learners=tuple(dict.fromkeys(r.learner for r in runs)),
            dataset="/".join(dict.fromkeys(r.dataset for r in runs)),
            # A regression run's "way" is 1: no classes to name, so not said.
            way=first.way if len({r.way for r in runs}) == 1 and first.way > 1 else None,
            shot=first.shot if len({r.shot for r in runs}) == 1 else None,
            steps=steps_text,
            preset=first.options.get("hparams") or "default",
            seeds=tuple(sorted({r.seed for r in runs})),
            run_ids=tuple(r.run_id for r in runs),
            protocol=protocol,
            extra=tuple(extra),
        )

    def caption(self, max_ids: int | None = None) -> str:
        """One line: ``leo, metasgd | synthetic 5-way 1-shot | 1,000 steps | preset default | seeds 0 | runs ...``;
        with ``max_ids``, more run ids than that are counted, not listed (the metadata keeps them all)."""
        setting = self.dataset
        if self.way is not None:
            setting += f" {self.way}-way"
        if self.shot is not None:
            setting += f" {self.shot}-shot"
        seeds = ",".join(map(str, self.seeds))
        parts = [", ".join(self.learners), setting, self.steps, f"preset {self.preset}",
                 f"seed{'s' if len(self.seeds) != 1 else ''} {seeds}", *self.extra]
        if self.protocol:
            parts.append(f"protocol {self.protocol}")
        ids = self.run_ids
        listed = " ".join(ids if max_ids is None or len(ids) <= max_ids else ids[:max_ids])
        more = f" and {len(ids) - max_ids} more (all in the file's metadata)" if len(ids) > len(listed.split()) else ""
        parts.append(f"run{'s' if len(ids) != 1 else ''} {listed}{more}")
        return " | ".join(parts)


def figure_format(out: Path, fmt: str | None = None) -> str:
    """The format to write ``out`` in: ``fmt`` if given (it must match a suffix that names one), else the suffix's;
    a one-line error for anything but png, pdf or svg."""
    suffix = out.suffix.lower().lstrip(".")
    if fmt is not None and fmt not in FORMATS:
        raise ConfigError(f"--format {fmt} is not one of {', '.join(FORMATS)}")
    if fmt is None and suffix not in FORMATS:
        raise ConfigError(f"{out} must end in {', '.join('.' + f for f in FORMATS)} (or give --format)")
    if fmt is not None and suffix in FORMATS and suffix != fmt:
        raise ConfigError(f"{out} ends in .{suffix} but --format is {fmt}")
    return fmt or suffix


def with_format(out: Path, fmt: str | None) -> Path:
    """``out`` with the suffix of ``fmt`` when it has none of the figure formats (``fig`` and pdf: ``fig.pdf``)."""
    if fmt is not None and out.suffix.lower().lstrip(".") not in FORMATS:
        return out.with_name(out.name + "." + fmt)
    return out


def metadata(fmt: str, title: str, caption: str) -> dict[str, Any]:
    """The savefig ``metadata`` of ``fmt`` carrying ``title`` and the provenance ``caption``.

    Each backend accepts its own keys: PNG any text chunk, PDF the info dictionary's (Subject,
    Keywords), SVG Dublin Core's (Description).
    """
    if fmt == "png":
        return {"Title": title, "Description": caption, "Software": CREATOR}
    if fmt == "pdf":
        return {"Title": title, "Subject": caption, "Creator": CREATOR}
    return {"Title": title, "Description": caption, "Creator": CREATOR}


def add_caption(fig: Any, caption: str, width: int = 0) -> None:
    """Draw ``caption`` in small grey type along the bottom of ``fig`` (wrapped to the figure's width)."""
    chars = width or max(60, int(fig.get_figwidth() * 15))  # about 15 characters of 7-point type per inch
    text = "\n".join(textwrap.wrap(caption, chars))
    fig.text(0.005, 0.0, text, ha="left", va="top", fontsize=7, color="#555555", wrap=False)


DRAWN_IDS = 8  # run ids a drawn caption lists; a table of 100 runs would otherwise be all caption


def save(fig: Any, out: Path, title: str, caption: str | Provenance, fmt: str | None = None, dpi: int = 110) -> Path:
    """Write ``fig`` to ``out`` (atomically) with ``caption`` drawn under it and both in the metadata, and close
    it. The format is ``fmt`` or the suffix's."""
    import matplotlib.pyplot as plt

    out = Path(out)
    drawn = caption.caption(DRAWN_IDS) if isinstance(caption, Provenance) else caption
    caption = caption.caption() if isinstance(caption, Provenance) else caption
    try:
        kind = figure_format(out, fmt)
        add_caption(fig, drawn)
        return atomic.save_figure(fig, out, format=kind, dpi=dpi, bbox_inches="tight",
                                  metadata=metadata(kind, title, caption))
    finally:
        plt.close(fig)


def read_metadata(path: Path) -> dict[str, str]:
    """The title and provenance caption stored in a figure file written by :func:`save` (empty when none)."""
    path = Path(path)
    data = path.read_bytes()
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        from PIL import Image

        with Image.open(path) as image:
            info = dict(image.text)  # type: ignore[attr-defined]
        return {k: v for k, v in (("title", info.get("Title")), ("caption", info.get("Description"))) if v}
    if data[:5] == b"%PDF-":
        return _pdf_metadata(data)
    return _svg_metadata(data.decode("utf-8", errors="replace"))


def _svg_metadata(text: str) -> dict[str, str]:
    """Title and description from an SVG's Dublin Core metadata."""
    import xml.etree.ElementTree as ET

    ns = {"dc": "http://purl.org/dc/elements/1.1/"}
    try:
        root = ET.fromstring(text)
    except ET.ParseError:
        return {}
    found = {"title": root.find(".//dc:title", ns), "caption": root.find(".//dc:description", ns)}
    return {k: e.text for k, e in found.items() if e is not None and e.text}


def _pdf_metadata(data: bytes) -> dict[str, str]:
    """Title and subject from a PDF info dictionary as matplotlib writes it (literal strings, uncompressed)."""
    import re

    out = {}
    for key, name in (("title", b"Title"), ("caption", b"Subject")):
        m = re.search(rb"/" + name + rb" \((.*?)(?<!\\)\)", data, re.S)
        if m:
            raw = re.sub(rb"\\(.)", rb"\1", m.group(1))
            out[key] = raw.decode("latin-1")
        else:
            m = re.search(rb"/" + name + rb" <(?:FEFF|feff)([0-9A-Fa-f]*)>", data)
            if m:
                out[key] = bytes.fromhex(m.group(1)).decode("utf-16-be")
    return out
