"""Global deduplication over the per-file hash files written by pass 1.

Documents are numbered globally in (unit, row) order; the lowest number of a duplicate group is
kept. Memory: 8 bytes per document for the key being sorted (one band at a time), 1 byte of
reason and 4 bytes of ``dup_of`` per document, plus the candidate pairs; the MinHash signatures
stay on disk and only candidate pairs are read back (memory-mapped) for verification.

* exact: sort the 64-bit keys; every repeat of a key is an ``exact_duplicate`` of its first.
* near: for each LSH band, sort the band keys of the documents still alive; documents sharing a
  key become candidate pairs (first of the run, member). A pair whose signatures agree on at
  least ``threshold`` of the positions is a verified edge; connected components of verified
  edges are near-duplicate clusters, the earliest document of each is kept.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from cmedbert.corpus.config import CorpusConfig


@dataclass
class DedupResult:
    REASONS = ("kept", "exact_duplicate", "near_duplicate")
    offsets: dict[int, int]
    reason: np.ndarray  # int8 per document: index into REASONS
    dup_of: np.ndarray  # int32 per document: the kept document it duplicates, -1 if none
    targets: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))  # sorted unique dup_of values
    dropped_by_source: dict[str, Counter] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)

    def is_target(self, gidx: np.ndarray) -> np.ndarray:
        if len(self.targets) == 0:
            return np.zeros(len(gidx), dtype=bool)
        pos = np.searchsorted(self.targets, gidx)
        pos[pos == len(self.targets)] = 0
        return self.targets[pos] == gidx

    def summary(self) -> dict[str, Any]:
        return dict(self.stats)


class _UnionFind:
    """Union-find over the (few) documents that take part in verified pairs; the root of a
    component is its smallest index."""

    def __init__(self) -> None:
        self.parent: dict[int, int] = {}

    def find(self, x: int) -> int:
        p = self.parent.setdefault(x, x)
        if p != x:
            root = self.find(p)
            self.parent[x] = root
            return root
        return x

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            lo, hi = min(ra, rb), max(ra, rb)
            self.parent[hi] = lo


def unit_file(r: dict, ext: str) -> Path:
    """A pass-1 output file of one unit (``r`` is its result row; ``work`` is its folder)."""
    return Path(r["work"]) / f"unit-{r['unit']:05d}.{ext}"


def signature_lookup(cfg: CorpusConfig, live: list[dict], offsets: dict[int, int]) -> Callable[[int], np.ndarray]:
    """Global document index -> its MinHash signature, read from each unit's memory-mapped
    ``sig.bin`` (``offsets``: first global index of each unit)."""
    sig_maps = {r["unit"]: np.memmap(unit_file(r, "sig.bin"), dtype=np.uint32, mode="r",
                                     shape=(r["kept"], cfg.dedup.num_perm)) for r in live}
    starts = np.array([offsets[r["unit"]] for r in live])
    units = [r["unit"] for r in live]

    def sig(g: int) -> np.ndarray:
        i = int(np.searchsorted(starts, g, side="right")) - 1
        return sig_maps[units[i]][g - starts[i]]

    return sig


def signatures_agree(cfg: CorpusConfig, sig: Callable[[int], np.ndarray], a: int, b: int) -> bool:
    """A candidate pair is a near duplicate when its signatures agree on at least ``threshold``
    of the positions (a document shorter than one shingle has no signature and never matches)."""
    sa = sig(a)
    if (sa == 0xFFFFFFFF).all():
        return False
    return bool(np.mean(sa == sig(b)) >= cfg.dedup.threshold)


def global_dedup(cfg: CorpusConfig, results: list[dict], bands: int, rows: int) -> DedupResult:
    offsets: dict[int, int] = {}
    total = 0
    for r in results:
        offsets[r["unit"]] = total
        total += r["kept"]
    reason = np.zeros(total, dtype=np.int8)
    dup_of = np.full(total, -1, dtype=np.int32 if total < 2**31 else np.int64)
    stats: dict[str, Any] = {"documents": total, "bands": bands, "rows": rows, "threshold": cfg.dedup.threshold,
                             "ngram": cfg.dedup.ngram, "num_perm": cfg.dedup.num_perm}
    live = [r for r in results if r["kept"]]

    if cfg.dedup.exact and total:
        keys = np.concatenate([np.fromfile(unit_file(r, "exact.bin"), dtype=np.uint64) for r in live])
        order = np.argsort(keys, kind="stable")
        sk = keys[order]
        del keys
        start = np.r_[True, sk[1:] != sk[:-1]]
        first = order[np.maximum.accumulate(np.where(start, np.arange(total), 0))]
        dups = ~start
        reason[order[dups]] = 1
        dup_of[order[dups]] = first[dups]
        del order, sk, start, first, dups

    verified = 0
    candidates = 0
    if cfg.dedup.near and total:
        pairs = _candidate_pairs(live, total, bands, reason)
        candidates = len(pairs)
        sig = signature_lookup(cfg, live, offsets)
        uf = _UnionFind()
        for a, b in pairs:
            if signatures_agree(cfg, sig, int(a), int(b)):
                uf.union(int(a), int(b))
                verified += 1
        del sig  # closes the memory maps
        for node in list(uf.parent):
            root = uf.find(node)
            if root != node:
                reason[node] = 2
                dup_of[node] = root

    targets = np.unique(dup_of[dup_of >= 0]).astype(np.int64)
    by_source: dict[str, Counter] = defaultdict(Counter)
    for r in live:
        seg = reason[offsets[r["unit"]]: offsets[r["unit"]] + r["kept"]]
        for code, n in zip(*np.unique(seg[seg > 0], return_counts=True)):
            by_source[r["source"]][DedupResult.REASONS[int(code)]] += int(n)
    stats.update(candidate_pairs=candidates, verified_pairs=verified,
                 exact_duplicates=int((reason == 1).sum()), near_duplicates=int((reason == 2).sum()))
    return DedupResult(offsets, reason, dup_of, targets, dict(by_source), stats)


def _candidate_pairs(live: list[dict], total: int, bands: int, reason: np.ndarray) -> np.ndarray:
    """Unique (first, member) pairs of global indices sharing an LSH band key."""
    alive = np.flatnonzero(reason == 0)
    found: list[np.ndarray] = []
    for b in range(bands):
        keys = np.empty(total, dtype=np.uint64)
        pos = 0
        for r in live:
            n = r["kept"]
            m = np.memmap(unit_file(r, "band.bin"), dtype=np.uint64, mode="r", shape=(n, bands))
            keys[pos: pos + n] = m[:, b]
            del m
            pos += n
        k = keys[alive]
        del keys
        order = np.argsort(k, kind="stable")
        sk = k[order]
        start = np.r_[True, sk[1:] != sk[:-1]]
        if start.all():
            continue
        first = np.maximum.accumulate(np.where(start, np.arange(len(sk)), 0))
        members = np.flatnonzero(~start)
        a = alive[order[first[members]]]
        m_ = alive[order[members]]
        found.append(np.stack([a, m_], axis=1))
    if not found:
        return np.empty((0, 2), dtype=np.int64)
    pairs = np.concatenate(found)
    return np.unique(pairs, axis=0)
