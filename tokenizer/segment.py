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

:meth:`Segmenter.segment` applies the rule to a whole batch at once (all documents' characters,
words and tokens end to end); :meth:`Segmenter.segment_reference` is the per-document version,
kept as the reference the tests compare against (same bytes).

Words: ``segmenter="jieba_fast_dat"`` (:class:`FastJieba`, default) gives jieba 0.42.1's words
with the route in C++; ``"jieba"`` is plain jieba (:class:`PlainJieba`), also used when
``jieba_fast_dat`` is not installed.

One :class:`Segmenter` per process: it loads the tokenizer, the dictionaries and the user
dictionary once (the ``Pool`` initializer of ``pack`` builds it).
"""

from __future__ import annotations

import itertools
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from cmedbert.tokenizer.packed import ENTITY, ENTITY_START, WORD_START

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
    from cmedbert.tokenizer.base import load_tokenizer

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


SEGMENTERS = ("jieba_fast_dat", "jieba")


class FastJieba:
    """jieba 0.42.1's ``cut`` with the hot part (prefix DAG + best route) in C++
    (``jieba_fast_dat``'s double-array trie), giving the same words as jieba.

    ``jieba_fast_dat``'s own ``cut`` is NOT used: it splits text differently (``40%`` ->
    ``40`` ``%``, ``12.9`` -> ``12`` ``.`` ``9``: 1,627 of 24,759 shared-corpus documents differ).
    Here jieba's own Python code does everything around the route, so only the route comes
    from C++:

    * blocks: jieba's ``re_han_default`` / ``re_skip_default`` split, as ``jieba.Tokenizer.cut``;
    * route: ``_get_DAG_and_calc`` on the C++ trie, which holds jieba's ``dict.txt`` (not the
      package's default big dictionary) and the user words with the frequencies *jieba* gave
      them (``suggest_freq`` of the C++ side differs for ~300 of the KG terms) and jieba's total;
    * runs of single characters: jieba's ``finalseg.cut`` logic (HMM) / English-run joining, in
      Python; the Viterbi itself in C++ on jieba's own probability tables when every character
      is known to them (see :meth:`_hmm_cut`), else jieba's Python Viterbi;
    * ties: the C++ route breaks exactly equal scores as jieba's ``max`` (towards the longer
      word): ``急急急`` (急急+急 vs 急+急急, equal by commutativity) comes out as jieba's.

    Checked word-for-word against jieba on the whole shared medical corpus (24,759 documents,
    13.7 MB, HMM on and off): identical (``tests/tokenizer/test_tokenizer_segment.py`` repeats
    the check on a few hundred documents).
    """

    def __init__(self, terms: Sequence[str], hmm: bool = True):
        import jieba
        from jieba import finalseg, re_han_default, re_skip_default
        from jieba_fast_dat import _jieba_fast_dat_functions_py3 as cpp

        ref = build_jieba(terms)  # user-word frequencies and total exactly as jieba's (then dropped)
        # the trie is built from jieba's dict.txt in this process, not through jieba_fast_dat's
        # file cache (written in place, no atomic rename: racy with 2 workers starting at once)
        dat = cpp.DatTrie()
        cpp.load_main_dict_from_path_pybind(dat, str(Path(jieba.__file__).parent / "dict.txt"), {})
        for t in terms:
            dat.add_word(t, int(ref.FREQ[t]), "")
        for w in ("的", "糖尿病", *terms[:50]):  # cheap guard against a different dictionary
            if cpp._get_freq(dat, w) != ref.FREQ.get(w, 0):
                raise RuntimeError(f"jieba_fast_dat trie disagrees with jieba on {w!r}")
        self.dat, self.total, self.cpp, self.hmm = dat, float(ref.total), cpp, hmm
        self.re_han, self.re_skip, self.finalseg = re_han_default, re_skip_default, finalseg
        # the C++ HMM gets jieba's own probability tables (one model per process)
        cpp.load_finalseg_hmm_model(finalseg.start_P, finalseg.trans_P, finalseg.emit_P)
        self.hmm_chars = frozenset.intersection(*(frozenset(finalseg.emit_P[y]) for y in "BMES"))
        self.re_eng = re.compile("[a-zA-Z0-9]", re.U)

    def cut(self, text: str) -> list[str]:
        out: list[str] = []
        block = self._block_hmm if self.hmm else self._block_no_hmm
        for blk in self.re_han.split(text):
            if not blk:
                continue
            if self.re_han.match(blk):
                block(blk, out)
            else:
                for x in self.re_skip.split(blk):
                    if self.re_skip.match(x):
                        out.append(x)
                    else:
                        out += x  # one character at a time, as jieba
        return out

    def _route(self, s: str) -> list[int]:
        route: list[int] = []  # route[i] = last character index of the word starting at i
        self.cpp._get_DAG_and_calc(self.dat, s, route, self.total)
        return route

    def _flush(self, buf: str, out: list[str]) -> None:
        if len(buf) == 1:
            out.append(buf)
        elif not self.cpp._get_freq(self.dat, buf):  # == jieba's ``not FREQ.get(buf)``
            self._hmm_cut(buf, out)
        else:
            out += buf

    def _hmm_cut(self, buf: str, out: list[str]) -> None:
        """jieba.finalseg.cut. Viterbi in C++ only when every character has an emission
        probability in all four states: an unknown character puts -3.14e100 into the scores,
        which makes exact ties, and Python's ``max`` over (prob, state) breaks them towards the
        larger state letter, the C++ one towards the first candidate; jieba's Python Viterbi
        cuts those runs."""
        fs = self.finalseg
        for blk in fs.re_han.split(buf):
            if not blk:
                continue
            if not fs.re_han.match(blk):
                out += [x for x in fs.re_skip.split(blk) if x]
                continue
            if self.hmm_chars.issuperset(blk):
                states = self.cpp._finalseg_viterbi_cpp(blk)[1]
            else:
                states = fs.viterbi(blk, "BMES", fs.start_P, fs.trans_P, fs.emit_P)[1]
            begin = nexti = 0
            for i, pos in enumerate(states):  # finalseg.__cut
                if pos == "B":
                    begin = i
                elif pos == "E":
                    self._hmm_word(blk[begin:i + 1], out)
                    nexti = i + 1
                elif pos == "S":
                    self._hmm_word(blk[i], out)
                    nexti = i + 1
            if nexti < len(blk):
                self._hmm_word(blk[nexti:], out)

    def _hmm_word(self, word: str, out: list[str]) -> None:
        if word in self.finalseg.Force_Split_Words:
            out += word
        else:
            out.append(word)

    def _block_hmm(self, s: str, out: list[str]) -> None:  # jieba.Tokenizer.__cut_DAG
        route = self._route(s)
        x, n, buf = 0, len(s), ""
        while x < n:
            y = route[x] + 1
            if y - x == 1:
                buf += s[x]
            else:
                if buf:
                    self._flush(buf, out)
                    buf = ""
                out.append(s[x:y])
            x = y
        if buf:
            self._flush(buf, out)

    def _block_no_hmm(self, s: str, out: list[str]) -> None:  # jieba.Tokenizer.__cut_DAG_NO_HMM
        route = self._route(s)
        x, n, buf = 0, len(s), ""
        while x < n:
            y = route[x] + 1
            w = s[x:y]
            if y - x == 1 and self.re_eng.match(w):
                buf += w
            else:
                if buf:
                    out.append(buf)
                    buf = ""
                out.append(w)
            x = y
        if buf:
            out.append(buf)


class PlainJieba:
    def __init__(self, terms: Sequence[str], hmm: bool = True):
        self.jieba, self.hmm = build_jieba(terms), hmm

    def cut(self, text: str) -> list[str]:
        return list(self.jieba.cut(text, HMM=self.hmm))


def build_segmenter(terms: Sequence[str], hmm: bool = True, segmenter: str = "jieba_fast_dat") -> Any:
    """Word segmenter with ``.cut(text) -> list[str]``. ``jieba_fast_dat`` (same words as jieba,
    ~2x faster) falls back to plain jieba when the package is not installed."""
    if segmenter not in SEGMENTERS:
        raise ValueError(f"segmenter must be one of {SEGMENTERS}, got {segmenter!r}")
    if segmenter == "jieba_fast_dat":
        try:
            return FastJieba(terms, hmm)
        except ImportError:
            log.warning("jieba_fast_dat is not installed: segmenting with plain jieba (same words, slower)")
    return PlainJieba(terms, hmm)


def _flat_int(seqs: Sequence[Sequence[Any]], total: int) -> np.ndarray:
    return np.fromiter(itertools.chain.from_iterable(seqs), dtype=np.int64, count=total)


class Segmenter:
    def __init__(self, tokenizer_dir: str | Path, terms: Sequence[str] = (), hmm: bool = True,
                 entities: bool = True, segmenter: str = "jieba_fast_dat"):
        self.backend = load_backend(tokenizer_dir)
        self.seg = build_segmenter(terms, hmm, segmenter)
        self.terms = frozenset(t for t in terms if len(t) >= 2) if entities else frozenset()
        self.hmm = hmm

    def words(self, text: str) -> list[str]:
        return self.seg.cut(text)

    def flags(self, text: str, offsets: Sequence[tuple[int, int]], word_ids: Sequence[int | None]) -> tuple[np.ndarray, int, int]:
        """Flags for one document's tokens; returns (flags, n_words, n_entity_spans).

        The per-document reference of :meth:`segment` (which does a whole batch at once)."""
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

    def segment_reference(self, texts: Sequence[str]) -> Segmented:
        """Document-by-document version of :meth:`segment` (same output; kept for tests)."""
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

    def segment(self, texts: Sequence[str]) -> Segmented:
        """Tokens and flags of a batch, aligned for the whole batch at once: the documents'
        characters, words and tokens are laid end to end and every array op runs once per batch
        (same rule and output as :meth:`flags` per document)."""
        texts = list(texts)
        encs = self.backend.encode_batch(texts, add_special_tokens=False)
        tok_lens = np.fromiter(map(len, encs), dtype=np.int64, count=len(encs))
        n_tok = int(tok_lens.sum())
        ids = _flat_int([e.ids for e in encs], n_tok).astype(np.uint32)
        n_bytes = sum(len(t.encode("utf-8")) for t in texts)
        if n_tok == 0:
            return Segmented(ids, np.zeros(0, np.uint8), tok_lens, 0, 0, n_bytes)
        # documents without tokens (whitespace / control characters only) are not segmented
        # (as the per-document rule): their characters are kept in place but carry no word start
        keep = [i for i in range(len(texts)) if tok_lens[i]]
        words = [self.seg.cut(texts[i]) for i in keep]
        all_words = list(itertools.chain.from_iterable(words))
        char_lens = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
        doc_char0 = np.zeros(len(texts), dtype=np.int64)
        np.cumsum(char_lens[:-1], out=doc_char0[1:])
        # word start characters, batch-global: each kept document's words cover it exactly
        wlens = np.fromiter(map(len, all_words), dtype=np.int64, count=len(all_words))
        n_w_doc = np.fromiter(map(len, words), dtype=np.int64, count=len(words))
        w_doc = np.repeat(np.arange(len(keep)), n_w_doc)
        cover = np.bincount(w_doc, weights=wlens, minlength=len(keep)).astype(np.int64)
        if not np.array_equal(cover, char_lens[keep]):  # never trust the segmenter blindly
            raise RuntimeError("jieba words do not cover the text")
        w_end = np.cumsum(wlens)
        w_start_local = w_end - wlens  # in the concatenation of kept documents
        kept_char0 = np.zeros(len(keep), dtype=np.int64)
        np.cumsum(char_lens[keep][:-1], out=kept_char0[1:])
        w_start = w_start_local - kept_char0[w_doc] + doc_char0[keep][w_doc]
        total_chars = int(char_lens.sum())
        is_word_start = np.zeros(total_chars + 1, dtype=bool)
        is_word_start[w_start] = True
        # token start characters and pre-tokenized word ids, batch-global
        tok_doc = np.repeat(np.arange(len(texts)), tok_lens)
        offs = _flat_int([itertools.chain.from_iterable(e.offsets) for e in encs], 2 * n_tok)
        tok_start = offs[0::2] + doc_char0[tok_doc]
        try:
            wid = _flat_int([e.word_ids for e in encs], n_tok)
        except TypeError:  # None for special tokens (not produced without add_special_tokens)
            wid = np.array([-1 if w is None else w for e in encs for w in e.word_ids], dtype=np.int64)
        new_pre_word = np.ones(n_tok, dtype=bool)
        new_pre_word[1:] = (wid[1:] != wid[:-1]) | (tok_doc[1:] != tok_doc[:-1])
        flags = (is_word_start[tok_start] & new_pre_word).astype(np.uint8) * WORD_START
        n_ent = 0
        if self.terms:
            is_ent = np.fromiter(map(self.terms.__contains__, all_words), dtype=bool, count=len(all_words))
            n_ent = int(is_ent.sum())
            if n_ent:
                # entity words never overlap: +1 at each start, -1 at each end marks their chars
                delta = np.zeros(total_chars + 1, dtype=np.int64)
                np.add.at(delta, w_start[is_ent], 1)
                np.add.at(delta, w_start[is_ent] + wlens[is_ent], -1)
                ent = (np.cumsum(delta) > 0).astype(np.uint8) * ENTITY
                ent[w_start[is_ent]] |= ENTITY_START
                flags |= ent[tok_start]
        n_words = len(all_words) - sum(map(str.isspace, all_words))
        return Segmented(ids, flags, tok_lens, n_words, n_ent, n_bytes)


# --- process-pool plumbing: one Segmenter per worker process ---------------------------------

_WORKER: Segmenter | None = None


def init_worker(tokenizer_dir: str, terms: Sequence[str], hmm: bool, entities: bool,
                segmenter: str = "jieba_fast_dat") -> None:
    """Pool initializer: load the tokenizer, jieba and the user dictionary once per process."""
    import os

    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    global _WORKER
    _WORKER = Segmenter(tokenizer_dir, terms, hmm=hmm, entities=entities, segmenter=segmenter)


def segment_batch(texts: Sequence[str]) -> Segmented:
    assert _WORKER is not None, "init_worker was not called in this process"
    return _WORKER.segment(texts)
