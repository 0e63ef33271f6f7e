"""Per-example dev predictions of one fine-tuning run, in a small well-defined file, and the
per-example statistics the paired bootstrap (:mod:`cmedbert.finetune.significance`) needs.

File: ``<seed folder>/dev_predictions.jsonl.gz`` (gzip, UTF-8 JSON lines):

* line 1, a header: ``{"format": "cmedbert-predictions/1", "task", "metric", "split": "dev",
  "n": N, "data": {dev file name: sha256}}``;
* then one line per reported dev example, in dev order:
  ``{"id": ID, "gold": G, "pred": P}``. ``ID`` is the record's ``id`` (or, for tasks the official
  checker matches by text, the first 16 hex digits of the text's sha1) plus ``#k`` for its k-th
  repetition. For classification ``G``/``P`` are label strings; for CMeEE lists of
  ``[start_idx, end_idx, type]``; for CMeIE lists of normalized ``[subject, predicate, object]``;
  for CHIP-CDN lists of names.

Two runs are paired example by example through ``id``; runs scored on different dev data
(different ids or order) are refused.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from cmedbert.errors import CmedbertError
from cmedbert.finetune.tasks import TaskSpec, get_task, record_keys

FORMAT = "cmedbert-predictions/1"
FILE_NAME = "dev_predictions.jsonl.gz"


def example_ids(spec: TaskSpec, records: list[dict[str, Any]]) -> list[str]:
    out = []
    for (key, occ), _ in zip(record_keys(spec, records), records):
        k = key if spec.key == "id" else hashlib.sha1(key.encode("utf-8")).hexdigest()[:16]
        out.append(f"{k}#{occ}" if occ else k)
    return out


def _compact(spec: TaskSpec, value: Any) -> Any:
    from cmedbert.finetune.metrics import target_items

    if spec.kind in ("cls", "pair"):
        return value
    return sorted(list(x) if isinstance(x, tuple) else x for x in target_items(spec, value))


def write_predictions(path: Path, spec: TaskSpec, gold_records: list[dict[str, Any]],
                      pred_records: list[dict[str, Any]], data: dict[str, str] | None = None) -> Path:
    """Write the dev predictions (``pred_records`` in the same order as ``gold_records``)."""
    if len(gold_records) != len(pred_records):
        raise ValueError(f"{len(pred_records)} predictions for {len(gold_records)} dev records")
    header = {"format": FORMAT, "task": spec.name, "metric": spec.metric, "split": "dev", "n": len(gold_records),
              "data": data or {}}
    lines = [json.dumps(header, ensure_ascii=False)]
    for i, g, p in zip(example_ids(spec, gold_records), gold_records, pred_records):
        lines.append(json.dumps({"id": i, "gold": _compact(spec, g[spec.target]), "pred": _compact(spec, p[spec.target])},
                                ensure_ascii=False))
    # no name, mtime=0: the same predictions give the same bytes
    with open(path, "wb") as raw, gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as fh:
        fh.write(("\n".join(lines) + "\n").encode("utf-8"))
    return path


def read_predictions(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(header, example rows) of a predictions file; errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise CmedbertError(f"predictions file not found: {path}")
    try:
        text = gzip.decompress(path.read_bytes()).decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CmedbertError(f"{path}: not a gzip-compressed UTF-8 predictions file ({exc})") from None
    rows = []
    for lineno, line in enumerate(text.splitlines(), 1):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise CmedbertError(f"{path}: line {lineno}: invalid JSON: {exc.msg}") from None
    if not rows or not isinstance(rows[0], dict) or rows[0].get("format") != FORMAT:
        raise CmedbertError(f"{path}: line 1: not a {FORMAT} header")
    header, examples = rows[0], rows[1:]
    if len(examples) != header.get("n"):
        raise CmedbertError(f"{path}: header says {header.get('n')} examples, file has {len(examples)}")
    for lineno, ex in enumerate(examples, 2):
        if not isinstance(ex, dict) or not {"id", "gold", "pred"} <= set(ex):
            raise CmedbertError(f"{path}: line {lineno}: needs id, gold and pred")
    return header, examples


def example_stats(task: str, examples: list[dict[str, Any]]) -> np.ndarray:
    """[n, k] per-example sufficient statistics of ``task``'s official metric (see significance)."""
    spec = get_task(task)
    if spec.metric == "accuracy":
        return np.array([[float(ex["gold"] == ex["pred"]), 1.0] for ex in examples]).reshape(-1, 2)
    if spec.metric == "macro_f1":
        labels = list(spec.labels)
        index = {lab: i for i, lab in enumerate(labels)}
        n_lab = len(labels)
        out = np.zeros((len(examples), 3 * n_lab))
        for r, ex in enumerate(examples):
            g, p = index[ex["gold"]], index.get(ex["pred"]) if ex["pred"] is not None else None
            out[r, n_lab + g] = 1
            if p is not None:
                out[r, 2 * n_lab + p] = 1
                if p == g:
                    out[r, g] = 1
        return out
    out = np.zeros((len(examples), 3))
    for r, ex in enumerate(examples):
        gs = {tuple(x) if isinstance(x, list) else x for x in ex["gold"]}
        ps = {tuple(x) if isinstance(x, list) else x for x in ex["pred"]}
        out[r] = (len(gs & ps), len(gs), len(ps))
    return out


def load_run_stats(path: Path) -> tuple[dict[str, Any], list[str], np.ndarray]:
    """(header, example ids, [n, k] statistics) of one run's predictions file."""
    header, examples = read_predictions(path)
    return header, [ex["id"] for ex in examples], example_stats(header["task"], examples)
