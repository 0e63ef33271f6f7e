"""Paired bootstrap of the difference between two fine-tuned arms on one task.

Every CBLUE metric is a function of per-example *sufficient statistics* summed over the dev set
(:mod:`cmedbert.finetune.predictions` computes them from a run's dev predictions):

* accuracy: ``[correct, 1]`` -> sum(correct) / n;
* micro-F1 (CMeEE, CMeIE, CHIP-CDN): ``[tp, n_gold, n_pred]`` per *document* -> corpus-level F1
  (resampling documents and recomputing F1, not averaging per-document F1s);
* macro-F1 (CHIP-CTC, CHIP-STS): ``[tp_l, gold_l, pred_l]`` for each label l -> mean F1 over the
  labels present in gold or predictions of the resample (as :func:`metrics.macro_f1` does).

A resample draws dev examples with replacement (multinomial weights, the same draw for both arms:
that is the pairing) and, independently for each arm, its fine-tuning seeds with replacement; an
arm's score on the resample is the mean over its drawn seeds, so seed-to-seed variance widens the
interval as it should. ``delta = score(a) - score(b)``; the 95 % CI is the percentile interval of
the resampled deltas; the two-sided p-value is ``min(1, 2 * min(P(d* <= 0), P(d* >= 0)))`` with
the usual +1 correction, so it is never 0 with a finite number of resamples.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from cmedbert.errors import CmedbertError

# the columns each metric kind needs per example and how the summed columns become the metric
MetricFn = Callable[[np.ndarray], np.ndarray]


def accuracy_from_sums(s: np.ndarray) -> np.ndarray:
    """``s[..., 0]`` correct, ``s[..., 1]`` examples."""
    return np.divide(s[..., 0], s[..., 1], out=np.zeros(s.shape[:-1]), where=s[..., 1] > 0)


def micro_f1_from_sums(s: np.ndarray) -> np.ndarray:
    """``s[..., 0]`` true positives, ``s[..., 1]`` gold items, ``s[..., 2]`` predicted items."""
    tp, gold, pred = s[..., 0], s[..., 1], s[..., 2]
    denom = gold + pred
    return np.divide(2 * tp, denom, out=np.zeros(s.shape[:-1]), where=denom > 0)


def macro_f1_from_sums(s: np.ndarray) -> np.ndarray:
    """``s[..., 3L]`` = tp per label, gold count per label, predicted count per label."""
    n_labels = s.shape[-1] // 3
    tp, gold, pred = s[..., :n_labels], s[..., n_labels:2 * n_labels], s[..., 2 * n_labels:]
    denom = gold + pred
    f1 = np.divide(2 * tp, denom, out=np.zeros(tp.shape), where=denom > 0)  # == 2PR/(P+R)
    present = denom > 0
    n_present = present.sum(-1)
    return np.divide((f1 * present).sum(-1), n_present, out=np.zeros(s.shape[:-1]), where=n_present > 0)


METRIC_FNS: dict[str, MetricFn] = {"accuracy": accuracy_from_sums, "micro_f1": micro_f1_from_sums,
                                   "macro_f1": macro_f1_from_sums}


@dataclass
class Comparison:
    a: str
    b: str
    task: str
    metric: str
    delta: float
    ci_low: float
    ci_high: float
    p: float
    n_examples: int
    n_seeds: int

    @property
    def significant(self) -> bool:
        """The 95 % interval excludes 0."""
        return self.ci_low > 0 or self.ci_high < 0

    def row(self) -> dict:
        """The comparisons.jsonl row (exactly these keys)."""
        return {"a": self.a, "b": self.b, "task": self.task, "metric": self.metric, "delta": self.delta,
                "ci_low": self.ci_low, "ci_high": self.ci_high, "p": self.p, "n_examples": self.n_examples,
                "n_seeds": self.n_seeds}


def score_from_stats(metric: str, stats: np.ndarray) -> float:
    """The metric of one run on the whole dev set (equals the official score)."""
    return float(METRIC_FNS[metric](stats.sum(0).astype(np.float64)))


def _per_seed_resampled(metric: str, stats: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """[R, S] metric of each seed on each resample. ``stats`` [S, n, k], ``weights`` [R, n]."""
    sums = np.tensordot(weights, stats.astype(np.float64), axes=([1], [1]))  # BLAS, unlike einsum
    return METRIC_FNS[metric](sums)


def resampled_scores(metric: str, stats_by_arm: dict[str, np.ndarray], n_resamples: int = 2000, seed: int = 0,
                     resample_seeds: bool = True, chunk: int = 250) -> dict[str, np.ndarray]:
    """arm -> [n_resamples] scores, every arm scored on the *same* example resamples (the pairing),
    each arm's seeds drawn independently. ``stats_by_arm[arm]`` is [S, n, k] over the same examples.
    Computed once per arm, so comparing every pair of arms costs no more than scoring each arm."""
    if metric not in METRIC_FNS:
        raise CmedbertError(f"no bootstrap for metric {metric!r} (known: {', '.join(METRIC_FNS)})")
    arrays = {a: np.asarray(v) for a, v in stats_by_arm.items()}
    shapes = {a.shape[1:] for a in arrays.values()}
    if any(v.ndim != 3 for v in arrays.values()) or len(shapes) != 1:
        raise CmedbertError(f"paired bootstrap needs [seeds, examples, stats] arrays over the same examples, "
                            f"got {[v.shape for v in arrays.values()]}")
    n = next(iter(shapes))[0]
    if n == 0 or any(len(v) == 0 for v in arrays.values()):
        raise CmedbertError("paired bootstrap needs at least one example and one seed per arm")
    rng = np.random.default_rng(seed)
    seed_rngs = {a: np.random.default_rng([seed, i + 1]) for i, a in enumerate(arrays)}
    out: dict[str, list[np.ndarray]] = {a: [] for a in arrays}
    for start in range(0, n_resamples, chunk):
        r = min(chunk, n_resamples - start)
        weights = rng.multinomial(n, np.full(n, 1.0 / n), size=r).astype(np.float64)  # shared by every arm
        for a, stats in arrays.items():
            out[a].append(_seed_mean(_per_seed_resampled(metric, stats, weights), seed_rngs[a], resample_seeds))
    return {a: np.concatenate(v) for a, v in out.items()}


def delta_interval(deltas: np.ndarray) -> tuple[float, float, float]:
    """(ci_low, ci_high, p): the 95 % percentile interval of resampled deltas and the two-sided
    p-value ``min(1, 2 * min(P(d* <= 0), P(d* >= 0)))`` with the +1 correction."""
    lo, hi = np.percentile(deltas, [2.5, 97.5])
    k = len(deltas) + 1
    p = min(1.0, 2 * min((np.sum(deltas <= 0) + 1) / k, (np.sum(deltas >= 0) + 1) / k))
    return float(lo), float(hi), float(p)


def observed_score(metric: str, stats: np.ndarray) -> float:
    """Mean over seeds of the metric on the whole dev set."""
    return float(np.mean([score_from_stats(metric, s) for s in np.asarray(stats)]))


def paired_bootstrap(metric: str, stats_a: np.ndarray, stats_b: np.ndarray, n_resamples: int = 2000,
                     seed: int = 0, resample_seeds: bool = True, chunk: int = 250) -> tuple[float, float, float, float]:
    """(delta, ci_low, ci_high, p) of ``metric(a) - metric(b)``, pooled over seeds.

    ``stats_a`` [S_a, n, k] and ``stats_b`` [S_b, n, k]: per seed, per dev example (the same
    examples in the same order for both arms), the metric's sufficient statistics."""
    res = resampled_scores(metric, {"a": stats_a, "b": stats_b}, n_resamples, seed, resample_seeds, chunk)
    delta = observed_score(metric, stats_a) - observed_score(metric, stats_b)
    return (float(delta), *delta_interval(res["a"] - res["b"]))


