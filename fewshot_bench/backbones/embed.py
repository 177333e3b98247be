"""Feature export (paper appendix B.2): a pretrained backbone's features for every split.

The network runs in eval mode (dropout off, batch-norm running statistics) on the centre
crop of each image. Each split is written through :func:`fewshot_bench.data.leo.write_embeddings`
as ``<out>/<split>_embeddings.npz`` (or ``.pkl``) -- the LEO layout -- so
``fewshot-bench run --dataset features --data-dir <out>`` meta-learns on it.

Keys follow LEO's ``<number>-<class>-<image file>``: the row number, the class name
(Omniglot: ``<Alphabet>/<characterNN>``) and ``<class>_<image file name>``, so the file
field names the image's path with its last ``/`` written ``_``
(``0-Korean/character01-Korean/character01_0643_01.png``). ``-`` separates the fields, so
inside them ``%`` is written ``%25`` and ``-`` is written ``%2D`` (:func:`encode_field`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from fewshot_bench.atomic import write_text
from fewshot_bench.backbones.base import embed
from fewshot_bench.backbones.checkpoint import load_checkpoint, model_from_checkpoint
from fewshot_bench.data.images import ImageDataset, ImageSpec, ImageSplit, center_crop, load_images
from fewshot_bench.errors import ConfigError, DataError

CPU = torch.device("cpu")
FORMATS = ("npz", "pkl")
MANIFEST = "embeddings.json"


def encode_field(text: str) -> str:
    """Escape a key field so it holds no ``-`` (the key separator); reversible with :func:`decode_field`."""
    return text.replace("%", "%25").replace("-", "%2D")


def decode_field(text: str) -> str:
    """Inverse of :func:`encode_field`."""
    return text.replace("%2D", "-").replace("%25", "%")


def make_keys(split: ImageSplit) -> list[str]:
    """``<row>-<class>-<class>_<image name>`` for every image of the split.

    As in LEO's keys the file field starts with ``<class>_`` (the loader checks this); an
    image name that already starts so (``n02747177_4367.JPEG``) is kept as it is.
    """
    keys = []
    for i, (c, f) in enumerate(zip(split.labels.tolist(), split.files)):
        cls = encode_field(split.class_names[int(c)])
        name = encode_field(f.rsplit("/", 1)[-1])
        keys.append(f"{i}-{cls}-{name if name.startswith(cls + '_') else f'{cls}_{name}'}")
    return keys


@torch.no_grad()
def embed_split(model: nn.Module, split: ImageSplit, spec: ImageSpec, batch_size: int = 256,
                device: torch.device = CPU, progress: bool = False) -> np.ndarray:
    """Features ``[n, D]`` (float32) of a split's centre crops, in eval mode."""
    model.eval().to(device)
    out = []
    starts = range(0, len(split), batch_size)
    for s in tqdm(starts, desc=f"embed {split.name}", disable=not progress, leave=False):
        x = center_crop(split.images[s : s + batch_size], spec).to(device)
        out.append(embed(model, x).float().cpu())
    return torch.cat(out).numpy().astype(np.float32, copy=False)


def existing_features(out: Path) -> list[Path]:
    """Feature files already in ``out`` (``*_embeddings.npz`` / ``.pkl``)."""
    if not out.is_dir():
        return []
    return sorted(p for fmt in FORMATS for p in out.glob(f"*_embeddings.{fmt}"))


def export_features(
    checkpoint: Path,
    factory_for: Callable[[str], Callable[..., nn.Module]],
    data_dir: Path,
    out: Path,
    layout: str = "auto",
    splits: Iterable[str] | None = None,
    backbone: str | None = None,
    fmt: str = "npz",
    overwrite: bool = False,
    batch_size: int = 256,
    device: torch.device = CPU,
    max_classes: int | None = None,
    max_images: int | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Embed every split of the images under ``data_dir`` with a checkpoint; returns the manifest.

    Everything is computed before anything is written, and each file is replaced atomically,
    so a bad image or checkpoint leaves ``out`` untouched. Existing features in ``out`` are
    refused unless ``overwrite``.
    """
    from fewshot_bench.data.leo import write_embeddings

    if fmt not in FORMATS:
        raise ConfigError(f"unknown feature format {fmt!r}; use {' or '.join(FORMATS)}")
    present = existing_features(out)
    if present and not overwrite:
        raise DataError(f"{out} already holds features ({present[0].name}); pass --overwrite or choose another --out")
    ckpt = load_checkpoint(checkpoint, backbone=backbone)
    model = model_from_checkpoint(ckpt, factory_for(ckpt["backbone"]), checkpoint)
    spec = ImageSpec(**ckpt["image"])
    data: ImageDataset = load_images(data_dir, layout, spec, list(splits) if splits else None,
                                     max_classes, max_images, progress)
    results = {}
    for name, split in data.splits.items():
        results[name] = (embed_split(model, split, spec, batch_size, device, progress), split)

    out.mkdir(parents=True, exist_ok=True)
    for stale in present:  # only reached with overwrite: drop files of the other format too
        stale.unlink()
    manifest: dict[str, Any] = {
        "checkpoint": str(checkpoint),
        "backbone": ckpt["backbone"],
        "options": ckpt["options"],
        "pretrain_epochs": ckpt["epoch"],
        "image": ckpt["image"],
        "layout": data.layout,
        "images": str(data.root),
        "key_format": "<row>-<class>-<class>_<image name>; in fields '-' is written %2D and '%' %25",
        "splits": {},
    }
    for name, (features, split) in results.items():
        path = out / f"{name}_embeddings.{fmt}"
        write_embeddings(path, features, split.labels.numpy().astype(np.int64), make_keys(split))
        manifest["splits"][name] = {
            "file": path.name,
            "rows": int(features.shape[0]),
            "classes": split.num_classes,
            "feature_dim": int(features.shape[1]),
        }
    write_text(out / MANIFEST, json.dumps(manifest, indent=2, default=str), "features manifest")
    return manifest
