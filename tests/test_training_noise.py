"""Counter-based training noise (fewshot_bench.api.Noise): a pure function of (seed, step, draw, element),
well distributed, the same for S members batched (a [S] key, or vmap) as for each alone, and the same
after a resume; every built-in learner draws its meta-training noise from it and none from torch's generator."""

from __future__ import annotations

import copy
import subprocess
import sys
import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch
from helpers import kill_when

from fewshot_bench.api import Noise, TaskSpec, mix64, step_key
from fewshot_bench.api.training_noise import mix64_, mix64_int
from fewshot_bench.data.base import DataRequest
from fewshot_bench.protocol.evaluate import evaluate
from fewshot_bench.protocol.spec import RunSpec
from fewshot_bench.protocol.train import MetaTrainer, TrainOptions
from fewshot_bench.records.store import ResultStore

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
FLOATS = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


def keyed(seed, step: int) -> Noise:
    """A Noise for ``seed`` (an int or a list of member seeds) keyed for ``step``."""
    noise = Noise(seed)
    noise.start(step)
    return noise


def every_draw(noise: Noise, x: torch.Tensor) -> list[torch.Tensor]:
    """One draw of each kind, in a fixed order, like ``x``."""
    return [noise.rand_like(x), noise.randn_like(x), noise.dropout(x, 0.3), noise.randn(x.shape[noise.key.dim():], x)]


# --- the hash and the key -------------------------------------------------------------------


@pytest.mark.equivalence
def test_the_torch_hash_has_the_bits_of_the_numpy_hash():
    rng = np.random.default_rng(0)
    values = np.concatenate([
        np.array([0, 1, 2**63 - 1, 2**63, 2**64 - 1, 0x9E3779B97F4A7C15], dtype=np.uint64),
        rng.integers(0, 2**64 - 1, size=1000, dtype=np.uint64, endpoint=True),
    ])
    signed = torch.from_numpy(values.view(np.int64).copy())
    assert np.array_equal(mix64_(signed).numpy().view(np.uint64), mix64(values))
    assert [mix64_int(int(v)) % 2**64 for v in values[:50]] == [int(v) for v in mix64(values[:50])]


def test_the_key_is_set_in_place_from_seed_and_step():
    noise = Noise(3)
    key, pointer = noise.key, noise.key.data_ptr()
    noise.start(7)
    assert noise.key is key and key.data_ptr() == pointer  # a captured CUDA graph reads the same tensor
    assert key.dtype == torch.int64 and key.shape == () and key.item() == step_key(3, 7)
    assert Noise().key.item() == step_key(0, 0)  # the default: seed 0, step 0
    assert keyed([3, 4, 5], 7).key.tolist() == [step_key(s, 7) for s in (3, 4, 5)]
    keys = {step_key(seed, step) for seed in range(10) for step in range(100)}
    assert len(keys) == 1000


# --- a pure function --------------------------------------------------------------------------


def test_draws_are_a_pure_function_of_seed_step_draw_and_element():
    x = torch.ones(4, 5)
    first = every_draw(keyed(1, 2), x)
    assert all(torch.equal(a, b) for a, b in zip(first, every_draw(keyed(1, 2), x)))
    for other in (keyed(2, 2), keyed(1, 3)):  # another seed, another step
        assert not any(torch.equal(a, b) for a, b in zip(first[:2], every_draw(other, x)[:2]))
    noise = keyed(1, 2)
    a, b = noise.rand_like(x), noise.rand_like(x)  # draw 0, draw 1
    assert not torch.equal(a, b)
    noise.start(2)  # the step's draws start over: a resumed step replays them
    assert torch.equal(noise.rand_like(x), a) and noise.draws == 1


def test_uniforms_lie_in_0_1_with_uniform_moments_and_histogram():
    for dtype in FLOATS:
        u = keyed(0, 0).rand_like(torch.empty(100_000, dtype=dtype))
        assert u.dtype == dtype and u.min() >= 0 and u.max() < 1
        u = u.double()
        assert abs(u.mean().item() - 0.5) < 0.005 and abs(u.var().item() - 1 / 12) < 0.002, dtype
        counts = torch.histc(u, bins=10, min=0, max=1) / len(u)
        assert (counts - 0.1).abs().max() < 0.006, (dtype, counts)


def test_normals_have_the_moments_of_a_standard_normal():
    for dtype in FLOATS:
        z = keyed(0, 0).randn_like(torch.empty(100_000, dtype=dtype))
        assert z.dtype == dtype and torch.isfinite(z).all()
        z = z.double()
        assert abs(z.mean().item()) < 0.02 and abs(z.std().item() - 1) < 0.01, dtype
        assert abs(z.pow(3).mean().item()) < 0.05 and abs(z.pow(4).mean().item() - 3) < 0.1, dtype
        assert abs((z.abs() > 1.959964).double().mean().item() - 0.05) < 0.004, dtype


def correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.corrcoef(torch.stack([a.double().flatten(), b.double().flatten()]))[0, 1].item()


