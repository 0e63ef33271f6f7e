"""Rendering of comparison reports: pretraining curves, task-score tables and plots.

Pure functions over plain rows (metrics.jsonl of runs, results.jsonl of fine-tuning), so they are
tested without training anything.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterable



def loss_curve(metrics_rows: Iterable[dict[str, Any]], split: str = "train") -> list[tuple[int, float]]:
    """(tokens_seen, loss) points of one run's metrics.jsonl; eval rows carry split="valid"."""
    pts = []
    for r in metrics_rows:
        if r.get("split", "train") != split or "loss" not in r:
            continue
        loss = r.get("loss")
        if loss is None or not math.isfinite(float(loss)):
            continue
        pts.append((int(r.get("tokens_seen", r.get("step", 0))), float(loss)))
    return pts


def plot_loss_curves(curves: dict[str, dict[str, list[tuple[int, float]]]], path: Path) -> None:
    """One PNG: MLM loss against tokens seen, a line per run (train solid, valid dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    for i, (name, by_split) in enumerate(sorted(curves.items())):
        color = f"C{i}"
        for split, style in (("train", "-"), ("valid", "--")):
            pts = by_split.get(split) or []
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, style, color=color, marker="o" if split == "valid" else None,
                        markersize=3, label=f"{name} ({split})")
    ax.set_xlabel("tokens seen (non-pad, global)")
    ax.set_ylabel("MLM loss")
    ax.set_title("Pretraining: MLM loss against tokens seen")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def context_curve(metrics_rows: Iterable[dict[str, Any]]) -> list[tuple[int, float, float, float]]:
    """(tokens_seen, [MASK] acc, context-shuffled acc, most-frequent baseline) of every evaluation
    row of one run's metrics.jsonl that carries the context check."""
    return [(int(r.get("tokens_seen", r.get("step", 0))), float(r["mask_acc"]), float(r["mask_acc_shuffled"]),
             float(r["baseline_most_frequent"]))
            for r in metrics_rows if r.get("split") == "valid" and r.get("mask_acc") is not None
            and r.get("mask_acc_shuffled") is not None and r.get("baseline_most_frequent") is not None]


