"""`cmedbert tokenizer extend`: add in-domain tokens to a base BERT-Chinese vocabulary.

What is added (each with its origin and corpus count in ``extension.json``):

* ``char``: characters that occur >= ``min_char_count`` times but are [UNK] for the base vocab
  (word-initial form ``c``, and ``##c`` when the character also occurs inside a word);
* ``latin``: Latin words, abbreviations and units (HbA1c, CT, MRI, μg…) that occur >=
  ``min_latin_count`` times and are [UNK] for the base vocab;
* ``term`` (only with ``mode = "term"``): whole multi-character KG terms.
* ``pad``: ``[unusedN]`` fillers so the vocab size is a multiple of ``pad_to_multiple_of``
  (never produced by tokenization: the pre-tokenizer splits ``[``/``]``).

``lowercase`` (optional) changes the base's normalization first (same vocab, same ids): the
audit "before" is the base as shipped, everything else is relative to the re-normalized base.

Default mode only ever repairs [UNK]: it is checked on every corpus word that a word the base
spells without [UNK] is spelled identically after the extension (a new token that would change
such a word is dropped and counted in ``dropped_would_change``).

Term mode: BERT's basic tokenizer splits every CJK character, so a multi-character WordPiece entry
is unreachable. Term mode registers the terms as *added tokens* in ``tokenizer.json``; the Rust
tokenizer matches them (leftmost-longest) before pre-tokenization. They are ``normalized=True``:
matching happens on the normalized text, so lowercasing / accent stripping / whitespace cleaning
apply to terms exactly as to the rest of the vocab (the cost: ``convert_ids_to_tokens`` shows
them with the normalizer's spaces, e.g. `` 糖  尿  病 ``; ids and offsets are unaffected).
Terms are also written to ``vocab.txt`` so every id has a line there.
"""

from __future__ import annotations

import collections
import json
import logging
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal, Optional, Sequence

from cmedbert.artifact import atomic_output, atomic_write_text, write_manifest
from cmedbert.errors import ArtifactError, ConfigError

from cmedbert.tokenizer.audit import audit_tokenizer, format_table
from cmedbert.paths import resolve, resolve_id_or_dir
from cmedbert.tokenizer.base import (TOKENIZER_STAGE, batched, corpus_texts, is_latin_word, load_tokenizer, read_terms,
                                     vocab_list)

log = logging.getLogger(__name__)
EXTENSION_FILE = "extension.json"


@dataclass
class ExtendConfig:
    base: str = field(default="", metadata={"path": "id_or_dir",
        "help": "base tokenizer folder or hub id (e.g. '${data_root}/vocab/bert-base-chinese') (required)"})
    corpus: str = field(default="", metadata={"path": "path", "help": "corpus folder (stage 'corpus') to count on (required)"})
    kg_terms: list[str] = field(default_factory=list, metadata={"path": "path",
        "help": "KG term lists (term or term<TAB>freq per line); used for term mode and the KG coverage audit"})
    mode: Literal["default", "term"] = field(default="default", metadata={
        "help": "'default': add characters and Latin pieces only; 'term': also add whole KG terms as "
                "added tokens matched before pre-tokenization"})
    min_char_count: int = field(default=3, metadata={"help": "add an [UNK] character seen at least this many times (occurrences)"})
    max_chars: int = field(default=0, metadata={"help": "at most this many new characters (0 = no limit)"})
    min_latin_count: int = field(default=5, metadata={"help": "add an [UNK] Latin word/unit seen at least this many times (occurrences)"})
    max_latin: int = field(default=2000, metadata={"help": "at most this many new Latin pieces (0 = no limit)"})
    min_term_count: int = field(default=5, metadata={"help": "term mode: add a KG term matched at least this many times (occurrences)"})
    max_terms: int = field(default=5000, metadata={"help": "term mode: at most this many terms, most frequent first (0 = no limit)"})
    term_min_chars: int = field(default=2, metadata={"help": "shortest KG term considered (characters)"})
    term_max_chars: int = field(default=12, metadata={"help": "longest KG term considered (characters)"})
    lowercase: Optional[bool] = field(default=None, metadata={
        "help": "lowercase (and strip accents) before WordPiece; null = keep the base's do_lower_case. "
                "bert-base-chinese ships do_lower_case=false but its vocab has no uppercase letters "
                "(it was trained on lowercased text), so true turns CT/MRI/HBV from [UNK] into known pieces"})
    pad_to_multiple_of: int = field(default=64, metadata={"help": "pad the vocab with [unusedN] to a multiple of this (1 = no padding)"})
    max_docs: int = field(default=0, metadata={"help": "use only the first N corpus documents (0 = all)"})
    word_fertility: bool = field(default=True, metadata={"help": "audit: also report tokens per jieba word"})

    def validate(self) -> None:
        if not self.base:
            raise ConfigError("missing config key 'base': the base tokenizer folder or id")
        if not self.corpus:
            raise ConfigError("missing config key 'corpus': the corpus folder")
        if self.mode == "term" and not self.kg_terms:
            raise ConfigError("mode='term' needs kg_terms (the KG term lists)")
        if min(self.min_char_count, self.min_latin_count, self.min_term_count, self.pad_to_multiple_of) < 1:
            raise ConfigError("min_*_count and pad_to_multiple_of must be >= 1")
        if self.term_min_chars < 2 or self.term_max_chars < self.term_min_chars:
            raise ConfigError("need 2 <= term_min_chars <= term_max_chars")