def test_values_look_independent_across_elements_draws_steps_and_seeds():
    x = torch.empty(100_000)
    noise = keyed(0, 0)
    u, v = noise.rand_like(x), noise.rand_like(x)
    z = noise.randn_like(x)
    mask = noise.dropout(torch.ones_like(x), 0.5)
    pairs = {
        "neighbouring elements (a hash's two halves)": (u[:-1], u[1:]),
        "elements 2 apart (neighbouring hashes)": (u[:-2], u[2:]),
        "two draws": (u, v),
        "two steps": (u, keyed(0, 1).rand_like(x)),
        "two seeds": (u, keyed(1, 0).rand_like(x)),
        "neighbouring normals": (z[:-1], z[1:]),
        "neighbouring dropout quarters": (mask[:-1], mask[1:]),
        "dropout quarters 4 apart (neighbouring hashes)": (mask[:-4], mask[4:]),
    }
    for what, (a, b) in pairs.items():
        assert abs(correlation(a, b)) < 0.015, what  # 1/sqrt(1e5) = 0.003


def test_dropout_keeps_one_minus_rate_rescaled_and_passes_gradients():
    x = torch.ones(200_000, dtype=torch.float64, requires_grad=True)
    out = keyed(0, 0).dropout(x, 0.3)
    kept = out != 0
    assert abs(kept.double().mean().item() - 0.7) < 0.004
    torch.testing.assert_close(out[kept], torch.full_like(out[kept], 1 / 0.7))
    (grad,) = torch.autograd.grad(out.sum(), x)
    torch.testing.assert_close(grad, kept.double() / 0.7)
    assert keyed(0, 0).dropout(x, 0.0) is x


def test_draws_follow_the_dtype_and_the_leading_member_dims():
    noise = Noise([1, 2])
    with pytest.raises(ValueError, match="no leading member dims"):
        noise.rand_like(torch.empty(3, 4))
    assert noise.randn((5,), torch.empty(0, dtype=torch.float64)).shape == (2, 5)


# --- members: batched exactly as alone -----------------------------------------------------


@pytest.mark.equivalence
@pytest.mark.parametrize("shape", [(7,), (3, 5, 2)], ids=["odd", "3-d"])
def test_a_member_key_draws_what_each_member_draws_alone(shape):
    seeds = [3, 4, 5]
    batched = every_draw(keyed(seeds, 9), torch.ones(len(seeds), *shape))
    alone = [every_draw(keyed(s, 9), torch.ones(shape)) for s in seeds]
    for i, values in enumerate(batched):
        assert torch.equal(values, torch.stack([member[i] for member in alone]))


@pytest.mark.equivalence
def test_vmap_over_a_batched_key_draws_what_each_key_draws_alone():
    """What populations rely on: members vmapped over the rows of a [S] key draw what each run draws alone."""
    seeds = [3, 4, 5]
    noise = keyed(seeds, 9)

    def member(key: torch.Tensor, x: torch.Tensor) -> list[torch.Tensor]:
        with noise.keyed(key):
            return every_draw(noise, x)

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no slow per-member fallback
        batched = torch.func.vmap(member)(noise.key, torch.ones(len(seeds), 4, 5, dtype=torch.float64))
    assert noise.key.shape == (3,)  # restored after the block
    alone = [every_draw(keyed(s, 9), torch.ones(4, 5, dtype=torch.float64)) for s in seeds]
    for i, values in enumerate(batched):
        assert torch.equal(values, torch.stack([member[i] for member in alone]))


# --- devices --------------------------------------------------------------------------------


@pytest.mark.equivalence
@CUDA
def test_cuda_draws_equal_the_cpu_draws():
    cpu, gpu = keyed(2, 4), Noise(2, "cuda")
    gpu.start(4)
    x = torch.ones(3, 1001)
    for a, b in zip(every_draw(cpu, x), every_draw(gpu, x.cuda())):
        assert b.device.type == "cuda"
        torch.testing.assert_close(b.cpu(), a, rtol=1e-6, atol=1e-6)  # the hashes are exact; erfinv to an ulp


@CUDA
def test_a_captured_cuda_graph_draws_each_steps_noise_on_replay():
    noise = Noise(2, "cuda")
    x = torch.ones(3, 1001, device="cuda")
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # warm-up: the element counters are allocated here
        noise.start(0)
        every_draw(noise, x)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    noise.start(0)
    with torch.cuda.graph(graph):
        captured = every_draw(noise, x)
    for step in (5, 6):
        noise.start(step)  # in place, outside the graph, no host sync
        graph.replay()
        for got, want in zip(captured, every_draw(keyed(2, step), x.cpu())):
            torch.testing.assert_close(got.cpu(), want, rtol=1e-6, atol=1e-6)


# --- learners and the trainer -----------------------------------------------------------------

META_TRAINABLE = [
    ("leo", "synthetic", 5, 1), ("leo-random-prior", "synthetic", 5, 2), ("leo-deterministic", "synthetic", 5, 1),
    ("metasgd", "synthetic", 5, 1), ("maml", "synthetic", 5, 1),
    ("leo", "sines-lines", 1, 5), ("metasgd", "sines-lines", 1, 5), ("maml", "sines-lines", 1, 5),
]


