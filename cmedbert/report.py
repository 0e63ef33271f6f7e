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


def mean_std(values: list[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return mean, std


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


def plot_task_scores(scores: dict[str, dict[str, list[float]]], path: Path) -> None:
    """One PNG: grouped bars of mean dev score per task and checkpoint, with std error bars.

    ``scores`` is checkpoint -> task -> [value per seed] (``finetune.table.aggregate``)."""
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
                m, s = mean_std([100 * v for v in scores[ck][task]])
                xs.append(j + i * width - 0.4 + width / 2)
                means.append(m)
                stds.append(s)
        ax.bar(xs, means, width, yerr=stds, capsize=3, label=ck, color=f"C{i}")
    ax.set_xticks(range(len(tasks)))
    ax.set_xticklabels(tasks)
    ax.set_ylabel("dev score, % (official metric)")
    ax.set_title("Fine-tuning: mean ± std over seeds")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
