"""Official CBLUE metrics, on records in the official file formats.

``score(task, gold_records, pred_records)`` returns ``{"metric": NAME, "value": FLOAT, ...}`` with
the task's primary metric plus supporting numbers (precision, recall, counts).

Matching follows the official checkers: classification tasks match records by ``id``; CMeEE,
CMeIE and CHIP-CDN by ``text`` (a repeated id/text pairs up by order of occurrence). A gold
record without a prediction counts as wrong (classification) or as all-missed (F1 tasks);
predictions for records not in the gold file are ignored and counted in ``n_unmatched_pred``.

* accuracy (KUAKE-QIC/QTR/QQR): correct / gold records.
* macro-F1 (CHIP-CTC, CHIP-STS): sklearn ``precision_recall_fscore_support(average="macro")``:
  the mean of per-label F1 over every label seen in gold or predictions (0 where undefined).
* CMeEE: strict micro-F1 over (start_idx, end_idx, type) sets per text.
* CMeIE: micro-F1 over (subject, predicate, object) per text, as the official script does it:
  subject/object lower-cased, surrounding book-title marks 《》 removed, duplicates dropped.
* CHIP-CDN: micro-F1 over the sets of normalized names (``"##"``-split) per text.
"""

from __future__ import annotations

from typing import Any

from cmedbert.errors import CmedbertError
from cmedbert.finetune.tasks import TaskSpec, check_target, get_task, record_keys, split_names


def score(task: str, gold_records: list[dict[str, Any]], pred_records: list[dict[str, Any]],
          gold_name: str = "gold", pred_name: str = "pred") -> dict[str, Any]:
    spec = get_task(task)
    for name, records in ((gold_name, gold_records), (pred_name, pred_records)):
        for i, rec in enumerate(records):
            if not isinstance(rec, dict) or spec.key not in rec:
                fields = sorted(rec) if isinstance(rec, dict) else type(rec).__name__
                raise CmedbertError(f"{name}: record {i} has no {spec.key!r} field (fields: {fields}); "
                                    f"is it a {spec.name} file?")
            check_target(spec, rec, f"{name}: record {i}")
    gold = dict(zip(record_keys(spec, gold_records), (r[spec.target] for r in gold_records)))
    pred = dict(zip(record_keys(spec, pred_records), (r[spec.target] for r in pred_records)))
    if spec.kind in ("cls", "pair"):
        out = _classification(spec, gold, pred)
    else:
        out = _set_f1(spec, gold, pred)
    out["n_gold"] = len(gold)
    out["n_missing_pred"] = sum(1 for k in gold if k not in pred)
    out["n_unmatched_pred"] = sum(1 for k in pred if k not in gold)
    return out


def _classification(spec: TaskSpec, gold: dict, pred: dict) -> dict[str, Any]:
    pairs = [(g, pred.get(k)) for k, g in gold.items()]
    if spec.metric == "accuracy":
        value = sum(g == p for g, p in pairs) / len(pairs) if pairs else 0.0
        return {"metric": "accuracy", "value": value}
    value, per_label = macro_f1(pairs)
    return {"metric": "macro_f1", "value": value, "per_label_f1": per_label}


def macro_f1(pairs: list[tuple[str, str | None]]) -> tuple[float, dict[str, float]]:
    """Macro-F1 over labels present in gold or predictions (a missing prediction, None, only
    costs recall)."""
    labels = sorted({g for g, _ in pairs} | {p for _, p in pairs if p is not None})
    per = {}
    for lab in labels:
        tp = sum(1 for g, p in pairs if g == lab and p == lab)
        n_pred = sum(1 for _, p in pairs if p == lab)
        n_gold = sum(1 for g, _ in pairs if g == lab)
        prec = tp / n_pred if n_pred else 0.0
        rec = tp / n_gold if n_gold else 0.0
        per[lab] = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
    return (sum(per.values()) / len(per) if per else 0.0), per


def target_items(spec: TaskSpec, value: Any) -> set:
    if spec.kind == "ner":
        return {(e["start_idx"], e["end_idx"], e["type"]) for e in value}
    if spec.kind == "ie":
        return {(_norm_ie(s["subject"]), s["predicate"], _norm_ie(s["object"]["@value"])) for s in value}
    return set(split_names(value))


def _norm_ie(name: str) -> str:
    name = name.lower()
    if name.startswith("《") and name.endswith("》"):
        name = name[1:-1]
    return name


def _set_f1(spec: TaskSpec, gold: dict, pred: dict) -> dict[str, Any]:
    tp = n_gold = n_pred = 0
    for k, g in gold.items():
        gs = target_items(spec, g)
        ps = target_items(spec, pred[k]) if k in pred else set()
        tp += len(gs & ps)
        n_gold += len(gs)
        n_pred += len(ps)
    p = tp / n_pred if n_pred else 0.0
    r = tp / n_gold if n_gold else 0.0
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    return {"metric": "micro_f1", "value": f1, "precision": p, "recall": r,
            "tp": tp, "n_gold_items": n_gold, "n_pred_items": n_pred}


def score_files(task: str, gold_path: str, pred_path: str) -> dict[str, Any]:
    """Score two files of ``task`` (JSON array or JSON lines)."""
    from cmedbert.finetune.tasks import read_records

    return score(task, read_records(gold_path), read_records(pred_path),
                 gold_name=str(gold_path), pred_name=str(pred_path))
