"""`cmedbert tokenizer audit`: how well a vocabulary fits a corpus.

Reports [UNK] rate per token and per character, fertility (tokens per character and per jieba
word), the characters and strings that most often become [UNK], and KG term coverage (share of
terms tokenized without [UNK], and share that are a single token). Output: ``audit.json``,
``audit.txt`` (a readable table) and a manifest (stage "tokenizer-audit").
"""

from __future__ import annotations

import collections
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from cmedbert.artifact import atomic_output, atomic_write_text, write_manifest
from cmedbert.errors import ConfigError

from cmedbert.paths import resolve
from cmedbert.tokenizer.base import batched, corpus_texts, load_tokenizer, read_terms

log = logging.getLogger(__name__)
STAGE = "tokenizer-audit"


@dataclass
class AuditConfig:
    tokenizer: str = field(default="", metadata={"path": "id_or_dir", "help": "tokenizer folder or hub id to audit (required)"})
    corpus: str = field(default="", metadata={"path": "path", "help": "corpus folder (stage 'corpus') to audit on (required)"})
    kg_terms: list[str] = field(default_factory=list, metadata={"path": "path",
        "help": "KG term lists (one term per line, or term<TAB>freq); '${data_root}/…' = the data root"})
    max_docs: int = field(default=0, metadata={"help": "audit only the first N documents (0 = all)"})
    word_fertility: bool = field(default=True, metadata={
        "help": "also segment with jieba to report tokens per word (costs ~1 s per 500k characters)"})
    top_k: int = field(default=30, metadata={"help": "how many top [UNK] characters/strings to list"})
    batch_docs: int = field(default=512, metadata={"help": "documents per tokenizer batch"})

    def validate(self) -> None:
        if not self.tokenizer:
            raise ConfigError("missing config key 'tokenizer': the tokenizer folder or id to audit")
        if not self.corpus:
            raise ConfigError("missing config key 'corpus': the corpus folder to audit on")
        if self.max_docs < 0 or self.top_k < 0 or self.batch_docs < 1:
            raise ConfigError("max_docs/top_k must be >= 0 and batch_docs >= 1")


def audit_tokenizer(tok: Any, texts: Iterable[str], terms: Sequence[str] = (), *, top_k: int = 30,
                    word_fertility: bool = True, batch_docs: int = 512,
                    count_ids: Iterable[int] = ()) -> dict[str, Any]:
    """Audit ``tok`` on ``texts`` (and KG ``terms``); pure function, returns plain data.
    ``texts`` is read once, batch by batch (any iterable: memory is O(batch)).

    ``count_ids``: token ids whose occurrences are counted too (``id_counts`` in the result),
    which is how ``extend`` measures how often each added token is used.
    """
    backend = tok.backend_tokenizer
    unk = tok.unk_token_id
    want = set(count_ids)
    id_counts: collections.Counter[int] = collections.Counter()
    n_tokens = n_unk = n_chars = n_unk_chars = n_docs = n_words = 0
    cut = _jieba_cut() if word_fertility else None
    unk_chars: collections.Counter[str] = collections.Counter()
    unk_strings: collections.Counter[str] = collections.Counter()
    for batch in batched(texts, batch_docs):
        n_docs += len(batch)
        if cut is not None:
            n_words += sum(1 for t in batch for w in cut(t) if w.strip())
        for text, enc in zip(batch, backend.encode_batch(list(batch), add_special_tokens=False)):
            ids = enc.ids
            n_tokens += len(ids)
            n_chars += sum(1 for c in text if not c.isspace())
            if want:
                id_counts.update(i for i in ids if i in want)
            if unk in ids:
                for i, (s, e) in zip(ids, enc.offsets):
                    if i == unk:
                        surface = text[s:e]
                        n_unk += 1
                        n_unk_chars += sum(1 for c in surface if not c.isspace())
                        unk_strings[surface] += 1
                        unk_chars.update(c for c in surface if not c.isspace())
    out: dict[str, Any] = {
        "tokenizer_vocab_size": len(tok),
        "n_docs": n_docs,
        "n_chars": n_chars,
        "n_tokens": n_tokens,
        "n_unk": n_unk,
        "unk_rate_token": n_unk / max(n_tokens, 1),
        "unk_rate_char": n_unk_chars / max(n_chars, 1),
        "tokens_per_char": n_tokens / max(n_chars, 1),
        "top_unk_chars": unk_chars.most_common(top_k),
        "top_unk_strings": unk_strings.most_common(top_k),
    }
    if word_fertility:
        out["n_words"] = n_words
        out["tokens_per_word"] = n_tokens / max(n_words, 1)
    if terms:
        encs = backend.encode_batch(list(terms), add_special_tokens=False)
        no_unk = sum(1 for e in encs if unk not in e.ids)
        single = sum(1 for e in encs if len(e.ids) == 1 and e.ids[0] != unk)
        out["kg"] = {"n_terms": len(terms), "covered_without_unk": no_unk / len(terms),
                     "single_token": single / len(terms),
                     "tokens_per_term": sum(len(e.ids) for e in encs) / len(terms)}
    if want:
        out["id_counts"] = {int(i): int(c) for i, c in sorted(id_counts.items())}
    return out


