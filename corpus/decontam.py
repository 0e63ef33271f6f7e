"""Decontamination against evaluation sets (CBLUE dev/test files).

Every evaluation text (string values of the configured JSON keys) contributes the hashes of
all its character ``ngram``-grams (default 13); a text shorter than ``ngram`` but at least
``min_chars`` long contributes itself as a whole (short CBLUE queries such as KUAKE-QIC would
otherwise never match). Texts are normalized with the corpus normalizer first, so the
comparison is on equal terms. A pretraining document that contains any of these n-grams is
dropped as ``decontaminated`` and counted per task (the task of the first matching n-gram); the
drop log records the task and the matched text.

The index is a sorted uint64 array of n-gram hashes plus a parallel uint16 task id array
(10 bytes per distinct n-gram), and a dict for the short texts; it is built once in the parent
and shared with the worker processes by fork (copy-on-write). Documents are checked in batches
(one searchsorted over all windows of ~1000 documents).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from cmedbert.errors import CmedbertError
from cmedbert.corpus.clean import normalize
from cmedbert.corpus.hashing import Batch


def task_name(path: Path, task_from: str) -> str:
    if task_from == "parent":
        return path.parent.name
    return re.sub(r"[_-](dev|test|train|valid|val)$", "", path.stem, flags=re.I)


def _strings(obj: Any, fields: set[str]) -> Iterator[str]:
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k in fields and isinstance(v, str):
                yield v
            elif isinstance(v, (dict, list)):
                yield from _strings(v, fields)
    elif isinstance(obj, list):
        for v in obj:
            yield from _strings(v, fields)


def eval_texts(path: Path, fields: list[str]) -> Iterator[str]:
    """String values of ``fields`` in a JSON array / JSON object / JSON lines file."""
    raw = path.read_bytes().decode("utf-8-sig", errors="strict") if path.stat().st_size else ""
    stripped = raw.lstrip()
    fset = set(fields)
    if stripped.startswith(("[", "{")):
        try:
            yield from _strings(json.loads(stripped), fset)
            return
        except json.JSONDecodeError:
            if stripped.startswith("["):
                raise CmedbertError(f"{path}: decontamination file is not valid JSON") from None
    for n, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        try:
            yield from _strings(json.loads(line), fset)
        except json.JSONDecodeError as exc:
            raise CmedbertError(f"{path}:{n}: decontamination file has invalid JSON ({exc.msg})") from None


class Decontaminator:
    def __init__(self, files: list[Path], ngram: int = 13, min_chars: int = 10,
                 fields: list[str] | None = None, task_from: str = "parent", t2s: bool = True) -> None:
        self.ngram = ngram
        self.min_chars = min_chars
        self.tasks: list[str] = []
        self.eval_texts = 0
        long_h: list[np.ndarray] = []
        long_t: list[np.ndarray] = []
        # Short texts (min_chars <= len < ngram): keyed by the hash of their first min_chars
        # characters, confirmed by a substring test.
        self.short: dict[int, list[tuple[str, int]]] = {}
        for path in files:
            task = task_name(path, task_from)
            if task not in self.tasks:
                self.tasks.append(task)
            tid = self.tasks.index(task)
            texts = [t for t in (normalize(x, t2s).replace("\n", "") for x in eval_texts(path, fields or ["text"]))
                     if len(t) >= min_chars]
            self.eval_texts += len(texts)
            long = [t for t in texts if len(t) >= ngram]
            for i in range(0, len(long), Batch.MAX_DOCS):
                h, _ = Batch(long[i: i + Batch.MAX_DOCS]).windows(ngram)
                long_h.append(h)
                long_t.append(np.full(len(h), tid, dtype=np.uint16))
            short = sorted({t for t in texts if len(t) < ngram})
            for i in range(0, len(short), Batch.MAX_DOCS):
                chunk = short[i: i + Batch.MAX_DOCS]
                h, d = Batch(chunk).windows(min_chars)
                first = np.r_[True, d[1:] != d[:-1]]  # the first window of each text = its prefix
                for key, doc in zip(h[first].tolist(), d[first].tolist()):
                    entries = self.short.setdefault(key, [])
                    if all(t != chunk[doc] for t, _ in entries):
                        entries.append((chunk[doc], tid))
        h = np.concatenate(long_h) if long_h else np.empty(0, np.uint64)
        t = np.concatenate(long_t) if long_t else np.empty(0, np.uint16)
        order = np.argsort(h, kind="stable")
        h, t = h[order], t[order]
        keep = np.r_[True, h[1:] != h[:-1]] if len(h) else np.zeros(0, bool)
        self.table, self.table_tasks = h[keep], t[keep]
        self.short_keys = np.array(sorted(self.short), dtype=np.uint64)
        # A one-hash Bloom-style bitmap (>= 16 bits per entry, false positives ~6%) in front of
        # the binary search: one random memory access per window instead of ~20.
        entries = max(len(self.table) + len(self.short_keys), 1)
        self.bits = min(max(int(np.ceil(np.log2(entries * 16))), 16), 32)
        self.bitmap = np.zeros(1 << (self.bits - 3), dtype=np.uint8)
        for keys in (self.table, self.short_keys):
            idx = keys >> np.uint64(64 - self.bits)
            np.bitwise_or.at(self.bitmap, (idx >> np.uint64(3)).astype(np.int64),
                             (np.uint8(1) << (idx & np.uint64(7)).astype(np.uint8)))

    @property
    def size(self) -> int:
        return len(self.table) + len(self.short_keys)

    def _lookup(self, table: np.ndarray, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(positions in h that occur in table, their index in table)."""
        if len(table) == 0 or len(h) == 0:
            return np.empty(0, np.int64), np.empty(0, np.int64)
        idx = h >> np.uint64(64 - self.bits)
        maybe = np.flatnonzero((self.bitmap[(idx >> np.uint64(3)).astype(np.int64)] >> (idx & np.uint64(7)).astype(np.uint8)) & 1)
        if len(maybe) == 0:
            return maybe, maybe
        pos = np.searchsorted(table, h[maybe])
        pos[pos == len(table)] = 0
        ok = table[pos] == h[maybe]
        return maybe[ok], pos[ok]

    def match_batch(self, batch: Batch, texts: list[str]) -> list[tuple[str, str] | None]:
        """Per document of the batch: (task, matched evaluation text or n-gram) of its first
        match, or None."""
        out: list[tuple[str, str] | None] = [None] * batch.n
        h, d = batch.windows(self.ngram)
        hit, where = self._lookup(self.table, h)
        for i, w in zip(hit, where):  # windows are in document order: first hit per doc wins
            doc = int(d[i])
            if out[doc] is None:
                _, off = batch.window_start(self.ngram, int(i))
                out[doc] = (self.tasks[int(self.table_tasks[w])], texts[doc][off: off + self.ngram])
        if self.short:
            h, d = batch.windows(self.min_chars)
            hit, where = self._lookup(self.short_keys, h)
            for i, w in zip(hit, where):
                doc = int(d[i])
                if out[doc] is None:
                    for text, tid in self.short[int(self.short_keys[w])]:
                        if text in texts[doc]:
                            out[doc] = (self.tasks[tid], text)
                            break
        return out

    def match(self, text: str) -> tuple[str, str] | None:
        return self.match_batch(Batch([text]), [text])[0]
