"""Fine-tuning results: read and validate ``results.jsonl`` rows, aggregate over seeds, CBLUE
average, leaderboard tables. The one place this is done: ``cmedbert finetune table``, compare's
report and publish's model card all use it.

A row is ``{checkpoint, task, seed, split, metric, value, config_hash}`` (written by
``cmedbert finetune``). Reading is strict: a line that is not JSON, lacks a key or has a value that
is not a finite number is an error naming ``file:line``. The same (checkpoint, task, split, metric,
seed, config_hash) read twice (a run's own results.jsonl and a sweep file) counts once, the last
one read winning. Of a learning-rate grid only the rows of the learning rate chosen on the
validation split count (:func:`cmedbert.finetune.selection.select_rows`). Seeds aggregate to mean,
sample std and n.

Leaderboards use only dev rows of each task's primary metric, in percent (as CBLUE reports them).
The CBLUE average is the mean of the per-task means over the tasks a checkpoint has; it is marked
with ``*`` when that is not every task in the table.
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from cmedbert.artifact import iter_jsonl
from cmedbert.errors import CmedbertError
from cmedbert.finetune.selection import select_rows
from cmedbert.finetune.tasks import TASK_ORDER, TASKS

REQUIRED = ("checkpoint", "task", "seed", "split", "metric", "value")
RESULTS_FILE = "results.jsonl"


# ---------------------------------------------------------------------------- reading

def check_row(row: Any, where: str) -> dict[str, Any]:
    """``row`` if it is a valid result row, else a CmedbertError starting with ``where`` (file:line)."""
    if not isinstance(row, dict):
        raise CmedbertError(f"{where}: a result row must be a JSON object, got {type(row).__name__}")
    missing = [k for k in REQUIRED if k not in row]
    if missing:
        raise CmedbertError(f"{where}: result row lacks {', '.join(missing)}")
    value = row["value"]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise CmedbertError(f"{where}: result value {value!r} is not a finite number")
    return row


def read_rows(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    """Every row of the given results.jsonl files (a folder means its results.jsonl), validated."""
    rows = []
    for path in paths:
        path = Path(path)
        if path.is_dir():
            path = path / RESULTS_FILE
        if not path.is_file():
            raise CmedbertError(f"results file not found: {path}")
        rows += [check_row(row, f"{path}:{lineno}") for lineno, row in iter_jsonl(path)]
    return rows


def dedupe(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (checkpoint, task, split, metric, seed, config_hash); the last one wins."""
    seen: dict[tuple, dict[str, Any]] = {}
    for r in rows:
        seen[(r["checkpoint"], r["task"], r["split"], r["metric"], r["seed"], r.get("config_hash"))] = r
    return list(seen.values())


def primary(rows: Iterable[dict[str, Any]], split: str = "dev") -> list[dict[str, Any]]:
    """Rows of ``split`` with their task's primary (official) metric."""
    return [r for r in rows if r["split"] == split and r["task"] in TASKS and r["metric"] == TASKS[r["task"]].metric]


# ---------------------------------------------------------------------------- aggregation

@dataclass
class SeedStats:
    values: list[float]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def std(self) -> float:
        """Sample standard deviation over seeds (0 for a single seed)."""
        return statistics.stdev(self.values) if len(self.values) > 1 else 0.0


def summarize(rows: Iterable[dict[str, Any]], keys: tuple[str, ...] = ("checkpoint", "task", "split", "metric")
              ) -> list[dict[str, Any]]:
    """Mean / std / n over seeds per group of ``keys`` (sorted); each seed counted once; of a
    learning-rate grid only the chosen learning rate.

    Returns dicts with the group keys and ``mean``, ``std``, ``n``, ``seeds``, ``config_hashes`` and
    ``official`` (every row scored on the official CBLUE files, :mod:`cmedbert.finetune.provenance`)."""
    dedup: dict[tuple, dict[str, Any]] = {}
    for r in select_rows(list(rows)):
        dedup[tuple(r[k] for k in keys) + (r["seed"], r.get("config_hash"))] = r
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in dedup.values():
        groups.setdefault(tuple(r[k] for k in keys), []).append(r)
    out = []
    for group, rs in sorted(groups.items(), key=lambda kv: [str(k) for k in kv[0]]):
        stats = SeedStats([float(r["value"]) for r in rs])
        out.append({**dict(zip(keys, group)), "mean": stats.mean, "std": stats.std, "n": stats.n,
                    "seeds": sorted({r["seed"] for r in rs}, key=str),
                    "config_hashes": sorted({str(r["config_hash"]) for r in rs if r.get("config_hash")}),
                    "official": all(bool((r.get("data") or {}).get("official")) for r in rs)})
    return out


