"""Image datasets: the Omniglot alphabet split, class-folder layouts, augmentation and bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from helpers import one_line_error
from PIL import Image

from fewshot_bench.data.images import (
    OMNIGLOT_SPLIT,
    ImageSpec,
    augment,
    center_crop,
    detect_layout,
    load_folder,
    load_images,
    load_omniglot,
)
from fewshot_bench.errors import DataError

pytestmark = pytest.mark.usefixtures("one_thread")


def _png(path: Path, value: int = 200, size: int = 12, channels: int = 3) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = torch.full((size, size, channels), value, dtype=torch.uint8)
    img[: size // 2] = 255 - value  # not flat, so decoding is checked beyond a constant
    Image.fromarray(img.numpy()).save(path)


def _class_folders(root: Path, classes: list[str], per_class: int = 3) -> None:
    for c in classes:
        for i in range(per_class):
            _png(root / c / f"{c}_{i}.png", value=10 * i)


def test_omniglot_split_is_alphabet_disjoint_with_reference_class_counts(omniglot):
    data = load_omniglot(omniglot, max_images=1)
    counts = {name: s.num_classes for name, s in data.splits.items()}
    assert counts == {"train": 179, "val": 24, "test": 39}  # REFERENCE.md section 3
    for name, split in data.splits.items():
        alphabets = {c.split("/")[0] for c in split.class_names}
        assert alphabets == set(OMNIGLOT_SPLIT[name])


def test_omniglot_images_are_28px_uint8_with_bright_strokes(omniglot):
    data = load_omniglot(omniglot, splits=["val"], max_classes=2, max_images=3)
    split = data.split("val")
    assert split.images.shape == (6, 1, 28, 28) and split.images.dtype == torch.uint8
    assert split.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert split.files[0].startswith("Greek/character01/") and split.files[0].endswith(".png")
    # Inverted: strokes are bright on a dark background, so the mean is low but not zero.
    assert 5 < split.images.float().mean() < 80


def test_omniglot_accepts_the_parent_folder(omniglot):
    assert detect_layout(omniglot) == "omniglot"
    data = load_images(omniglot, splits=["test"], max_classes=1, max_images=1)
    assert data.split("test").class_names == ["Early_Aramaic/character01"]


def test_folder_layout_with_split_lists(tmp_path):
    _class_folders(tmp_path, ["cat", "dog", "owl", "yak"])
    (tmp_path / "train.txt").write_text("cat\ndog\n")
    (tmp_path / "val.txt").write_text("owl\n")
    (tmp_path / "test.txt").write_text("# comment\nyak\n")
    data = load_images(tmp_path, spec=ImageSpec(channels=3, image_size=8, crop_ratio=0.8, invert=False))
    assert data.layout == "folder"
    assert {k: s.class_names for k, s in data.splits.items()} == {"train": ["cat", "dog"], "val": ["owl"],
                                                                   "test": ["yak"]}
    assert data.split("train").images.shape == (6, 3, 10, 10)  # stored at 8 / 0.8
    assert center_crop(data.split("train").images, data.spec).shape == (6, 3, 8, 8)


def test_folder_layout_with_split_folders_and_bare_class_folders(tmp_path):
    _class_folders(tmp_path / "split" / "train", ["a", "b"])
    _class_folders(tmp_path / "split" / "test", ["c"])
    assert ({k: s.class_names for k, s in load_folder(tmp_path / "split").splits.items()}
            == {"train": ["a", "b"], "test": ["c"]})
    _class_folders(tmp_path / "mine", ["x", "y"])
    assert list(load_folder(tmp_path / "mine").splits) == ["test"]


def test_augment_shifts_each_image_independently():
    spec = ImageSpec(channels=1, image_size=28)
    img = torch.zeros(64, 1, 28, 28, dtype=torch.uint8)
    img[:, :, 13:15, 13:15] = 255  # a dot in the centre
    gen = torch.Generator().manual_seed(0)
    out = augment(img, spec, shift=2, flip=False, generator=gen)
    assert out.shape == (64, 1, 28, 28) and out.dtype == torch.float32 and out.max() == 1.0
    positions = {tuple(torch.nonzero(o[0])[0].tolist()) for o in out}
    assert len(positions) > 5  # different offsets per image
    assert all(11 <= r <= 15 and 11 <= c <= 15 for r, c in positions)  # at most 2 px away
    assert torch.equal(augment(img, spec, 0, False, gen), center_crop(img, spec))


# --- bad input through the CLI: one line, exit 1, nothing written -----------------------------


def _pretrain(cli, data: Path, *extra: str):
    return cli("pretrain", "--backbone", "conv4", "--data-dir", data, "--out", "ck.pt", "--epochs", "1",
               "--set", "width=4", *extra)


def test_empty_class_folder_is_named(cli, tmp_path):
    _class_folders(tmp_path / "d", ["a", "b"])
    (tmp_path / "d" / "c").mkdir()
    (tmp_path / "d" / "train.txt").write_text("a\nb\nc\n")
    r = _pretrain(cli, tmp_path / "d")
    assert r.code == 1 and "holds no images" in r.err and "/c" in r.err and len(r.err.strip().splitlines()) == 1
    assert not (tmp_path / "ck.pt").exists()


def test_missing_class_folder_is_named(cli, tmp_path):
    _class_folders(tmp_path / "d", ["a"])
    (tmp_path / "d" / "train.txt").write_text("a\nnope\n")
    r = _pretrain(cli, tmp_path / "d")
    one_line_error(r, "nope is missing")


def test_corrupt_image_is_named(cli, tmp_path):
    _class_folders(tmp_path / "d" / "train", ["a", "b"])
    (tmp_path / "d" / "train" / "b" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    r = _pretrain(cli, tmp_path / "d")
    assert r.code == 1 and "broken.png" in r.err and len(r.err.strip().splitlines()) == 1
    assert not (tmp_path / "ck.pt").exists()


def test_corrupt_omniglot_image_is_named(cli, tmp_path, omniglot):
    root = tmp_path / "omni"
    for alphabet in OMNIGLOT_SPLIT["train"]:
        shutil.copytree(omniglot / "images_background_small" / alphabet / "character01",
                        root / alphabet / "character01")
    bad = root / "Latin" / "character01" / "zz_bad.png"
    bad.write_bytes(b"garbage")
    r = _pretrain(cli, root, "--images", "omniglot")
    assert r.code == 1 and "zz_bad.png" in r.err


def test_layout_matching_neither_format(cli, tmp_path):
    (tmp_path / "d" / "notes").mkdir(parents=True)
    (tmp_path / "d" / "notes" / "readme.txt").write_text("no images here")
    r = _pretrain(cli, tmp_path / "d")
    assert r.code == 1 and "matches no known image layout" in r.err
    r = _pretrain(cli, tmp_path / "missing")
    assert r.code == 1 and "does not exist" in r.err


def test_omniglot_requested_on_a_class_folder(cli, tmp_path):
    _class_folders(tmp_path / "d" / "train", ["a"])
    r = _pretrain(cli, tmp_path / "d", "--images", "omniglot")
    assert r.code == 1 and "not an Omniglot folder" in r.err


def test_load_classes_rejects_empty_folder_directly(tmp_path):
    (tmp_path / "train" / "a").mkdir(parents=True)
    with pytest.raises(DataError, match="holds no images"):
        load_folder(tmp_path)