@dataclass
class NewToken:
    token: str
    origin: str  # char | latin | term | pad
    count: int


# --- counting --------------------------------------------------------------------------------

def count_words(tok: Any, texts: Iterable[str]) -> collections.Counter[str]:
    """Normalized, pre-tokenized words of the corpus with their counts."""
    backend = tok.backend_tokenizer
    norm, pre = backend.normalizer, backend.pre_tokenizer
    counts: collections.Counter[str] = collections.Counter()
    for text in texts:
        s = norm.normalize_str(text) if norm is not None else text
        counts.update(w for w, _ in pre.pre_tokenize_str(s))
    return counts


def _spell(model: Any, word: str) -> list[int]:
    return [t.id for t in model.tokenize(word)]


def unk_candidates(tok: Any, words: collections.Counter[str]) -> tuple[collections.Counter, collections.Counter,
                                                                         collections.Counter]:
    """Counts of [UNK] characters (word-initial / inside a word) and [UNK] Latin words."""
    model, unk = tok.backend_tokenizer.model, tok.unk_token_id
    vocab = tok.get_vocab()
    char_init: collections.Counter[str] = collections.Counter()
    char_cont: collections.Counter[str] = collections.Counter()
    latin: collections.Counter[str] = collections.Counter()
    for word, n in words.items():
        if unk not in _spell(model, word):
            continue
        if len(word) > 1 and is_latin_word(word):
            latin[word] += n
            continue
        for i, c in enumerate(word):
            if i == 0 and c not in vocab:
                char_init[c] += n
            elif i > 0 and "##" + c not in vocab:
                char_cont[c] += n
    return char_init, char_cont, latin


def _select(counter: collections.Counter, min_count: int, limit: int) -> list[tuple[str, int]]:
    rows = sorted(((t, n) for t, n in counter.items() if n >= min_count), key=lambda r: (-r[1], r[0]))
    return rows[:limit] if limit else rows


# --- building --------------------------------------------------------------------------------

def base_lowercase(base: Any) -> bool:
    return bool(base.init_kwargs.get("do_lower_case", getattr(base, "do_lower_case", True)))


def build_tokenizer(base: Any, vocab: list[str], terms: Sequence[str] = (), lowercase: bool | None = None) -> Any:
    """A BertTokenizer (tokenizers backend) over ``vocab`` with the base's normalization (or
    ``lowercase`` when given) and special tokens; ``terms`` (already in ``vocab``) become
    normalized added tokens."""
    from tokenizers import AddedToken
    from transformers import BertTokenizer

    kw = base.init_kwargs
    tok = BertTokenizer(
        vocab={t: i for i, t in enumerate(vocab)},
        do_lower_case=base_lowercase(base) if lowercase is None else lowercase,
        tokenize_chinese_chars=kw.get("tokenize_chinese_chars", True),
        strip_accents=kw.get("strip_accents"),
        unk_token=base.unk_token, sep_token=base.sep_token, pad_token=base.pad_token,
        cls_token=base.cls_token, mask_token=base.mask_token,
    )
    if base.model_max_length and base.model_max_length < 10**6:
        tok.model_max_length = base.model_max_length
    if terms:
        tok.add_tokens([AddedToken(t, normalized=True, single_word=False, special=False) for t in terms])
    return tok


def save_tokenizer(tok: Any, folder: Path, vocab: list[str]) -> None:
    """save_pretrained + ``vocab.txt`` (one token per line, line i = id i), then check that
    ``AutoTokenizer.from_pretrained(folder)`` gives back exactly these ids."""
    tok.save_pretrained(str(folder))
    atomic_write_text(folder / "vocab.txt", "".join(t + "\n" for t in vocab))
    back = load_tokenizer(folder)
    got = back.get_vocab()
    if len(got) != len(vocab) or any(got.get(t) != i for i, t in enumerate(vocab)):
        raise ArtifactError(f"{folder}: the saved tokenizer does not reload with the intended ids")