def plot_context_curves(curves: dict[str, list[tuple[int, float, float, float]]], path: Path) -> None:
    """One PNG: held-out [MASK] accuracy against tokens seen, a line per run (solid), the same with
    the context shuffled (dotted) and the most-frequent-token baseline (thin dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    for i, (name, pts) in enumerate(sorted(curves.items())):
        if not pts:
            continue
        xs = [p[0] for p in pts]
        ax.plot(xs, [p[1] for p in pts], "-", color=f"C{i}", marker="o", markersize=3, label=f"{name}: [MASK] acc")
        ax.plot(xs, [p[2] for p in pts], ":", color=f"C{i}", label=f"{name}: context shuffled")
        ax.plot(xs, [p[3] for p in pts], "--", color=f"C{i}", linewidth=0.8, alpha=0.6, label=f"{name}: baseline")
    ax.set_xlabel("tokens seen in the run (non-pad, global)")
    ax.set_ylabel("held-out [MASK] accuracy")
    ax.set_title("Does the encoder use context? (the run's own valid split)")
    ax.grid(alpha=0.3)
    if any(curves.values()):
        ax.legend(fontsize=6, ncol=2)
    else:
        ax.text(0.5, 0.5, "no evaluation recorded the context check", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_task_scores(scores: dict[str, dict[str, list[float]]], path: Path) -> None:
    """One PNG: grouped bars of mean dev score per task and checkpoint, with std error bars where
    there are at least two seeds (one seed: no error bars, and the title says n=1).

    ``scores`` is checkpoint -> task -> [value per seed] (``finetune.results.aggregate``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    checkpoints = sorted(scores)
    tasks = sorted({t for row in scores.values() for t in row})
    width = 0.8 / max(len(checkpoints), 1)
    fig, ax = plt.subplots(figsize=(max(6, 1.8 * len(tasks) + 2), 4.2), dpi=120)
    for i, ck in enumerate(checkpoints):
        xs, means, stds = [], [], []
        for j, task in enumerate(tasks):
            if task in scores[ck]:
                m, s = _mean_std([100 * v for v in scores[ck][task]])
                xs.append(j + i * width - 0.4 + width / 2)
                means.append(m)
                stds.append(s)
        several = all(len(v) > 1 for v in scores[ck].values())
        ax.bar(xs, means, width, yerr=stds if several else None, capsize=3, label=ck, color=f"C{i}")
    ax.set_xticks(range(len(tasks)))
    ax.set_xticklabels(tasks)
    ax.set_ylabel("dev score, % (official metric)")
    n_seeds = sorted({len(v) for per in scores.values() for v in per.values()})
    ax.set_title("Fine-tuning: one seed (n=1), no error bars" if n_seeds == [1]
                 else f"Fine-tuning: mean ± std over seeds (n={'/'.join(map(str, n_seeds))})")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# ---------------------------------------------------------------------------- statistics

def pairwise_table(comparisons: list[Any]) -> str:
    """Markdown table of paired-bootstrap comparisons (``finetune.significance.Comparison``), in
    points of the official metric (percent)."""
    lines = ["| a | b | task | metric | delta (a − b) | 95 % CI | p | significant | dev examples | seeds |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for c in comparisons:
        lines.append(f"| {c.a} | {c.b} | {c.task} | {c.metric} | {100 * c.delta:+.2f} | "
                     f"[{100 * c.ci_low:+.2f}, {100 * c.ci_high:+.2f}] | {c.p:.3g} | {'yes' if c.significant else 'no'} | "
                     f"{c.n_examples} | {c.n_seeds} |")
    return "\n".join(lines) + "\n"


def significance_lines(comparisons: list[Any], n_resamples: int) -> list[str]:
    """The comparisons in words: which differences are significant and which are not."""
    from cmedbert.finetune.significance import describe

    if not comparisons:
        return ["No pair of arms shares a task: nothing to compare."]
    sig = [c for c in comparisons if c.significant]
    seeds = sorted({c.n_seeds for c in comparisons})
    lines = [f"Paired bootstrap over dev examples (documents for the span tasks, corpus-level F1 recomputed on "
             f"every resample), {n_resamples:,} resamples, fine-tuning seeds pooled and resampled "
             f"(n = {'/'.join(map(str, seeds))} per arm); delta = a − b in points of the official metric; "
             f"\"significant\" = the 95 % interval excludes 0 (not corrected for the {len(comparisons)} comparisons).", ""]
    if seeds == [1]:
        lines += ["With one fine-tuning seed (n=1) the intervals reflect dev-set sampling only, not seed-to-seed "
                  "variation.", ""]
    lines.append(f"**{len(sig)} of {len(comparisons)} differences are significant.**")
    lines += [""] + [f"- {describe(c)}" for c in comparisons]
    return lines


def intrinsic_table(rows: list[dict[str, Any]]) -> list[str]:
    """Per-arm intrinsic checks: held-out MLM accuracy, [MASK]-only accuracy in real and shuffled
    context, the most-frequent-token baseline and the plateau flag (rows from
    ``compare.intrinsic_checks``)."""
    def f(v: Any) -> str:
        return "–" if v is None else f"{v:.3f}"

    def ratio(r: dict[str, Any]) -> str:
        a, b = r.get("mask_acc"), r.get("baseline_most_frequent")
        return "–" if a is None or not b else f"{a / b:.1f}x"

    lines = ["| arm | evaluated on | MLM acc (all selected) | [MASK] acc | [MASK] acc, context shuffled | "
             "most-frequent-token baseline | [MASK] acc / baseline | uses context? |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r.get("mask_acc") is None:
            verdict = "not measured"
        elif r.get("plateau"):
            verdict = "**no: still on the unigram plateau**"
        else:
            verdict = "yes"
        lines.append(f"| {r['arm']} | {r.get('source') or '–'} | {f(r.get('mlm_acc'))} | {f(r.get('mask_acc'))} | "
                     f"{f(r.get('mask_acc_shuffled'))} | {f(r.get('baseline_most_frequent'))} | {ratio(r)} | {verdict} |")
    return lines


def plot_budget(points: dict[str, list[tuple[int, float, float, float]]], task: str, metric: str, ax: Any) -> None:
    """One task's panel: score (with its 95 % interval) against pretraining tokens, a line per arm.
    ``points`` is arm -> [(tokens, score, ci_low, ci_high)]."""
    for i, (arm, pts) in enumerate(sorted(points.items())):
        pts = sorted(pts)
        xs = [p[0] for p in pts]
        ys = [100 * p[1] for p in pts]
        err = [[100 * (p[1] - p[2]) for p in pts], [100 * (p[3] - p[1]) for p in pts]]
        ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, color=f"C{i}", label=arm,
                    linestyle="-" if len(pts) > 1 else "none")
    ax.set_xlabel("pretraining tokens (continual arms: + the base's)")
    ax.set_ylabel(f"dev {metric}, %")
    ax.set_title(task)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)


def plot_budget_curves(by_task: dict[str, tuple[str, dict[str, list[tuple[int, float, float, float]]]]],
                       path: Path) -> None:
    """budget.png: one panel per task (``by_task``: task -> (metric, arm -> points))."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(1, len(by_task))
    fig, axes = plt.subplots(1, n, figsize=(max(7.0, 5.5 * n), 4.4), dpi=120, squeeze=False)
    for ax, (task, (metric, points)) in zip(axes[0], sorted(by_task.items())):
        plot_budget(points, task, metric, ax)
    fig.suptitle("Fine-tuned score vs pretraining budget (95 % bootstrap intervals)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _mean_std(values: list[float]) -> tuple[float, float]:
    from cmedbert.finetune.results import SeedStats

    stats = SeedStats(values)
    return stats.mean, stats.std
