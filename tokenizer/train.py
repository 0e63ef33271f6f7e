"""`cmedbert tokenizer train`: an in-domain WordPiece vocabulary trained from scratch
(PubMedBERT-style) with the tokenizers library and BERT-Chinese normalization (every CJK
character its own word, optional lowercasing), saved as a folder ``AutoTokenizer`` loads.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from cmedbert.artifact import atomic_output, atomic_write_text, write_manifest
from cmedbert.errors import ConfigError

from cmedbert.tokenizer.audit import audit_tokenizer, format_table
from cmedbert.paths import resolve
from cmedbert.tokenizer.base import TOKENIZER_STAGE, batched, corpus_texts, read_terms, vocab_list
from cmedbert.tokenizer.extend import pad_tokens, save_tokenizer

log = logging.getLogger(__name__)
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


@dataclass
class TrainConfig:
    corpus: str = field(default="", metadata={"path": "path", "help": "corpus folder (stage 'corpus') to train on (required)"})
    vocab_size: int = field(default=21128, metadata={
        "help": "target vocab size in tokens, specials included (a small corpus may give fewer; then padded)"})
    min_frequency: int = field(default=2, metadata={"help": "a merge must occur at least this many times"})
    limit_alphabet: int = field(default=12000, metadata={
        "help": "keep at most this many distinct characters (CJK needs thousands; the trainer's default 1000 is too few)"})
    lowercase: bool = field(default=False, metadata={"help": "lowercase like an uncased model (bert-base-chinese: false)"})
    pad_to_multiple_of: int = field(default=64, metadata={"help": "pad the vocab with [unusedN] to a multiple of this"})
    max_docs: int = field(default=0, metadata={"help": "train on the first N documents only (0 = all)"})
    kg_terms: list[str] = field(default_factory=list, metadata={"path": "path", "help": "KG term lists, for the coverage audit only"})
    word_fertility: bool = field(default=True, metadata={"help": "audit: also report tokens per jieba word"})

    def validate(self) -> None:
        if not self.corpus:
            raise ConfigError("missing config key 'corpus': the corpus folder to train on")
        if self.vocab_size < len(SPECIALS) + 1:
            raise ConfigError(f"vocab_size must be > {len(SPECIALS)}")
        if self.pad_to_multiple_of < 1 or self.min_frequency < 1:
            raise ConfigError("pad_to_multiple_of and min_frequency must be >= 1")


def train_wordpiece(texts: Iterable[str], cfg: TrainConfig) -> list[str]:
    """Train a WordPiece vocab with BERT-Chinese normalization; returns tokens by id."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, trainers
    from tokenizers.models import WordPiece

    tok = Tokenizer(WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                                strip_accents=None, lowercase=cfg.lowercase)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=cfg.vocab_size, min_frequency=cfg.min_frequency,
                                        special_tokens=SPECIALS, limit_alphabet=cfg.limit_alphabet,
                                        continuing_subword_prefix="##", show_progress=False)
    tok.train_from_iterator(batched(texts, 1000), trainer=trainer)
    vocab = tok.get_vocab()
    by_id = sorted(vocab, key=vocab.__getitem__)
    assert by_id[:len(SPECIALS)] == SPECIALS, by_id[:5]
    return by_id


def build_from_vocab(vocab: list[str], lowercase: bool) -> Any:
    from transformers import BertTokenizer

    return BertTokenizer(vocab={t: i for i, t in enumerate(vocab)}, do_lower_case=lowercase,
                         tokenize_chinese_chars=True, strip_accents=None)


def main(cfg: TrainConfig, out: str | Path) -> dict[str, Any]:
    texts = corpus_texts(cfg.corpus, cfg.max_docs)
    vocab = train_wordpiece(texts, cfg)
    trained = len(vocab)
    vocab += pad_tokens(vocab, cfg.pad_to_multiple_of)
    tok = build_from_vocab(vocab, cfg.lowercase)
    kg = read_terms(resolve(p) for p in cfg.kg_terms)
    audit = audit_tokenizer(tok, texts, kg, word_fertility=cfg.word_fertility)
    table = format_table(audit, f"trained WordPiece ({trained} tokens + {len(vocab) - trained} padding) on {cfg.corpus}")
    print(table, end="")
    with atomic_output(out) as tmp:
        save_tokenizer(tok, tmp, vocab)
        assert vocab_list(tok) == vocab
        atomic_write_text(tmp / "audit.json", json.dumps(audit, indent=2, ensure_ascii=False) + "\n")
        atomic_write_text(tmp / "audit.txt", table)
        manifest = write_manifest(
            tmp, stage=TOKENIZER_STAGE, config=cfg, inputs=[cfg.corpus] + [str(resolve(p)) for p in cfg.kg_terms],
            counts={"n_docs": audit["n_docs"], "trained_vocab_size": trained, "vocab_size": len(vocab)},
            extra={"tokenizer": {"kind": "trained"},
                   "audit": {k: v for k, v in audit.items() if not k.startswith("top_")}})
    return manifest
