"""Vectorized character n-gram hashing, MinHash signatures and LSH banding (numpy).

* :func:`ngram_hashes` — 64-bit polynomial rolling hashes of all character n-grams of a text
  (uint64 wrap-around arithmetic, then a splitmix64 finalizer), computed in ``n`` array ops.
* :class:`Batch` — hashes of many documents at once (the per-document numpy call overhead
  would otherwise dominate).
* :class:`MinHasher` — one-permutation MinHash with rotation densification: the n-gram hashes
  are spread into ``num_perm`` buckets by their top bits and each bucket keeps its minimum, so a
  signature costs one sort of the document's n-grams instead of ``num_perm`` hash passes. Empty
  buckets borrow the next non-empty bucket's value (plus an offset), which keeps the estimator
  unbiased for short documents (Shrivastava & Li, 2014). A signature is ``num_perm`` uint32.
* :func:`lsh_params` — bands ``b`` and rows ``r`` (``b * r <= num_perm``) minimizing the weighted
  false-positive + false-negative probability mass around the Jaccard threshold, as in
  datasketch's ``MinHashLSH``.
* :func:`band_hashes` — one uint64 per band.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

_P = np.uint64(1099511628211)  # FNV prime: odd multiplier of the rolling hash
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31 = np.uint64(30), np.uint64(27), np.uint64(31)


def codepoints(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)


def _mix(h: np.ndarray) -> np.ndarray:
    h = h ^ (h >> _S30)
    h = h * _M1
    h = h ^ (h >> _S27)
    h = h * _M2
    return h ^ (h >> _S31)


def ngram_hashes(cps: np.ndarray, n: int, salt: int = 0) -> np.ndarray:
    """uint64 hashes of all length-``n`` windows of ``cps`` (empty if shorter than n)."""
    m = len(cps) - n + 1
    if m <= 0:
        return np.empty(0, dtype=np.uint64)
    with np.errstate(over="ignore"):
        h = cps[:m].copy()
        for j in range(1, n):
            h *= _P
            h += cps[j: j + m]
        return _mix(h + np.uint64(n + (salt << 8)))


class Batch:
    """Many documents hashed together: one concatenated code point array, windows that cross
    a document boundary are masked out. Per-document numpy calls would cost more than the
    hashing itself."""

    MAX_DOCS = 1024

    def __init__(self, texts: list[str]) -> None:
        if len(texts) > self.MAX_DOCS:
            raise ValueError(f"at most {self.MAX_DOCS} documents per batch")
        self.n = len(texts)
        self.lens = np.fromiter((len(t) for t in texts), dtype=np.int64, count=self.n)
        self.cps = codepoints("".join(texts))
        self.ends = np.cumsum(self.lens)
        self.doc_of = np.repeat(np.arange(self.n, dtype=np.uint64), self.lens)
        self._cache: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
        self._starts: dict[tuple[int, int], np.ndarray] = {}

    def windows(self, n: int, salt: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(hashes, document index) of all length-``n`` windows inside one document."""
        if (n, salt) not in self._cache:
            h = ngram_hashes(self.cps, n, salt)
            d = self.doc_of[: len(h)]
            valid = np.arange(len(h)) + n <= self.ends[d.astype(np.int64)]
            self._cache[(n, salt)] = (h[valid], d[valid])
            self._starts[(n, salt)] = np.flatnonzero(valid)
        return self._cache[(n, salt)]

    def window_start(self, n: int, i: int, salt: int = 0) -> tuple[int, int]:
        """(document, character offset in it) of window ``i`` of :meth:`windows` (n, salt)."""
        self.windows(n, salt)
        g = int(self._starts[(n, salt)][i])
        doc = int(np.searchsorted(self.ends, g, side="right"))
        return doc, g - int(self.ends[doc] - self.lens[doc])

    def dup_fraction(self, n: int = 10) -> np.ndarray:
        """Per document: share of its n-grams that repeat an earlier one of the same document."""
        h, d = self.windows(n)
        total = np.bincount(d.astype(np.int64), minlength=self.n)
        key = (d << np.uint64(54)) | (h >> np.uint64(10))
        key.sort()
        first = np.r_[True, key[1:] != key[:-1]] if len(key) else np.zeros(0, bool)
        distinct = np.bincount((key[first] >> np.uint64(54)).astype(np.int64), minlength=self.n)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(total > 0, 1.0 - distinct / np.maximum(total, 1), 0.0)


