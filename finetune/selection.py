"""Model selection that never reads the reported split.

Within one fine-tuning run the best epoch and early stopping are decided on the validation split
carved from train (:mod:`cmedbert.finetune.run`). Across runs, an ``lr_grid`` gives one run per
(learning rate, seed); every run's rows are kept in results.jsonl (with ``lr``, ``lr_grid`` and
``valid_value``, its official metric on the validation split), and :func:`select_rows` keeps, per
(checkpoint, task, recipe), the rows of the learning rate with the best mean validation score over
seeds. Selection is a pure function of the rows, so a resumed or distributed sweep selects the
same way as a sequential one, and every consumer (compare, table) reads the same choice.
"""

from __future__ import annotations

from typing import Any, Iterable


def select_lr(valid_scores: dict[float, list[float]]) -> float:
    """The learning rate with the best mean validation score over seeds (the first listed on a tie).
    Only validation scores go in: the reported dev split cannot influence the choice."""
    if not valid_scores:
        raise ValueError("no learning rates to choose from")
    return max(valid_scores, key=lambda lr: sum(valid_scores[lr]) / len(valid_scores[lr]))


def _group(row: dict[str, Any]) -> tuple:
    return row.get("checkpoint"), row.get("task"), row.get("config_hash")


def chosen_lrs(rows: Iterable[dict[str, Any]]) -> dict[tuple, tuple[float, dict[float, list[float]]]]:
    """(checkpoint, task, config_hash) -> (chosen lr, {lr: [validation score per seed]}) for every
    group of rows fine-tuned with a learning-rate grid."""
    valid: dict[tuple, dict[float, dict[Any, float]]] = {}
    for r in rows:
        if len(r.get("lr_grid") or []) > 1 and r.get("valid_value") is not None:
            valid.setdefault(_group(r), {}).setdefault(float(r["lr"]), {})[r.get("seed")] = float(r["valid_value"])
    return {g: (select_lr({lr: list(v.values()) for lr, v in by_lr.items()}),
                {lr: list(v.values()) for lr, v in by_lr.items()}) for g, by_lr in valid.items()}


def select_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` with, for every learning-rate grid, only the rows of the chosen learning rate."""
    chosen = chosen_lrs(rows)
    out = []
    for r in rows:
        g = _group(r)
        if g in chosen and len(r.get("lr_grid") or []) > 1 and float(r.get("lr", -1)) != chosen[g][0]:
            continue
        out.append(r)
    return out
