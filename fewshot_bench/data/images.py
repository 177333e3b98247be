"""Image datasets for backbone pretraining and feature export: Omniglot and class folders.

Two on-disk layouts are understood:

* **omniglot** -- the Omniglot authors' own layout ``<Alphabet>/<characterNN>/<id>_<drawer>.png``
  (the folder holding the alphabets, or a folder holding ``images_background_small`` /
  ``images_background``). Split by alphabet as fixed in REFERENCE.md section 3.
* **folder** -- class folders ``<root>/<class>/<image>`` with split lists
  ``<root>/{train,val,test}.txt`` (one class folder name per line), or split folders
  ``<root>/{train,val,test}/<class>/<image>``. A root of bare class folders and no split
  lists is one split (for embedding a user's own images).

Images are decoded once (Pillow, then torchvision transforms) and kept in memory as one
``uint8`` tensor per split (Omniglot at 28x28 is a few MB), resized so that a centre crop
of ``crop_ratio`` gives ``image_size`` pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Literal, Sequence

import torch
from torch import Tensor
from tqdm import tqdm

from fewshot_bench.errors import ConfigError, DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
SPLIT_NAMES = ("train", "val", "test")

# REFERENCE.md section 3: the fixed alphabet-disjoint Omniglot split of fewshot-bench.
OMNIGLOT_SPLIT: dict[str, tuple[str, ...]] = {
    "train": ("Korean", "Japanese_(katakana)", "Sanskrit", "Latin", "Balinese"),
    "val": ("Greek",),
    "test": ("Early_Aramaic", "Tagalog"),
}
OMNIGLOT_SUBFOLDERS = ("images_background_small", "images_background")

Layout = Literal["auto", "omniglot", "folder"]


@dataclass
class ImageSpec:
    """How images are decoded and sized: channels, network input size, centre-crop ratio."""

    channels: int = 1
    image_size: int = 28
    crop_ratio: float = 1.0  # fraction of the stored image a centre crop keeps (paper: 0.8595)
    invert: bool = True  # Omniglot strokes are black on white; the network sees strokes = 1

    @property
    def load_size(self) -> int:
        """Side of the stored square image, so that the centre crop is ``image_size``."""
        return int(math.ceil(self.image_size / self.crop_ratio))

    @classmethod
    def for_layout(cls, layout: str, **overrides) -> ImageSpec:
        """Defaults for a layout: 28x28 1-channel Omniglot; 84x84 RGB, 0.8595 crop for folders."""
        base = cls() if layout == "omniglot" else cls(channels=3, image_size=84, crop_ratio=0.8595, invert=False)
        for k, v in overrides.items():
            if v is not None:
                setattr(base, k, v)
        return base


@dataclass
class ImageSplit:
    """One split in memory: ``images[i]`` (uint8 [C, S, S]) of class ``labels[i]``."""

    name: str
    images: Tensor  # [n, C, S, S] uint8
    labels: Tensor  # [n] int64, class index within this split
    class_names: list[str]
    files: list[str]  # each image's path relative to the dataset root

    @property
    def num_classes(self) -> int:
        """Number of classes in the split."""
        return len(self.class_names)

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass
class ImageDataset:
    """An image dataset: its layout, root, image spec and splits."""

    name: str
    layout: str
    root: Path
    spec: ImageSpec
    splits: dict[str, ImageSplit] = field(default_factory=dict)

    def split(self, name: str) -> ImageSplit:
        """The split ``name`` or an error listing those present."""
        if name not in self.splits:
            raise DataError(f"image dataset at {self.root} has no split {name!r} (it has {', '.join(self.splits)})")
        return self.splits[name]


# --- layout detection -----------------------------------------------------------------------


def _subdirs(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def omniglot_root(root: Path) -> Path | None:
    """The folder holding the Omniglot alphabets under ``root``, or None if it is not Omniglot."""
    for candidate in (root, *(root / s for s in OMNIGLOT_SUBFOLDERS)):
        if candidate.is_dir() and any((candidate / a).is_dir() for split in OMNIGLOT_SPLIT.values() for a in split):
            return candidate
    return None


def _folder_splits(root: Path) -> dict[str, list[Path]] | None:
    """Class folders per split for the class-folder layout, or None when ``root`` is not one."""
    lists = {s: root / f"{s}.txt" for s in SPLIT_NAMES}
    if any(p.is_file() for p in lists.values()):
        out = {}
        for split, path in lists.items():
            if not path.is_file():
                continue
            names = [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
            if not names:
                raise DataError(f"split list {path} names no classes; put one class folder name per line")
            out[split] = [root / n for n in names]
        return out
    if any((root / s).is_dir() for s in SPLIT_NAMES):
        return {s: _subdirs(root / s) for s in SPLIT_NAMES if (root / s).is_dir()}
    classes = [d for d in _subdirs(root) if _image_files(d)]
    return {"test": _subdirs(root)} if classes else None


def detect_layout(root: Path) -> str:
    """``omniglot`` or ``folder`` for the images under ``root``; an error if it is neither."""
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist; pass --data-dir pointing at your images")
    if omniglot_root(root) is not None:
        return "omniglot"
    if _folder_splits(root) is not None:
        return "folder"
    raise DataError(
        f"{root} matches no known image layout: expected Omniglot alphabets (<Alphabet>/<character>/<png>), "
        "class folders with split lists train.txt/val.txt/test.txt, split folders train/val/test/<class>/, "
        "or class folders of images"
    )


# --- decoding ---------------------------------------------------------------------------------


def _vision():
    """torchvision's functional transforms and Pillow's Image, or an error saying how to install them."""
    try:
        from PIL import Image
        from torchvision.transforms.v2 import functional
    except ImportError as exc:  # optional dependencies: the feature-only harness does not need them
        raise ConfigError(f"image support needs torchvision and Pillow ({exc}); "
                          "python -m pip install 'torchvision>=0.16' 'pillow>=9'") from None
    return functional, Image


def decode(path: Path, spec: ImageSpec) -> Tensor:
    """One image file as uint8 [C, S, S] (S = ``spec.load_size``); a DataError naming a bad file.

    Pillow decodes (torchvision's own decoders are deprecated since 0.29 in favour of
    TorchCodec, which is not a dependency); torchvision converts, resizes and crops.
    """
    F, Image = _vision()
    try:
        with Image.open(path) as im:
            im = im.convert("L" if spec.channels == 1 else "RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        reason = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise DataError(f"cannot decode image {path}: {reason}; remove or replace the file") from None
    img = F.pil_to_tensor(im)
    if spec.invert:
        img = 255 - img
    # Antialiased resize of the short side, then a square centre crop of the stored size.
    img = F.resize(img, [spec.load_size], antialias=True)
    return F.center_crop(img, [spec.load_size, spec.load_size]).contiguous()


def load_classes(
    name: str,
    root: Path,
    class_dirs: Sequence[Path],
    class_names: Sequence[str],
    spec: ImageSpec,
    max_images: int | None = None,
    progress: bool = False,
) -> ImageSplit:
    """Decode every image of the given class folders into one in-memory split."""
    files: list[Path] = []
    labels: list[int] = []
    for label, folder in enumerate(class_dirs):
        if not folder.is_dir():
            raise DataError(f"class folder {folder} is missing (split {name!r}); fix the split list or the folder")
        imgs = _image_files(folder)[:max_images]
        if not imgs:
            raise DataError(f"class folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)}); "
                            "add images or remove it")
        files += imgs
        labels += [label] * len(imgs)
    if not files:
        raise DataError(f"split {name!r} under {root} has no classes")
    images = torch.empty(len(files), spec.channels, spec.load_size, spec.load_size, dtype=torch.uint8)
    for i, f in enumerate(tqdm(files, desc=f"decode {name}", disable=not progress, leave=False)):
        images[i] = decode(f, spec)
    return ImageSplit(
        name=name,
        images=images,
        labels=torch.tensor(labels, dtype=torch.int64),
        class_names=list(class_names),
        files=[f.relative_to(root).as_posix() for f in files],
    )


# --- the two layouts ------------------------------------------------------------------------


def _take(items: list, limit: int | None) -> list:
    return items if limit is None else items[:limit]


def load_omniglot(
    root: Path,
    spec: ImageSpec | None = None,
    splits: Iterable[str] = SPLIT_NAMES,
    max_classes: int | None = None,
    max_images: int | None = None,
    progress: bool = False,
) -> ImageDataset:
    """Omniglot with the fixed alphabet split; class names are ``<Alphabet>/<character>``.

    ``max_classes`` (per split) and ``max_images`` (per class) take the first ones in name
    order, for quick tests.
    """
    spec = spec or ImageSpec.for_layout("omniglot")
    base = omniglot_root(root)
    if base is None:
        raise DataError(f"{root} is not an Omniglot folder: "
                        f"none of the alphabets {', '.join(OMNIGLOT_SPLIT['train'])} ... found")
    ds = ImageDataset("omniglot", "omniglot", base, spec)
    for split in splits:
        class_dirs = []
        for alphabet in OMNIGLOT_SPLIT[split]:
            folder = base / alphabet
            if not folder.is_dir():
                raise DataError(f"Omniglot alphabet folder {folder} is missing (needed for split {split!r})")
            chars = _subdirs(folder)
            if not chars:
                raise DataError(f"Omniglot alphabet folder {folder} holds no character folders")
            class_dirs += chars
        class_dirs = _take(class_dirs, max_classes)
        names = [d.relative_to(base).as_posix() for d in class_dirs]
        ds.splits[split] = load_classes(split, base, class_dirs, names, spec, max_images, progress)
    return ds


def load_folder(
    root: Path,
    spec: ImageSpec | None = None,
    splits: Iterable[str] | None = None,
    max_classes: int | None = None,
    max_images: int | None = None,
    progress: bool = False,
) -> ImageDataset:
    """Class folders with split lists or split folders (or bare class folders: one ``test`` split)."""
    spec = spec or ImageSpec.for_layout("folder")
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist")
    found = _folder_splits(root)
    if found is None:
        detect_layout(root)  # raises the layout error
        raise DataError(f"{root} is not a class-folder layout")
    ds = ImageDataset(root.name, "folder", root, spec)
    for split in splits or found:
        if split not in found:
            raise DataError(f"{root} has no split {split!r} (it has {', '.join(found)}); add {split}.txt or {split}/")
        class_dirs = _take(found[split], max_classes)
        names = [d.name for d in class_dirs]
        ds.splits[split] = load_classes(split, root, class_dirs, names, spec, max_images, progress)
    return ds


def load_images(
    root: Path,
    layout: str = "auto",
    spec: ImageSpec | None = None,
    splits: Iterable[str] | None = None,
    max_classes: int | None = None,
    max_images: int | None = None,
    progress: bool = False,
) -> ImageDataset:
    """Load an image dataset in either layout (``auto`` detects it)."""
    root = Path(root)
    if layout == "auto":
        layout = detect_layout(root)
    if layout == "omniglot":
        return load_omniglot(root, spec, splits or SPLIT_NAMES, max_classes, max_images, progress)
    if layout == "folder":
        return load_folder(root, spec, splits, max_classes, max_images, progress)
    raise DataError(f"unknown image layout {layout!r}; use omniglot, folder or auto")


# --- tensors the network sees -------------------------------------------------------------


def center_crop(images: Tensor, spec: ImageSpec) -> Tensor:
    """Evaluation view: the centre ``image_size`` crop as float in [0, 1]."""
    F, _ = _vision()
    out = F.center_crop(images, [spec.image_size, spec.image_size])
    return out.to(torch.float32).div_(255.0)


def augment(images: Tensor, spec: ImageSpec, shift: int, flip: bool, generator: torch.Generator) -> Tensor:
    """Training view: a random ``image_size`` crop per image (plus up to ``shift`` px of zero
    padding each side) and optional random horizontal flips, as float in [0, 1].

    torchvision's random transforms draw one set of parameters per call, i.e. the same crop
    for a whole batch; per-image offsets are gathered here in one indexing op instead.
    """
    b, _, s, _ = images.shape
    size = spec.image_size
    padded = torch.nn.functional.pad(images, (shift, shift, shift, shift)) if shift else images
    span = s + 2 * shift - size + 1
    oy = torch.randint(0, span, (b,), generator=generator)
    ox = torch.randint(0, span, (b,), generator=generator)
    ar = torch.arange(size)
    iy = (oy[:, None] + ar)[:, :, None]  # [b, size, 1]
    ix = (ox[:, None] + ar)[:, None, :]  # [b, 1, size]
    out = padded.permute(0, 2, 3, 1)[torch.arange(b)[:, None, None], iy, ix]  # [b, size, size, C]
    out = out.permute(0, 3, 1, 2)
    if flip:
        mask = torch.rand(b, generator=generator) < 0.5
        out = torch.where(mask[:, None, None, None], out.flip(-1), out)
    return out.to(torch.float32).div_(255.0)
