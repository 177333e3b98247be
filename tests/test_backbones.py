"""Backbones end to end on real Omniglot images: pretrain, resume, export, load back, meta-test.

Tiny networks (4-16 channels) on a few classes keep every test to seconds.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import OMNIGLOT, OMNIGLOT_SKIP

from fewshot_bench.api.hooks import hookimpl
from fewshot_bench.backbones.checkpoint import backbone_options
from fewshot_bench.backbones.embed import decode_field, encode_field
from fewshot_bench.cli import main
from fewshot_bench.data.leo import read_embeddings
from fewshot_bench.errors import ConfigError
from fewshot_bench.plugin_host import load_plugins

TINY = ("--set", "width=16", "--max-classes", "8", "--max-images", "10")



pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A tiny conv4 pretrained for 6 epochs on 8 train classes x 10 drawings (made once per module)."""
    if OMNIGLOT is None:
        pytest.skip(OMNIGLOT_SKIP)
    path = tmp_path_factory.mktemp("pretrained") / "c4.pt"
    code = main(["-q", "pretrain", "--backbone", "conv4", "--data-dir", str(OMNIGLOT), "--out", str(path),
                 "--epochs", "6", "--batch-size", "16", *TINY])
    assert code == 0
    return path


# --- the registry and the networks ------------------------------------------------------------


@pytest.mark.parametrize(
    "name, options, dim",
    [("conv4", {"width": 8}, 8), ("resnet12", {"widths": (4, 8, 8, 12)}, 12),
     ("wrn-28-10", {"depth": 16, "widen": 1}, 64)],
)
def test_registered_backbones_map_images_to_features(host, name, options, dim):
    model = host.backbone(name)(in_channels=1, **options).eval()
    x = torch.rand(3, 1, 28, 28)
    assert model.feature_dim == dim and model(x).shape == (3, dim)
    assert host.backbones[name].plugin.distribution == "fewshot-bench"


def test_wrn_exports_relu_pooled_block2_of_stage3_and_has_dropout_in_blocks(host):
    torch.manual_seed(0)
    wrn = host.backbone("wrn-28-10")(in_channels=1, depth=22, widen=2, dropout=0.5)
    assert len(wrn.stage3) == 3 and wrn.export_block == 2
    assert any(isinstance(m, torch.nn.Dropout) and m.p == 0.5 for m in wrn.stage3[0].modules())
    wrn.eval()
    x = torch.rand(4, 1, 28, 28)
    h = wrn.stage3[:2](wrn.stage2(wrn.stage1(wrn.stem(x))))
    expected = torch.relu(h).mean(dim=(2, 3))
    feats = wrn.embed(x)
    assert feats.shape == (4, 128) and torch.allclose(feats, expected, atol=1e-6)
    assert (feats >= 0).all()
    assert not torch.allclose(wrn(x), feats)  # the classifier reads all blocks, not layer 21
    assert torch.equal(wrn.embed(x), feats)  # eval mode: dropout off, deterministic


def test_full_size_wrn_28_10_has_640_dim_layer_21_features(host):
    wrn = host.backbone("wrn-28-10")(in_channels=3)
    assert (len(wrn.stage3), wrn.export_block, wrn.feature_dim) == (4, 2, 640)


def test_wrn_rejects_impossible_depth(host):
    with pytest.raises(ConfigError, match="6n \\+ 4"):
        host.backbone("wrn-28-10")(depth=12)


def test_backbones_command_lists_builtins_with_options(cli):
    r = cli("backbones", "--json")
    rows = {row["backbone"]: row for row in r.json()["backbones"]}
    assert r.code == 0 and {"conv4", "resnet12", "wrn-28-10"} <= set(rows)
    assert "widen=10" in rows["wrn-28-10"]["options (--set)"]


def test_a_third_party_backbone_registers_through_the_hook():
    class Tiny(torch.nn.Module):
        feature_dim = 3

        def __init__(self, in_channels: int = 1, scale: float = 1.0) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(in_channels, 3)

        def forward(self, x):
            return self.lin(x.mean(dim=(2, 3)))

    class Plugin:
        @hookimpl
        def fewshot_bench_register_backbones(self, register):
            register("tiny", Tiny)
            register("conv4", Tiny)  # a duplicate of a built-in is refused, not swapped in

    host = load_plugins(extra=[("my-plugin", Plugin())])
    assert host.backbone("tiny") is Tiny and host.backbone("conv4") is not Tiny
    assert any("duplicate backbone name 'conv4'" in f.error for f in host.failures)
    assert backbone_options(Tiny) == {"scale": 1.0}