def pad_tokens(vocab: Sequence[str], multiple: int) -> list[str]:
    """``[unusedN]`` fillers (N continuing the base's numbering) up to a multiple of ``multiple``."""
    existing = set(vocab)
    nums = [int(t[7:-1]) for t in vocab if t.startswith("[unused") and t.endswith("]") and t[7:-1].isdigit()]
    n = max(nums, default=-1) + 1
    out: list[str] = []
    while (len(vocab) + len(out)) % multiple:
        name = f"[unused{n}]"
        n += 1
        if name not in existing:
            out.append(name)
    return out


def drop_changing(base: Any, vocab: list[str], new: list[NewToken],
                  words: collections.Counter[str]) -> tuple[list[NewToken], list[str]]:
    """Remove new tokens that would re-spell a word the base spells without [UNK]."""
    unk, base_model = base.unk_token_id, base.backend_tokenizer.model
    clean = [w for w in words if unk not in _spell(base_model, w)]
    base_size = len(vocab)
    dropped: list[str] = []
    while True:
        full = vocab + [t.token for t in new]
        tok = build_tokenizer(base, full)
        model = tok.backend_tokenizer.model
        offenders = {full[i] for w in clean for i in _spell(model, w) if i >= base_size}
        if not offenders:
            return new, dropped
        dropped.extend(sorted(offenders))
        new = [t for t in new if t.token not in offenders]


def count_terms(base: Any, vocab: list[str], terms: Sequence[str], texts: Iterable[str]) -> dict[str, int]:
    """Occurrences of each term when all of them are matched leftmost-longest in ``texts``."""
    full = vocab + list(terms)
    tok = build_tokenizer(base, full, terms)
    first = len(vocab)
    counts: collections.Counter[int] = collections.Counter()
    for batch in batched(texts, 512):
        for enc in tok.backend_tokenizer.encode_batch(batch, add_special_tokens=False):
            counts.update(j for j in enc.ids if j >= first)
    return {full[j]: n for j, n in counts.items()}


def term_candidates(base: Any, vocab: list[str], cfg: ExtendConfig) -> list[str]:
    """KG terms of the right length that the base spells with more than one token."""
    terms = read_terms((resolve(p) for p in cfg.kg_terms), cfg.term_min_chars, cfg.term_max_chars)
    known = set(vocab)
    terms = [t for t in terms if t not in known]
    encs = base.backend_tokenizer.encode_batch(terms, add_special_tokens=False)
    return [t for t, e in zip(terms, encs) if len(e.ids) > 1]


def base_pieces(base: Any, token: NewToken) -> tuple[list[int], str]:
    """The base tokenizer's ids for a new token's string (what its embedding is initialized from),
    and which spelling gave them.

    The exact string first; if the base spells it with [UNK], its NFKC form, then that lowercased
    (so ``HBV`` starts from ``h ##b ##v`` and full-width ``Ｃ`` from ``c`` rather than from [UNK]);
    if all contain [UNK], the exact spelling's ids ([UNK] included) are used.
    """
    if token.origin == "pad":
        return [], "none"
    text = token.token[2:] if token.token.startswith("##") else token.token
    enc = base.backend_tokenizer.encode
    exact = enc(text, add_special_tokens=False).ids
    if base.unk_token_id not in exact:
        return exact, "exact"
    nfkc = unicodedata.normalize("NFKC", text)
    for how, variant in (("nfkc", nfkc), ("nfkc_lower", nfkc.lower())):
        ids = enc(variant, add_special_tokens=False).ids
        if ids and base.unk_token_id not in ids:
            return ids, how
    return exact, "exact"


# --- the stage -------------------------------------------------------------------------------

def plan_extension(base: Any, texts: Iterable[str], cfg: ExtendConfig) -> dict[str, Any]:
    """Decide the new tokens (pure: nothing is written). ``texts`` must be re-iterable
    (a list or :class:`tokenizer.base.CorpusTexts`): it is read once or twice."""
    vocab = vocab_list(base)
    if type(base.backend_tokenizer.model).__name__ != "WordPiece":
        raise ArtifactError(f"{cfg.base}: extend supports WordPiece (BERT) tokenizers only")
    words = count_words(base, texts)
    char_init, char_cont, latin = unk_candidates(base, words)
    new: list[NewToken] = []
    chars = _select(char_init + char_cont, cfg.min_char_count, cfg.max_chars)
    for c, n in chars:
        if char_init[c]:
            new.append(NewToken(c, "char", n))
        if char_cont[c]:
            new.append(NewToken("##" + c, "char", n))
    new += [NewToken(w, "latin", n) for w, n in _select(latin, cfg.min_latin_count, cfg.max_latin)]
    new, dropped = drop_changing(base, vocab, new, words)
    terms: list[str] = []
    if cfg.mode == "term":
        cands = term_candidates(base, vocab + [t.token for t in new], cfg)
        counts = count_terms(base, vocab + [t.token for t in new], cands, texts)
        chosen = _select(collections.Counter(counts), cfg.min_term_count, cfg.max_terms)
        new += [NewToken(t, "term", n) for t, n in chosen]
        terms = [t for t, _ in chosen]
        log.info("term mode: %d KG term candidates, %d matched >= %d times, %d kept",
                 len(cands), sum(1 for n in counts.values() if n >= cfg.min_term_count), cfg.min_term_count,
                 len(terms))
    fill = pad_tokens(vocab + [t.token for t in new], cfg.pad_to_multiple_of)
    new += [NewToken(t, "pad", 0) for t in fill]
    return {"vocab": vocab + [t.token for t in new], "base_size": len(vocab), "new": new, "terms": terms,
            "dropped_would_change": dropped}