def _seed_mean(per_seed: np.ndarray, rng: np.random.Generator, resample_seeds: bool) -> np.ndarray:
    """[R] mean over seeds; with ``resample_seeds`` the seeds of each resample are drawn with replacement."""
    r, s = per_seed.shape
    if not resample_seeds or s == 1:
        return per_seed.mean(1)
    pick = rng.integers(0, s, size=(r, s))
    return np.take_along_axis(per_seed, pick, 1).mean(1)


def score_interval(metric: str, stats: np.ndarray, n_resamples: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """(mean score over seeds, 95 % low, 95 % high) of one arm, with the resampling of
    :func:`resampled_scores` (examples, then seeds), for plotting a score with its interval."""
    scores = resampled_scores(metric, {"x": stats}, n_resamples, seed)["x"]
    lo, hi = np.percentile(scores, [2.5, 97.5])
    return observed_score(metric, stats), float(lo), float(hi)


def run_stats_by_checkpoint(rows: Sequence[dict], base_dir) -> dict[tuple[str, str], dict]:
    """(checkpoint, task) -> seed -> (example ids, [n, k] statistics) from result rows."""
    from pathlib import Path

    from cmedbert.finetune.predictions import load_run_stats
    from cmedbert.finetune.tasks import TASKS

    runs: dict[tuple[str, str], dict] = {}
    for r in rows:
        task = r.get("task")
        if r.get("split") != "dev" or task not in TASKS or r.get("metric") != TASKS[task].metric:
            continue
        if not r.get("predictions"):
            raise CmedbertError(f"result row {r.get('checkpoint')}/{task}/seed {r.get('seed')} names no predictions "
                                f"file (fine-tuned before per-example predictions were saved: run it again)")
        _, ids, stats = load_run_stats(Path(base_dir) / r["predictions"])
        runs.setdefault((r["checkpoint"], task), {})[r["seed"]] = (ids, stats)
    return runs


def compare_pair(a: str, b: str, task: str, metric: str, stats_a: Sequence[np.ndarray], stats_b: Sequence[np.ndarray],
                 n_resamples: int = 2000, seed: int = 0) -> Comparison:
    """One (a, b, task) comparison from per-seed statistic arrays ([n, k] each)."""
    sa, sb = np.stack(list(stats_a)), np.stack(list(stats_b))
    delta, lo, hi, p = paired_bootstrap(metric, sa, sb, n_resamples=n_resamples, seed=seed)
    return Comparison(a, b, task, metric, delta, lo, hi, p, n_examples=int(sa.shape[1]),
                      n_seeds=int(min(len(sa), len(sb))))


def arm_pairs(arms: Sequence[str]) -> list[tuple[str, str]]:
    """Every unordered pair once, as (a, b) with ``b`` the arm listed *earlier* (so with the
    untrained floor listed first, every delta reads "this arm minus the floor")."""
    return [(arms[j], arms[i]) for i in range(len(arms)) for j in range(i + 1, len(arms))]


def describe(c: Comparison, percent: bool = True) -> str:
    """One sentence in words."""
    k = 100 if percent else 1
    unit = " points" if percent else ""
    if c.significant:
        better, worse = (c.a, c.b) if c.delta > 0 else (c.b, c.a)
        return (f"{c.task}: **{better}** is better than {worse} by {k * abs(c.delta):.2f}{unit} "
                f"(95 % CI {k * c.ci_low:+.2f} to {k * c.ci_high:+.2f}, p = {c.p:.3g}).")
    return (f"{c.task}: {c.a} vs {c.b} is not significant (delta {k * c.delta:+.2f}{unit}, "
            f"95 % CI {k * c.ci_low:+.2f} to {k * c.ci_high:+.2f}, p = {c.p:.3g}).")


def comparisons_from_results(rows: Sequence[dict], base_dir, arms: Sequence[str] | None = None,
                             n_resamples: int = 2000, seed: int = 0) -> list[Comparison]:
    """Every (a, b, task) comparison of the arms in fine-tuning result rows.

    ``rows`` are results.jsonl rows; the primary-metric dev row of every (arm, task, seed) names its
    predictions file (relative to ``base_dir``, the fine-tuning folder). ``arms`` fixes the order
    (default: order of first appearance). A task is compared only between arms that have it."""
    from cmedbert.finetune.tasks import TASK_ORDER, TASKS

    runs = run_stats_by_checkpoint(rows, base_dir)  # (arm, task) -> seed -> (ids, stats)
    order = list(arms) if arms is not None else list(dict.fromkeys(a for a, _ in runs))
    out = []
    for task in TASK_ORDER:
        present = [x for x in order if (x, task) in runs]
        if len(present) < 2:
            continue
        ids = next(iter(runs[(present[0], task)].values()))[0]
        for arm in present:
            for s, (other, _) in runs[(arm, task)].items():
                if other != ids:
                    raise CmedbertError(f"{task}: {arm} seed {s} was scored on other dev examples than {present[0]}; "
                                        f"a paired comparison needs the same dev data")
        metric = TASKS[task].metric
        stats = {arm: np.stack([v[1] for _, v in sorted(runs[(arm, task)].items())]) for arm in present}
        boot = resampled_scores(metric, stats, n_resamples=n_resamples, seed=seed)
        for a, b in arm_pairs(present):
            lo, hi, p = delta_interval(boot[a] - boot[b])
            out.append(Comparison(a, b, task, metric, observed_score(metric, stats[a]) - observed_score(metric, stats[b]),
                                  lo, hi, p, n_examples=len(ids), n_seeds=int(min(len(stats[a]), len(stats[b])))))
    return out