def test_a_second_pretraining_on_the_same_checkpoint_is_refused(cli, omniglot, tmp_path):
    (tmp_path / "c.pt.lock").write_text(str(os.getpid()))  # a live process holds it
    r = cli("pretrain", "--backbone", "conv4", "--data-dir", omniglot, "--out", tmp_path / "c.pt", "--epochs", "1",
            *TINY)
    assert r.code == 1 and "another pretraining process" in r.err and not (tmp_path / "c.pt").exists()
    (tmp_path / "c.pt.lock").write_text("999999999")  # stale: no such process
    assert cli("pretrain", "--backbone", "conv4", "--data-dir", omniglot, "--out", tmp_path / "c.pt", "--epochs", "1",
               *TINY).code == 0
    assert not (tmp_path / "c.pt.lock").exists()


def test_key_fields_escape_the_separator():
    name = "my-class%2D"
    assert "-" not in encode_field(name) and decode_field(encode_field(name)) == name


# --- pretraining --------------------------------------------------------------------------------


def test_pretraining_lowers_the_training_loss(cli, omniglot, checkpoint):
    ck = torch.load(checkpoint, weights_only=True)
    losses = [h["loss"] for h in ck["history"]]
    assert ck["epoch"] == 6 and len(losses) == 6
    assert losses[-1] < 0.8 * losses[0] and min(losses[3:]) < min(losses[:3]), losses
    assert ck["classes"][0].startswith(("Korean/", "Japanese_(katakana)/", "Sanskrit/", "Latin/", "Balinese/"))


def test_unknown_setting_is_one_line(cli, omniglot):
    r = cli("pretrain", "--backbone", "conv4", "--data-dir", omniglot, "--set", "widht=3")
    assert r.code == 1 and "unknown setting 'widht'" in r.err and "width" in r.err
    r = cli("pretrain", "--backbone", "nope", "--data-dir", omniglot)
    assert r.code == 1 and "unknown backbone" in r.err


@pytest.mark.equivalence
def test_resume_after_interruption_matches_an_uninterrupted_run(cli, omniglot, tmp_path, monkeypatch):
    args = ("pretrain", "--backbone", "conv4", "--data-dir", omniglot, "--epochs", "3", "--batch-size", "20", *TINY)
    assert cli(*args, "--out", tmp_path / "straight.pt").code == 0

    real_step = torch.optim.SGD.step
    calls = {"n": 0}

    def interrupted_step(self, *a, **k):  # Ctrl-C during epoch 2 (4 steps per epoch)
        calls["n"] += 1
        if calls["n"] == 6:
            raise KeyboardInterrupt
        return real_step(self, *a, **k)

    monkeypatch.setattr(torch.optim.SGD, "step", interrupted_step)
    r = cli(*args, "--out", tmp_path / "resumed.pt")
    assert r.code == 130 and "resume" in r.err
    assert torch.load(tmp_path / "resumed.pt", weights_only=True)["epoch"] == 1  # the last whole epoch
    monkeypatch.setattr(torch.optim.SGD, "step", real_step)

    r = cli(*args, "--out", tmp_path / "resumed.pt", "--json")
    assert r.code == 0 and r.json()["epochs"] == 3
    a = torch.load(tmp_path / "straight.pt", weights_only=True)
    b = torch.load(tmp_path / "resumed.pt", weights_only=True)
    assert [h["loss"] for h in a["history"]] == pytest.approx([h["loss"] for h in b["history"]])
    for k, v in a["model"].items():
        assert torch.allclose(v.float(), b["model"][k].float(), atol=1e-6), k


def test_resume_refuses_other_settings_and_other_backbones(cli, omniglot, checkpoint):
    base = ("pretrain", "--data-dir", omniglot, "--out", checkpoint, "--epochs", "6", *TINY)
    r = cli(*base, "--backbone", "conv4", "--set", "lr=0.5")
    assert r.code == 1 and "other settings" in r.err and "--restart" in r.err
    r = cli(*base[:-6], "--backbone", "resnet12", "--max-classes", "8", "--max-images", "10")
    assert r.code == 1 and "holds backbone 'conv4'" in r.err


# --- export -----------------------------------------------------------------------------------


def test_export_writes_every_split_and_loads_back(cli, checkpoint, omniglot, tmp_path):
    out = tmp_path / "feats"
    r = cli("embed", "--checkpoint", checkpoint, "--data-dir", omniglot, "--out", out,
            "--max-classes", "8", "--max-images", "10", "--json")
    assert r.code == 0, r.err
    assert sorted(p.name for p in out.iterdir()) == ["embeddings.json", "test_embeddings.npz", "train_embeddings.npz",
                                                     "val_embeddings.npz"]
    for split, alphabet in (("train", "Korean"), ("val", "Greek"), ("test", "Early_Aramaic")):
        emb = read_embeddings(out / f"{split}_embeddings.npz", numeric_prefix=False)
        assert emb.embeddings.shape == (80, 16) and emb.embeddings.dtype == np.float32
        assert emb.labels.dtype == np.int64 and len(emb.class_names) == 8
        assert emb.class_names[0].startswith(alphabet + "/")
        cls = f"{alphabet}/character01"
        assert emb.keys[0].startswith(f"0-{cls}-{cls}_") and emb.keys[0].endswith(".png")
        assert (emb.embeddings >= 0).all()  # conv4 features are pooled ReLU activations