def aggregate(rows: Iterable[dict[str, Any]]) -> dict[str, dict[str, list[float]]]:
    """checkpoint -> task -> [primary dev metric per seed] (deduplicated; of a learning-rate grid only
    the learning rate chosen on the validation split)."""
    out: dict[str, dict[str, list[float]]] = {}
    for r in dedupe(primary(select_rows(list(rows)))):
        out.setdefault(r["checkpoint"], {}).setdefault(r["task"], []).append(float(r["value"]))
    return out


def cblue_average(per_task: dict[str, list[float]]) -> float:
    """Mean over tasks of the mean over seeds (every task weighs the same, whatever its seeds)."""
    return statistics.fmean(statistics.fmean(v) for v in per_task.values())


def cblue_averages(scores: dict[str, dict[str, list[float]]]) -> dict[str, float]:
    """checkpoint -> CBLUE average, for ``aggregate``'s output."""
    return {ck: cblue_average(per) for ck, per in scores.items() if per}


# ---------------------------------------------------------------------------- tables

def _pct(values: list[float]) -> str:
    s = SeedStats(values)
    return f"{100 * s.mean:.2f}" if s.n < 2 else f"{100 * s.mean:.2f} ± {100 * s.std:.2f}"


def table_tasks(scores: dict[str, dict[str, list[float]]]) -> list[str]:
    """The tasks any checkpoint has, in CBLUE order."""
    return [t for t in TASK_ORDER if any(t in per for per in scores.values())]


def render_markdown(scores: dict[str, dict[str, list[float]]]) -> str:
    tasks = table_tasks(scores)
    header = ["checkpoint"] + [f"{t} ({TASKS[t].metric})" for t in tasks] + ["CBLUE avg", "seeds"]
    md = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for ckpt in sorted(scores):
        per = scores[ckpt]
        star = "" if all(t in per for t in tasks) else "*"
        n_seeds = sorted({len(v) for v in per.values()})
        cells = [_pct(per[t]) if t in per else "–" for t in tasks]
        md.append("| " + " | ".join([ckpt] + cells + [f"{100 * cblue_average(per):.2f}{star}",
                                                      "/".join(map(str, n_seeds))]) + " |")
    single = all(len(v) == 1 for per in scores.values() for v in per.values())
    values = "one seed (n=1), no spread shown" if single else "mean ± sample std over seeds"
    note = (f"\nValues: dev, percent, {values}. CBLUE avg = mean over the "
            f"{len(tasks)} task(s) shown (of {len(TASK_ORDER)}); * = the checkpoint lacks some of them.\n")
    return "\n".join(md) + "\n" + note


def render_csv(scores: dict[str, dict[str, list[float]]]) -> str:
    tasks = table_tasks(scores)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["checkpoint"] + [x for t in tasks for x in (f"{t}_mean", f"{t}_std", f"{t}_n")]
               + ["cblue_avg", "cblue_avg_tasks"])
    for ckpt in sorted(scores):
        per = scores[ckpt]
        row: list[Any] = [ckpt]
        for t in tasks:
            if per.get(t):
                s = SeedStats(per[t])
                row += [f"{100 * s.mean:.4f}", f"{100 * s.std:.4f}" if s.n > 1 else "0", s.n]
            else:
                row += ["", "", 0]
        w.writerow(row + [f"{100 * cblue_average(per):.4f}", sum(t in per for t in tasks)])
    return buf.getvalue()


def render(rows: list[dict[str, Any]]) -> tuple[str, str]:
    """(markdown, csv) leaderboard of result rows: checkpoints x tasks, mean ± std, CBLUE average."""
    scores = aggregate(rows)
    if not scores:
        raise CmedbertError("no dev rows with a task's primary metric in the results")
    return render_markdown(scores), render_csv(scores)