def extension_record(cfg: ExtendConfig, base: Any, plan: dict[str, Any]) -> dict[str, Any]:
    """The content of extension.json (see the README): every added token with its id, origin,
    count and base pieces, which is all ``tokenizer.embeddings`` needs."""
    tokens = []
    for i, t in enumerate(plan["new"], start=plan["base_size"]):
        pieces, how = base_pieces(base, t)
        tokens.append({"token": t.token, "id": i, "origin": t.origin, "count": t.count,
                       "base_pieces": pieces, "pieces_from": how})
    return {"base": cfg.base, "base_resolved": str(resolve_id_or_dir(cfg.base)), "base_vocab_size": plan["base_size"],
            "mode": cfg.mode, "vocab_size": len(plan["vocab"]), "do_lower_case": base_lowercase(base),
            "dropped_would_change": plan["dropped_would_change"], "tokens": tokens}


def renormalized(original: Any, lowercase: bool | None) -> Any:
    """The base vocab (same ids) with ``lowercase`` applied; the base itself when unchanged.
    Everything after this (candidates, the no-re-spelling check, base pieces) uses it."""
    if lowercase is None or lowercase == base_lowercase(original):
        return original
    extra = [t for t in original.added_tokens_decoder.values() if not t.special]
    if extra:
        raise ArtifactError(f"cannot change the lowercasing of a base with added tokens ({extra[0].content!r}, ...)")
    return build_tokenizer(original, vocab_list(original), lowercase=lowercase)


def main(cfg: ExtendConfig, out: str | Path) -> dict[str, Any]:
    original = load_tokenizer(str(resolve_id_or_dir(cfg.base)))
    base = renormalized(original, cfg.lowercase)
    texts = corpus_texts(cfg.corpus, cfg.max_docs)
    plan = plan_extension(base, texts, cfg)
    tok = build_tokenizer(base, plan["vocab"], plan["terms"])
    kg = read_terms((resolve(p) for p in cfg.kg_terms), cfg.term_min_chars, cfg.term_max_chars)
    base_size = plan["base_size"]
    audit = {
        "before": audit_tokenizer(original, texts, kg, word_fertility=cfg.word_fertility),
        "after": audit_tokenizer(tok, texts, kg, word_fertility=cfg.word_fertility,
                                 count_ids=range(base_size, len(plan["vocab"]))),
    }
    used = audit["after"].pop("id_counts", {})
    for i, t in enumerate(plan["new"], start=base_size):
        if t.origin == "term":  # occurrences under the final (leftmost-longest) matching
            t.count = int(used.get(i, 0))
    extension = extension_record(cfg, base, plan)
    table = format_table(audit, f"extend ({cfg.mode} mode): audit of base vs extended vocab on {cfg.corpus}")
    print(table, end="")
    by_origin = collections.Counter(t.origin for t in plan["new"])
    with atomic_output(out) as tmp:
        save_tokenizer(tok, tmp, plan["vocab"])
        atomic_write_text(tmp / EXTENSION_FILE, json.dumps(extension, indent=1, ensure_ascii=False) + "\n")
        atomic_write_text(tmp / "audit.json", json.dumps(audit, indent=2, ensure_ascii=False) + "\n")
        atomic_write_text(tmp / "audit.txt", table)
        inputs = [cfg.corpus] + [str(resolve(p)) for p in cfg.kg_terms]
        base_path = Path(resolve_id_or_dir(cfg.base))
        if base_path.is_dir():
            inputs.append(str(base_path))
        manifest = write_manifest(
            tmp, stage=TOKENIZER_STAGE, config=cfg, inputs=inputs,
            counts={"base_vocab_size": base_size, "vocab_size": len(plan["vocab"]),
                    "added": dict(sorted(by_origin.items())),
                    "dropped_would_change": len(plan["dropped_would_change"])},
            extra={"tokenizer": {"kind": "extended", "mode": cfg.mode},
                   "audit": {k: _short(v) for k, v in audit.items()}})
    return manifest


def _short(audit: dict[str, Any]) -> dict[str, Any]:
    """The audit without its long top-k lists (those stay in audit.json)."""
    return {k: v for k, v in audit.items() if not k.startswith("top_")}