def learner_and_batch(host, name: str, data: str, way: int, shot: int, steps_batch: int = 0):
    """A small learner of ``name`` for (data, way, shot), seeded, in training mode, and one training meta-batch."""
    dataset = host.dataset(data).load(DataRequest())
    cls = host.learner(name).for_kind(dataset.kind)
    torch.manual_seed(0)
    learner = cls(replace(cls.default_config(data, shot), meta_batch_size=3), TaskSpec(way, shot, dataset.feature_dim,
                                                                                       dataset.kind, data))
    batch = dataset.split("train").sampler(way, shot, 4, 0, stream="train").batch(steps_batch * 3, 3)
    return learner.train(), batch, dataset


@pytest.mark.parametrize("case", META_TRAINABLE, ids=lambda c: f"{c[0]}/{c[1]}")
def test_meta_training_draws_nothing_from_torchs_generator(host, case):
    """Every random number of a built-in learner's meta-loss comes from its Noise: populations can reproduce it."""
    learner, batch, _ = learner_and_batch(host, *case)
    state = torch.get_rng_state()
    learner.meta_loss(batch)
    assert torch.equal(torch.get_rng_state(), state)
    before = learner.noise.draws
    learner.meta_loss(batch)
    assert learner.noise.draws > before or case[0] in ("metasgd", "maml")  # LEO draws; the others draw nothing


def test_the_trainer_keys_each_steps_noise_by_seed_and_step(host):
    learner, _, dataset = learner_and_batch(host, "leo", "synthetic", 5, 1)
    spec = RunSpec("leo", "synthetic", 5, 1, seed=5, steps=10, patience=None)
    trainer = MetaTrainer(learner, dataset.split("train"), dataset.split("val"), spec, TrainOptions(),
                          torch.device("cpu"))
    twin = copy.deepcopy(learner)
    loss = trainer.step(3)["loss"]
    twin.noise = keyed(5, 3)
    batch = trainer.sampler.batch(3 * trainer.batch_size, trainer.batch_size)
    assert twin.meta_loss(batch).loss.item() == loss.item()
    assert learner.noise.key.item() == step_key(5, 3)


def leo_trainer(host, synthetic, steps: int, checkpoint=None) -> MetaTrainer:
    cls = host.learner("leo")
    torch.manual_seed(0)
    learner = cls(replace(cls.default_config("synthetic", 1), meta_batch_size=4), TaskSpec(5, 1, synthetic.feature_dim))
    spec = RunSpec("leo", steps=steps, val_every=3, val_episodes=5, patience=None)
    options = TrainOptions(val_query=5, checkpoint=checkpoint, run_key="leo-noise")
    return MetaTrainer(learner, synthetic.split("train"), synthetic.split("val"), spec, options, torch.device("cpu"))


@pytest.mark.equivalence
def test_leo_resumed_from_a_checkpoint_gives_the_per_episode_results_of_an_unbroken_run(host, synthetic, tmp_path):
    """Stopped after its step-3 checkpoint and resumed, LEO draws the same noise for steps 4-6 as an unbroken run."""
    score = dict(split=synthetic.split("test"), n_way=5, k_shot=1, seed=0, episodes=20, n_query=5)
    unbroken = leo_trainer(host, synthetic, 6)
    unbroken.run()
    leo_trainer(host, synthetic, 3, tmp_path / "c.pt").run()  # as a run killed after its first checkpoint
    resumed = leo_trainer(host, synthetic, 6, tmp_path / "c.pt")
    assert resumed.try_resume() and resumed.result.steps == 3
    resumed.run()
    assert resumed.result.history == unbroken.result.history
    assert np.array_equal(evaluate(resumed.learner, **score), evaluate(unbroken.learner, **score))


@pytest.mark.equivalence
@pytest.mark.slow  # kills a run and resumes it, then runs it unbroken
def test_a_killed_leo_run_resumes_to_the_per_episode_results_of_an_unbroken_run(tmp_path):
    cmd = [sys.executable, "-m", "fewshot_bench.cli", "run", "--learner", "leo", "--steps", "120", "--val-every", "20",
           "--val-episodes", "10", "--episodes", "40", "--eval-query", "5", "--threads", "1"]
    ckpt_dir = tmp_path / "fewshot-checkpoints"
    proc = subprocess.Popen([*cmd, "--store", str(tmp_path / "r.db")], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # Killed at the first validation's checkpoint.
    kill_when(proc, lambda: ckpt_dir.exists() and any(ckpt_dir.glob("*.pt")), 240, "checkpoint written")
    for store in ("r.db", "fresh.db"):
        done = subprocess.run([*cmd, "--store", str(tmp_path / store)], cwd=tmp_path, capture_output=True,
                              text=True, timeout=600)
        assert done.returncode == 0, done.stderr
        assert ("resuming leo from step" in done.stderr) == (store == "r.db")
    values = []
    for store in ("r.db", "fresh.db"):
        with ResultStore(tmp_path / store) as s:
            (rec,) = s.runs()
            values.append(s.episode_values(rec.run_id))
    assert np.array_equal(values[0], values[1])