class MinHasher:
    def __init__(self, num_perm: int = 128, ngram: int = 5, seed: int = 1) -> None:
        if num_perm & (num_perm - 1):
            raise ValueError("num_perm must be a power of two")
        self.k = num_perm
        self.logk = int(np.log2(num_perm))
        self.ngram = ngram
        self.seed = seed

    def signatures(self, batch: Batch) -> np.ndarray:
        """[n_docs, num_perm] uint32; all 0xFFFFFFFF for a document shorter than the n-gram."""
        k, n = self.k, batch.n
        h, d = batch.windows(self.ngram, self.seed)
        bucket = h >> np.uint64(64 - self.logk)
        val = (h >> np.uint64(16)) & np.uint64(0xFFFFFFFF)
        key = (d << np.uint64(self.logk + 32)) | (bucket << np.uint64(32)) | val
        key.sort()  # groups (document, bucket), smallest value first
        g = (key >> np.uint64(32)).astype(np.int64)
        first = np.r_[True, g[1:] != g[:-1]] if len(g) else np.zeros(0, bool)
        sig = np.full(n * k, -1, dtype=np.int64)
        sig[g[first]] = (key[first] & np.uint64(0xFFFFFFFF)).astype(np.int64)
        sig = sig.reshape(n, k)
        empty = sig < 0
        if empty.any():  # rotation densification: borrow the next non-empty bucket (cyclic)
            ar = np.arange(k)
            big = 4 * k
            idx = np.where(empty, big, ar[None, :])
            idx2 = np.concatenate([idx, np.where(empty, big, ar[None, :] + k)], axis=1)
            nxt = np.minimum.accumulate(idx2[:, ::-1], axis=1)[:, ::-1][:, :k]
            none = nxt >= big
            nxt = np.where(none, ar[None, :], nxt)
            donor = nxt % k
            dist = nxt - ar[None, :]
            borrowed = (np.take_along_axis(sig, donor, axis=1) + dist * 0x9E3779B1) & 0xFFFFFFFF
            sig = np.where(empty, borrowed, sig)
            sig[none] = 0xFFFFFFFF
        return sig.astype(np.uint32)

    def signature(self, text: str) -> np.ndarray:
        return self.signatures(Batch([text]))[0]


def jaccard_estimate(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(a == b))


def _integrate(f, a: float, b: float, steps: int = 200) -> float:
    xs = np.linspace(a, b, steps + 1)
    ys = f(xs)
    return float(np.sum((ys[1:] + ys[:-1]) * 0.5 * (xs[1] - xs[0])))


@lru_cache(maxsize=32)
def lsh_params(threshold: float, num_perm: int, fp_weight: float = 0.5, fn_weight: float = 0.5) -> tuple[int, int]:
    """(bands, rows) minimizing fp_weight * P(false positive) + fn_weight * P(false negative)."""
    best, best_err = (1, num_perm), float("inf")
    for b in range(1, num_perm + 1):
        for r in range(1, num_perm // b + 1):
            fp = _integrate(lambda s: 1 - (1 - s ** r) ** b, 0.0, threshold)
            fn = _integrate(lambda s: 1 - (1 - (1 - s ** r) ** b), threshold, 1.0)
            err = fp * fp_weight + fn * fn_weight
            if err < best_err:
                best, best_err = (b, r), err
    return best


def band_multipliers(rows: int, seed: int = 7) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.integers(1, 2**63 - 1, size=rows, dtype=np.uint64) | np.uint64(1))


def band_hashes(sigs: np.ndarray, bands: int, rows: int, mult: np.ndarray) -> np.ndarray:
    """[n, num_perm] uint32 signatures -> [n, bands] uint64 band keys."""
    n = sigs.shape[0]
    x = sigs[:, : bands * rows].astype(np.uint64).reshape(n, bands, rows)
    with np.errstate(over="ignore"):
        return _mix((x * mult[None, None, :]).sum(axis=2, dtype=np.uint64) + np.arange(bands, dtype=np.uint64)[None, :])