def test_a_run_on_exported_features_beats_chance(cli, checkpoint, omniglot, tmp_path):
    out = tmp_path / "feats"
    assert cli("embed", "--checkpoint", checkpoint, "--data-dir", omniglot, "--out", out,
               "--max-classes", "8", "--max-images", "10").code == 0
    r = cli("run", "--learner", "nearest-centroid", "--dataset", "features", "--data-dir", out,
            "--way", "5", "--shot", "1", "--episodes", "300", "--json")
    assert r.code == 0, r.err
    acc = r.json()["accuracy"]
    assert acc > 0.40, acc  # chance is 0.20; the test alphabets were never seen in pretraining


def test_embed_a_users_own_class_folders(cli, checkpoint, omniglot, tmp_path):
    mine = tmp_path / "mine"
    for c in ("alpha", "beta-2"):
        src = omniglot / "images_background_small" / "Tagalog" / ("character01" if c == "alpha" else "character02")
        shutil.copytree(src, mine / c)
    r = cli("embed", "--checkpoint", checkpoint, "--images", "folder", "--data-dir", mine, "--out", tmp_path / "o")
    assert r.code == 0, r.err
    emb = read_embeddings(tmp_path / "o" / "test_embeddings.npz", numeric_prefix=False)
    assert emb.embeddings.shape == (40, 16) and emb.class_names == ["alpha", "beta%2D2"]


def test_existing_features_are_refused_unless_overwrite(cli, checkpoint, omniglot, tmp_path):
    out = tmp_path / "feats"
    args = ("embed", "--checkpoint", checkpoint, "--data-dir", omniglot, "--out", out, "--max-classes", "5",
            "--max-images", "5")
    assert cli(*args).code == 0
    before = (out / "train_embeddings.npz").read_bytes()
    r = cli(*args[:-4], "--max-classes", "6", "--max-images", "6")
    assert r.code == 1 and "already holds features" in r.err and "--overwrite" in r.err
    assert (out / "train_embeddings.npz").read_bytes() == before
    assert cli(*args[:-4], "--max-classes", "6", "--max-images", "6", "--overwrite").code == 0
    assert read_embeddings(out / "train_embeddings.npz", numeric_prefix=False).embeddings.shape == (36, 16)


def test_bad_checkpoints_are_one_line_errors(cli, checkpoint, omniglot, tmp_path):
    out = tmp_path / "feats"
    base = ("embed", "--data-dir", omniglot, "--out", out, "--max-classes", "5", "--max-images", "5")
    r = cli(*base, "--checkpoint", checkpoint, "--backbone", "resnet12")
    assert r.code == 1 and "holds backbone 'conv4', not 'resnet12'" in r.err
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(checkpoint.read_bytes()[:300])
    r = cli(*base, "--checkpoint", corrupt)
    assert r.code == 1 and "corrupt" in r.err and len(r.err.strip().splitlines()) == 1
    # Weights of one network filed under another backbone's name.
    ck = torch.load(checkpoint, weights_only=True)
    ck["backbone"], ck["options"] = "resnet12", {"widths": [4, 4, 4, 4]}
    torch.save(ck, tmp_path / "swapped.pt")
    r = cli(*base, "--checkpoint", tmp_path / "swapped.pt")
    assert r.code == 1 and "does not fit backbone 'resnet12'" in r.err
    r = cli(*base, "--checkpoint", tmp_path / "missing.pt")
    assert r.code == 1 and "does not exist" in r.err
    assert not out.exists()  # nothing half-written


def test_tiny_wrn_pretrains_and_exports_its_layer_with_its_options(cli, omniglot, tmp_path):
    r = cli("pretrain", "--backbone", "wrn-28-10", "--data-dir", omniglot, "--out", tmp_path / "w.pt", "--epochs", "1",
            "--set", "depth=10", "--set", "widen=1", "--set", "export_block=1", "--set", "dropout=0.3",
            "--max-classes", "4", "--max-images", "4")
    assert r.code == 0, r.err
    r = cli("embed", "--checkpoint", tmp_path / "w.pt", "--backbone", "wrn-28-10", "--data-dir", omniglot,
            "--out", tmp_path / "f", "--split", "val", "--max-classes", "3", "--max-images", "5")
    assert r.code == 0, r.err
    assert sorted(p.name for p in (tmp_path / "f").iterdir()) == ["embeddings.json", "val_embeddings.npz"]
    emb = read_embeddings(tmp_path / "f" / "val_embeddings.npz", numeric_prefix=False)
    assert emb.embeddings.shape == (15, 64) and (emb.embeddings >= 0).all()  # ReLU, pooled
