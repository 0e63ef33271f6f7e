"""Whole-word boundaries: jieba segmentation (+ a medical user dictionary from the KG term lists)
aligned to token ids as per-token bit flags (``tokenizer.packed``: WORD_START, ENTITY,
ENTITY_START).

Alignment rule, per document:

* a token is WORD_START iff its first character starts a jieba word AND it starts a new
  pre-tokenized word (so the ``##`` pieces of a Latin word such as ``500`` ``##mg`` are
  continuations even where jieba would split inside the word);
* every non-initial token of a multi-character jieba word is a continuation (flag bit 0 clear);
* a token whose first character lies inside a jieba word that is a KG term (>= 2 characters) is
  ENTITY; the one starting at the term's first character is also ENTITY_START.

One :class:`Segmenter` per process: it loads the tokenizer, jieba's dictionary and the user
dictionary once (the ``Pool`` initializer of ``pack`` builds it).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from tokenizer.packed import ENTITY, ENTITY_START, WORD_START

log = logging.getLogger(__name__)


@dataclass
class Segmented:
    """A batch of documents: token ids and flags concatenated, ``lengths[i]`` tokens per doc."""

    ids: np.ndarray  # uint32
    flags: np.ndarray  # uint8
    lengths: np.ndarray  # int64
    n_words: int
    n_entities: int
    n_bytes: int


def load_backend(tokenizer_dir: str | Path) -> Any:
    """The Rust tokenizer of a folder: straight from ``tokenizer.json`` when there is one (no
    transformers import in worker processes), else via ``AutoTokenizer`` (e.g. a vocab.txt-only
    bert-base-chinese folder)."""
    path = Path(tokenizer_dir) / "tokenizer.json"
    if path.is_file():
        from tokenizers import Tokenizer

        return Tokenizer.from_file(str(path))
    from tokenizer.base import load_tokenizer

    return load_tokenizer(str(tokenizer_dir)).backend_tokenizer


def build_jieba(terms: Sequence[str]) -> Any:
    """A private jieba.Tokenizer with every KG term added as a user word (jieba suggests a
    frequency that makes the term win over its own segmentation)."""
    import jieba

    jieba.setLogLevel(logging.WARNING)
    tk = jieba.Tokenizer()
    tk.initialize()
    for t in terms:
        tk.add_word(t)
    return tk


class Segmenter:
    def __init__(self, tokenizer_dir: str | Path, terms: Sequence[str] = (), hmm: bool = True,
                 entities: bool = True):
        self.backend = load_backend(tokenizer_dir)
        self.jieba = build_jieba(terms)
        self.terms = frozenset(t for t in terms if len(t) >= 2) if entities else frozenset()
        self.hmm = hmm

    def words(self, text: str) -> list[str]:
        words = list(self.jieba.cut(text, HMM=self.hmm))
        return words

    def flags(self, text: str, offsets: Sequence[tuple[int, int]], word_ids: Sequence[int | None]) -> tuple[np.ndarray, int, int]:
        """Flags for one document's tokens; returns (flags, n_words, n_entity_spans)."""
        n_tok = len(offsets)
        if n_tok == 0:
            return np.zeros(0, np.uint8), 0, 0
        words = self.words(text)
        lens = np.fromiter(map(len, words), dtype=np.int64, count=len(words))
        starts = np.zeros(len(words), dtype=np.int64)
        if len(words) > 1:
            np.cumsum(lens[:-1], out=starts[1:])
        if int(lens.sum()) != len(text):  # jieba always covers the text; never trust it blindly
            raise RuntimeError("jieba words do not cover the text")
        tok_start = np.array(offsets, dtype=np.int64).reshape(n_tok, 2)[:, 0]
        is_word_start = np.zeros(len(text) + 1, dtype=bool)
        is_word_start[starts] = True
        try:
            wid = np.array(word_ids, dtype=np.int64)
        except TypeError:  # None for special tokens (not produced without add_special_tokens)
            wid = np.array([-1 if w is None else w for w in word_ids], dtype=np.int64)
        new_pre_word = np.ones(n_tok, dtype=bool)
        new_pre_word[1:] = wid[1:] != wid[:-1]
        out = (is_word_start[tok_start] & new_pre_word).astype(np.uint8) * WORD_START
        n_ent = 0
        if self.terms:
            ent = np.zeros(len(text) + 1, dtype=np.uint8)
            for k, w in enumerate(words):
                if w in self.terms:
                    s = starts[k]
                    ent[s:s + len(w)] = ENTITY
                    ent[s] = ENTITY | ENTITY_START
                    n_ent += 1
            if n_ent:
                out |= ent[tok_start]
        n_words = len(words) - sum(map(str.isspace, words))
        return out, n_words, n_ent

    def segment(self, texts: Sequence[str]) -> Segmented:
        encs = self.backend.encode_batch(list(texts), add_special_tokens=False)
        ids, flags, lengths = [], [], []
        n_words = n_ent = n_bytes = 0
        for text, enc in zip(texts, encs):
            f, nw, ne = self.flags(text, enc.offsets, enc.word_ids)
            ids.append(np.asarray(enc.ids, dtype=np.uint32))
            flags.append(f)
            lengths.append(len(enc.ids))
            n_words += nw
            n_ent += ne
            n_bytes += len(text.encode("utf-8"))
        cat = (lambda xs, dt: np.concatenate(xs) if xs else np.zeros(0, dt))
        return Segmented(cat(ids, np.uint32), cat(flags, np.uint8), np.asarray(lengths, dtype=np.int64),
                         n_words, n_ent, n_bytes)


# --- process-pool plumbing: one Segmenter per worker process ---------------------------------

_WORKER: Segmenter | None = None


def init_worker(tokenizer_dir: str, terms: Sequence[str], hmm: bool, entities: bool) -> None:
    """Pool initializer: load the tokenizer, jieba and the user dictionary once per process."""
    import os

    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    global _WORKER
    _WORKER = Segmenter(tokenizer_dir, terms, hmm=hmm, entities=entities)


def segment_batch(texts: Sequence[str]) -> Segmented:
    assert _WORKER is not None, "init_worker was not called in this process"
    return _WORKER.segment(texts)