def _jieba_cut() -> Any:
    """jieba's default dictionary, HMM on: the word count behind tokens-per-word fertility."""
    import jieba

    jieba.setLogLevel(logging.WARNING)
    return jieba.cut


def format_table(audit: dict[str, Any], title: str = "") -> str:
    """A readable table of one audit (or of {'before':…, 'after':…})."""
    if "before" in audit and "after" in audit:
        rows = ["unk_rate_token", "unk_rate_char", "tokens_per_char", "tokens_per_word", "n_tokens",
                "tokenizer_vocab_size"]
        lines = [title or "audit before / after", f"{'metric':<22}{'before':>14}{'after':>14}"]
        for k in rows:
            b, a = audit["before"].get(k), audit["after"].get(k)
            if b is None:
                continue
            lines.append(f"{k:<22}{_fmt(b):>14}{_fmt(a):>14}")
        for key in ("covered_without_unk", "single_token", "tokens_per_term"):
            if "kg" in audit["before"]:
                lines.append(f"{'kg.' + key:<22}{_fmt(audit['before']['kg'][key]):>14}"
                             f"{_fmt(audit['after']['kg'][key]):>14}")
        return "\n".join(lines) + "\n"
    lines = [title or "audit", f"{'metric':<22}{'value':>14}"]
    for k in ("n_docs", "n_chars", "n_tokens", "n_unk", "unk_rate_token", "unk_rate_char", "tokens_per_char",
              "tokens_per_word", "tokenizer_vocab_size"):
        if k in audit:
            lines.append(f"{k:<22}{_fmt(audit[k]):>14}")
    if "kg" in audit:
        for k, v in audit["kg"].items():
            lines.append(f"{'kg.' + k:<22}{_fmt(v):>14}")
    if audit.get("top_unk_chars"):
        lines.append("top [UNK] characters: " + " ".join(f"{c}({n})" for c, n in audit["top_unk_chars"]))
    if audit.get("top_unk_strings"):
        lines.append("top [UNK] strings: " + " ".join(f"{s}({n})" for s, n in audit["top_unk_strings"]))
    return "\n".join(lines) + "\n"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6f}" if v < 1 else f"{v:.4f}"
    return str(v)


def main(cfg: AuditConfig, out: str | Path) -> dict[str, Any]:
    tok = load_tokenizer(cfg.tokenizer)
    texts = corpus_texts(cfg.corpus, cfg.max_docs)
    terms = read_terms(resolve(p) for p in cfg.kg_terms)
    audit = audit_tokenizer(tok, texts, terms, top_k=cfg.top_k, word_fertility=cfg.word_fertility,
                            batch_docs=cfg.batch_docs)
    table = format_table(audit, f"audit of {cfg.tokenizer} on {cfg.corpus}")
    print(table, end="")
    with atomic_output(out) as tmp:
        atomic_write_text(tmp / "audit.json", json.dumps(audit, indent=2, ensure_ascii=False) + "\n")
        atomic_write_text(tmp / "audit.txt", table)
        inputs = [str(resolve(p)) for p in cfg.kg_terms] + [cfg.corpus]
        if Path(cfg.tokenizer).is_dir():
            inputs.append(cfg.tokenizer)
        manifest = write_manifest(tmp, stage=STAGE, config=cfg, inputs=inputs,
                                  counts={k: audit[k] for k in ("n_docs", "n_chars", "n_tokens", "n_unk")},
                                  extra={"audit": {k: v for k, v in audit.items()
                                                   if k not in ("top_unk_chars", "top_unk_strings")}})
    return manifest
