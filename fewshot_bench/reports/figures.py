"""The LEO paper's figures from stored runs: 3 (regression samples), 4 (latent t-SNE), 5 (curvature and coverage).

Each ``figure_N`` takes loaded learners (see :func:`fewshot_bench.protocol.runner.load_model`) and
data, computes what the paper plots, and writes one PNG, PDF or SVG atomically with its provenance
(the runs it was drawn from) under it and in its metadata (:mod:`fewshot_bench.reports.figure_files`).
Learners keep their colours and markers across figures (:mod:`fewshot_bench.reports.palette`). The
numbers behind a figure are returned too, for tests and docs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import Tensor  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from fewshot_bench.api import Adaptation, Learner, PredictionBatch, flat
from fewshot_bench.data import regression  # noqa: E402
from fewshot_bench.episodes import EpisodeSource
from fewshot_bench.errors import ConfigError
from fewshot_bench.reports import figure_files, palette
from fewshot_bench.reports.figure_files import Provenance
from fewshot_bench.reports.palette import THETA, THETA_ADAPTED, Z_ADAPTED, Z

CHUNK = 200  # episodes per batch when collecting latents and curvature


def save_figure(fig: plt.Figure, out: Path, title: str, learner: Learner, provenance: Provenance | None,
                fmt: str | None) -> Path:
    """Write ``fig`` to ``out`` (PNG, PDF or SVG: ``fmt`` or the suffix's) with its provenance caption, and close
    it; without a stored run's ``provenance`` the caption names the learner's task only."""
    caption: str | Provenance = provenance if provenance is not None else (
        f"{learner.name} | {learner.task.dataset} {learner.task.n_way}-way {learner.task.k_shot}-shot | "
        "not drawn from a stored run")
    return figure_files.save(fig, out, title, caption, fmt)


# --- Figure 3: sampled regression models ---------------------------------------------------------


def pick_problems(sampler: regression.SinesLinesSampler, regular: int, ambiguous: int,
                  scan: int = 5000) -> list[tuple[int, str]]:
    """Episode ids of the first ``regular`` problems (alternating sine, line) and the first ``ambiguous`` ones."""
    ids = np.arange(scan)
    x, y = sampler.points(ids, sampler.k_shot)
    is_ambiguous = regression.ambiguous(x, y)
    modes = sampler.problems(ids).mode
    picked: list[tuple[int, str]] = []
    for n in range(regular):
        want = n % 2
        i = next(int(i) for i in ids[(modes == want) & ~is_ambiguous] if int(i) not in {p for p, _ in picked})
        picked.append((i, regression.MODES[want]))
    for i in ids[is_ambiguous][:ambiguous]:
        picked.append((int(i), f"ambiguous ({regression.MODES[modes[i]]})"))
    return picked


def regression_samples(learner: Learner, sampler: regression.SinesLinesSampler, episode: int, grid: np.ndarray,
                       samples: int) -> np.ndarray:
    """``samples`` models' outputs [S, G] on ``grid`` for one problem's support set (one batch of S copies)."""
    support = sampler.batch(episode, 1, dtype=learner.dtype)
    g = torch.as_tensor(grid, dtype=learner.dtype).view(1, -1, 1).expand(samples, -1, -1)
    batch = PredictionBatch(
        support=support.support.expand(samples, -1, -1, -1),
        support_labels=support.support_labels.expand(samples, -1, -1, -1),
        query=g,
    )
    with torch.no_grad():
        return learner.predict(batch).reshape(samples, -1).cpu().numpy()


def figure_3(learner: Learner, out: Path, seed: int = 0, samples: int = 8, regular: int = 3,
             ambiguous: int = 3, provenance: Provenance | None = None, fmt: str | None = None) -> dict[str, Any]:
    """A grid of test problems: true function, the K support points, ``samples`` sampled models each."""
    sampler = regression.SinesLinesSampler(learner.task.k_shot, 1, seed, stream="test")
    grid = np.linspace(*regression.X_RANGE, 200)
    problems = pick_problems(sampler, regular, ambiguous)
    cols = max(regular, ambiguous)
    fig, axes = plt.subplots(2, cols, figsize=(4.2 * cols, 7.5), squeeze=False)
    for ax in axes.flat:
        ax.set_visible(False)
    letters = "abcdefghijkl"
    look = palette.style(learner.name)
    shown = []
    for n, (episode, label) in enumerate(problems):
        ax = axes[0 if n < regular else 1, n if n < regular else n - regular]
        ax.set_visible(True)
        outputs = regression_samples(learner, sampler, episode, grid, samples)
        truth = sampler.problems(np.array([episode]))(grid)[0]
        xs, ys = sampler.points(np.array([episode]), sampler.k_shot)
        for x in xs[0]:  # where the support points are: the models should agree there, and may differ elsewhere
            ax.axvline(x, color=palette.SUPPORT, ls="--", lw=0.8, alpha=0.5,
                       label="x of a support point" if x == xs[0][0] else None)
        for s in range(samples):
            ax.plot(grid, outputs[s], ":", lw=1.6, color=look.colour, alpha=0.9,
                    label=f"{look.label}: {samples} sampled models" if s == 0 else None)
        ax.plot(grid, truth, "k-", lw=2, label="true function")
        ax.plot(xs[0], ys[0], "o", mec=palette.SUPPORT, mfc="none", ms=9, mew=2,
                label=f"{sampler.k_shot} noisy support points")
        ax.set_title(f"({letters[n]}) test problem {episode}: {label}")
        ax.set_xlabel("x")
        ax.set_ylabel("y")
        lo, hi = truth.min(), truth.max()
        pad = max(2.0, 0.3 * (hi - lo))
        ax.set_ylim(lo - pad, hi + pad)
        shown.append({"episode": episode, "label": label, "sample_spread": float(outputs.std(0).mean())})
    axes[0, 0].legend(loc="best", fontsize=8)
    title = (f"Figure 3: {look.label} on {sampler.k_shot}-shot noisy sines and lines; "
             f"{samples} sampled models per problem")
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    fig.suptitle(f"{title}.\nTop: problems of one family; bottom: problems both a line and a sine fit (ambiguous)")
    save_figure(fig, out, title, learner, provenance, fmt)
    return {"problems": shown}


def adaptation_of(learner: Learner, batch: PredictionBatch, latents: bool = False) -> Adaptation:
    """``learner.adaptation(batch)``; a one-line error if it reports none (or no latents, when asked for)."""
    adaptation = learner.adaptation(batch)
    if adaptation is None or (latents and any(f is None for f in (
        adaptation.latent_initial, adaptation.latent_adapted, adaptation.decoded, adaptation.decoder
    ))):
        what = "latent codes and a linear decoder" if latents else "its parameters before and after adaptation"
        raise ConfigError(f"learner {learner.name!r} reports no {what} (Learner.adaptation); figures cannot draw it")
    return adaptation


# --- Figure 4: latent codes before and after adaptation ------------------------------------------


def collect_latents(leo: Learner, split: EpisodeSource, way: int, shot: int, episodes: int, seed: int,
                    progress: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Initial and adapted class latents [E * N, Z] (mean over a class's copies) and their class ids [E * N]."""
    sampler = split.sampler(way, shot, 1, seed, stream="val")
    before, after, classes = [], [], []
    leo.eval()
    with torch.no_grad():
        for start in tqdm(range(0, episodes, CHUNK), desc="latents", disable=not progress, leave=False):
            batch = sampler.batch(start, min(CHUNK, episodes - start), dtype=leo.dtype)
            adaptation = adaptation_of(leo, batch, latents=True)
            before.append(adaptation.latent_initial.mean(2).flatten(0, 1))
            after.append(adaptation.latent_adapted.mean(2).flatten(0, 1))
            classes.append(batch.classes.flatten())
    return torch.cat(before).numpy(), torch.cat(after).numpy(), torch.cat(classes).numpy()


def figure_4(leo: Learner, split: EpisodeSource, out: Path, episodes: int = 1000, seed: int = 0,
             highlight: int | None = None, progress: bool = False, provenance: Provenance | None = None,
             fmt: str | None = None) -> dict[str, Any]:
    """t-SNE of LEO's latents before (z) and after (z') adaptation: by stage, by class, and one class highlighted."""
    from sklearn.manifold import TSNE

    task = leo.task
    before, after, classes = collect_latents(leo, split, task.n_way, task.k_shot, episodes, seed, progress)
    points = TSNE(n_components=2, init="pca", random_state=seed,
                  perplexity=min(30.0, (2 * len(before) - 1) / 3)).fit_transform(np.concatenate([before, after]))
    n = len(before)
    stage = np.r_[np.zeros(n), np.ones(n)]
    cls = np.r_[classes, classes]
    highlight = int(np.bincount(classes).argmax()) if highlight is None else highlight
    names = getattr(split, "class_names", None)
    hl_name = names[highlight] if names is not None else str(highlight)
    look = palette.style(leo.name)
    # Adapted codes are what LEO produces: its colour; the encoder's initial codes a neutral grey.
    stages = [(palette.BEFORE, "o", f"initial codes {Z} (encoder)"),
              (look.colour, look.marker, f"adapted codes {Z_ADAPTED} (after {look.label}'s latent steps)")]

    fig, axes = plt.subplots(1, 3, figsize=(18, 5.8))
    for s, (colour, marker, label) in enumerate(stages):
        axes[0].scatter(*points[stage == s].T, s=4, c=colour, marker=marker, alpha=0.6, label=label, linewidths=0)
    axes[0].set_title(f"(a) before ({Z}) vs after ({Z_ADAPTED}) adaptation")
    axes[0].legend(markerscale=3, loc="best", fontsize=8)
    sc = axes[1].scatter(*points.T, s=3, c=cls, cmap="tab20", alpha=0.6)
    axes[1].set_title(f"(b) {Z} and {Z_ADAPTED} coloured by validation class ({len(np.unique(classes))} classes)")
    fig.colorbar(sc, ax=axes[1], label="class id")
    axes[2].scatter(*points.T, s=2, c=palette.BACKGROUND, alpha=0.5, label=f"all codes ({Z} and {Z_ADAPTED})")
    for s, (colour, marker, _) in enumerate(stages):
        mask = (stage == s) & (cls == highlight)
        axes[2].scatter(*points[mask].T, s=10, c=colour, marker=marker,
                        label=f"class {hl_name}: {Z if s == 0 else Z_ADAPTED}")
    axes[2].set_title(f"(c) class {hl_name} before and after")
    axes[2].legend(markerscale=2, loc="best", fontsize=8)
    for ax in axes:
        ax.set_xlabel("t-SNE 1")
        ax.set_ylabel("t-SNE 2")
    title = (f"Figure 4: t-SNE of {look.label} latent codes, {task.n_way}-way {task.k_shot}-shot {task.dataset}, "
             f"{episodes:,} validation episodes")
    fig.suptitle(title)
    save_figure(fig, out, title, leo, provenance, fmt)
    shift = np.linalg.norm(after - before, axis=1).mean()
    return {"codes": n, "mean_shift": float(shift), "highlight": hl_name}


# --- Figure 5: curvature and coverage --------------------------------------------------------------


def softmax_factor(probs: Tensor) -> Tensor:
    """L with L L^T = diag(p) - p p^T (the softmax cross-entropy's Hessian in the logits): [..., N, N]."""
    root = probs.sqrt()
    return torch.diag_embed(root) - probs.unsqueeze(-1) * root.unsqueeze(-2)


def ce_hessian_eigenvalues(x: Tensor, weights: Tensor, gram: Tensor) -> Tensor:
    """Non-zero eigenvalues [B, M * N] of the Hessian of the support cross-entropy (summed over examples).

    The logits ``x_i . w_a`` are linear in the parameters, so the Hessian is ``J^T S J`` with
    ``S`` the block-diagonal softmax Hessians; its non-zero eigenvalues are those of the
    small matrix ``G[(i,c),(j,c')] = k_ij (L_i^T L_j)[c, c']`` where ``k_ij`` is the inner
    product of the logits' parameter gradients (``gram`` [B, M, M]): ``x_i . x_j`` in the
    classifier weights theta, ``x_i^T W W^T x_j`` through a linear decoder W in z.
    """
    probs = torch.softmax(torch.bmm(x, weights.transpose(1, 2)), dim=-1)  # [B, M, N]
    factor = softmax_factor(probs)  # [B, M, N(a), N(c)]
    ltl = torch.einsum("biac,bjad->bicjd", factor, factor)  # [B, M, N, M, N]
    g = gram[:, :, None, :, None] * ltl
    b, m, n = probs.shape
    return torch.linalg.eigvalsh(g.reshape(b, m * n, m * n)).abs()


def curvature_and_coverage(leo: Learner, metasgd: Learner, split: EpisodeSource, problems: int, seed: int,
                           progress: bool = False) -> dict[str, np.ndarray]:
    """Per-problem quantities of Figure 5 on ``problems`` test episodes (evaluation mode, no sampling).

    Both learners report through :meth:`Learner.adaptation`: LEO its latents, the weights
    decoded from them and its decoder's mean map; Meta-SGD its initial and adapted weights.
    """
    task = leo.task
    sampler = split.sampler(task.n_way, task.k_shot, 1, seed, stream="test")
    out: dict[str, list[Tensor]] = {"hess_z": [], "hess_theta": [], "hess_metasgd": [],
                                    "step_leo": [], "step_metasgd": []}
    leo.eval()
    metasgd.eval()
    with torch.no_grad():
        for start in tqdm(range(0, problems, CHUNK), desc="curvature", disable=not progress, leave=False):
            batch = sampler.batch(start, min(CHUNK, problems - start), dtype=leo.dtype)
            x = flat(batch.support)
            adaptation = adaptation_of(leo, batch, latents=True)
            decoder = adaptation.decoder  # [Z, D]: latents to classifier weights
            copies = adaptation.latent_initial.shape[2]
            theta = adaptation.decoded  # decoded from z': the point both Hessians are taken at
            xw = x @ decoder.T  # [B, M, Z]
            out["hess_z"].append(ce_hessian_eigenvalues(x, theta, xw @ xw.transpose(1, 2) / copies).flatten())
            out["hess_theta"].append(ce_hessian_eigenvalues(x, theta, x @ x.transpose(1, 2)).flatten())
            out["step_leo"].append((theta - adaptation.initial).flatten(1).norm(dim=1))
            baseline = adaptation_of(metasgd, batch)
            w = baseline.adapted
            out["hess_metasgd"].append(ce_hessian_eigenvalues(x, w, x @ x.transpose(1, 2)).flatten())
            out["step_metasgd"].append((w - baseline.initial).flatten(1).norm(dim=1))
        singular_values = torch.linalg.svdvals(decoder)
    result = {k: torch.cat(v).cpu().numpy() for k, v in out.items()}
    for key in ("hess_z", "hess_theta", "hess_metasgd"):  # the Hessians' rank is at most M (N - 1)
        v = result[key]
        result[key] = v[v > 1e-7 * v.max()]
    result["decoder_singular_values"] = singular_values.cpu().numpy()
    return result


def plain_log_ticks(ax: plt.Axes) -> None:
    """Label a log y-axis with plain numbers (``0.01``, ``6``), never ``2x10^0``; the minor ticks too when the
    data span less than a decade (else the axis would carry no label at all)."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    plain = FuncFormatter(lambda v, _: f"{v:.3g}")
    ax.yaxis.set_major_formatter(plain)
    lo, hi = ax.get_ylim()
    ax.yaxis.set_minor_formatter(plain if hi / lo < 10 else NullFormatter())


def figure_5(leo: Learner, metasgd: Learner, split: EpisodeSource, out: Path, problems: int = 1000, seed: int = 0,
             progress: bool = False, provenance: Provenance | None = None, fmt: str | None = None) -> dict[str, Any]:
    """Box plots (whiskers at the 5th and 95th percentiles) of curvature in z and theta, decoder singular values
    and step sizes."""
    q = curvature_and_coverage(leo, metasgd, split, problems, seed, progress)
    ours, other = palette.style(leo.name), palette.style(metasgd.name)
    fig, axes = plt.subplots(1, 3, figsize=(16, 5.2))
    box = dict(whis=(5, 95), showfliers=False, patch_artist=True,
               medianprops=dict(color=palette.MEDIAN, lw=2))
    # (learner look, hatched): LEO's boxes in z are hatched, its boxes in theta plain
    panels = [
        (axes[0], [q["hess_z"], q["hess_theta"], q["hess_metasgd"]],
         [f"{ours.label} in {Z}", f"{ours.label} in {THETA}", f"{other.label} in {THETA}"],
         [(ours, True), (ours, False), (other, False)],
         "(a) curvature: |Hessian eigenvalues| of the support loss", "|eigenvalue| (log scale)"),
        (axes[1], [q["decoder_singular_values"]], [f"{ours.label} decoder " + r"$g_{\phi_d}$"], [(ours, False)],
         "(b) coverage: singular values of the decoder", "singular value (log scale)"),
        (axes[2], [q["step_leo"], q["step_metasgd"]],
         [f"{ours.label} (steps in {Z})", f"{other.label} (steps in {THETA})"], [(ours, True), (other, False)],
         f"(c) coverage: size of the adaptation in {THETA}", f"||{THETA_ADAPTED} − {THETA}|| (log scale)"),
    ]
    for ax, data, labels, looks, title, ylabel in panels:
        parts = ax.boxplot(data, tick_labels=labels, **box)
        for patch, (look, hatched) in zip(parts["boxes"], looks):
            patch.set_facecolor(look.colour)
            patch.set_alpha(0.75)
            patch.set_hatch("//" if hatched else "")
        ax.set_yscale("log")
        plain_log_ticks(ax)
        ax.set_title(title, fontsize=10)
        ax.set_ylabel(ylabel)
        ax.set_xlabel("model")
        ax.grid(axis="y", which="both", alpha=0.3)
    task = leo.task
    title = (f"Figure 5: curvature and coverage over {problems:,} test problems "
             f"({task.n_way}-way {task.k_shot}-shot {task.dataset})")
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    fig.suptitle(f"{title}; boxes: quartiles, black line: median, whiskers: 5th-95th percentiles; "
                 f"hatched: adaptation in {Z}")
    save_figure(fig, out, title, leo, provenance, fmt)
    return {k: float(np.median(v)) for k, v in q.items()}
