"""Leaderboard from results.jsonl rows: checkpoints x tasks, mean ± std over seeds, CBLUE average.

Only dev rows of each task's primary metric are used. Values are shown in percent (as CBLUE
reports them). The same (checkpoint, task, seed, config_hash) read twice (e.g. a run's own
results.jsonl and a sweep file) counts once. The CBLUE average is the mean of the per-task means
over the tasks a checkpoint has; it is marked with ``*`` when that is not every task in the table.
"""

from __future__ import annotations

import csv
import io
import statistics
from pathlib import Path
from typing import Any, Iterable

from cmedbert.artifact import iter_jsonl
from cmedbert.errors import CmedbertError
from cmedbert.finetune.tasks import TASK_ORDER, TASKS

REQUIRED = ("checkpoint", "task", "seed", "split", "metric", "value")


def read_results(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    rows = []
    for path in paths:
        path = Path(path)
        if path.is_dir():
            path = path / "results.jsonl"
        if not path.is_file():
            raise CmedbertError(f"results file not found: {path}")
        for lineno, row in iter_jsonl(path):
            missing = [k for k in REQUIRED if not isinstance(row, dict) or k not in row]
            if missing:
                raise CmedbertError(f"{path}: line {lineno}: missing {missing}")
            rows.append(row)
    return rows


def aggregate(rows: list[dict[str, Any]]) -> dict[str, dict[str, list[float]]]:
    """checkpoint -> task -> [primary dev metric per seed] (deduplicated; of a learning-rate grid only
    the learning rate chosen on the validation split, :func:`finetune.selection.select_rows`)."""
    from cmedbert.finetune.selection import select_rows

    seen: dict[tuple, float] = {}
    for r in select_rows(rows):
        task = r["task"]
        if r["split"] != "dev" or task not in TASKS or r["metric"] != TASKS[task].metric:
            continue
        seen[(r["checkpoint"], task, r["seed"], r.get("config_hash"))] = float(r["value"])
    out: dict[str, dict[str, list[float]]] = {}
    for (ckpt, task, _seed, _h), v in seen.items():
        out.setdefault(ckpt, {}).setdefault(task, []).append(v)
    return out


def _fmt(values: list[float]) -> str:
    mean = 100 * statistics.fmean(values)
    if len(values) < 2:
        return f"{mean:.2f}"
    return f"{mean:.2f} ± {100 * statistics.stdev(values):.2f}"


def render(results_rows: list[dict[str, Any]]) -> tuple[str, str]:
    """(markdown, csv) leaderboard of ``results_rows``."""
    agg = aggregate(results_rows)
    if not agg:
        raise CmedbertError("no dev rows with a task's primary metric in the results")
    tasks = [t for t in TASK_ORDER if any(t in per for per in agg.values())]
    header = ["checkpoint"] + [f"{t} ({TASKS[t].metric})" for t in tasks] + ["CBLUE avg", "seeds"]
    md = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["checkpoint"] + [x for t in tasks for x in (f"{t}_mean", f"{t}_std", f"{t}_n")]
               + ["cblue_avg", "cblue_avg_tasks"])
    for ckpt in sorted(agg):
        per = agg[ckpt]
        means = [statistics.fmean(per[t]) for t in tasks if t in per]
        avg = statistics.fmean(means)
        star = "" if len(means) == len(tasks) else "*"
        n_seeds = sorted({len(v) for v in per.values()})
        cells = [_fmt(per[t]) if t in per else "–" for t in tasks]
        md.append("| " + " | ".join([ckpt] + cells + [f"{100 * avg:.2f}{star}", "/".join(map(str, n_seeds))]) + " |")
        row: list[Any] = [ckpt]
        for t in tasks:
            v = per.get(t)
            if v:
                row += [f"{100 * statistics.fmean(v):.4f}", f"{100 * statistics.stdev(v):.4f}" if len(v) > 1 else "0", len(v)]
            else:
                row += ["", "", 0]
        w.writerow(row + [f"{100 * avg:.4f}", len(means)])
    single = all(len(v) == 1 for per in agg.values() for v in per.values())
    values = "one seed (n=1), no spread shown" if single else "mean ± sample std over seeds"
    note = (f"\nValues: dev, percent, {values}. CBLUE avg = mean over the "
            f"{len(tasks)} task(s) shown (of {len(TASK_ORDER)}); * = the checkpoint lacks some of them.\n")
    return "\n".join(md) + "\n" + note, buf.getvalue()
