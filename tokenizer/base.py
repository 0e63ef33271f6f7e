"""Small shared pieces of the tokenizer stage: loading tokenizers with clear errors, reading KG
term lists, reading corpus texts, and the "normalized text" that BERT-Chinese tokenizers see.

Normalization (what "normalized corpus text" means everywhere in this stage) is exactly the
tokenizer's own ``BertNormalizer`` followed by its ``BertPreTokenizer``:

* ``clean_text``: control characters and U+FFFD are removed, every whitespace char becomes " ";
* ``handle_chinese_chars``: every CJK ideograph is surrounded by spaces (so each is its own word);
* ``lowercase`` (only if the tokenizer has ``do_lower_case``) and accent stripping (``strip_accents``
  or, when unset, together with lowercasing);
* then the text is split on whitespace and around every punctuation character.

:func:`normalized_words` returns that word list; ``" ".join(words)`` is the normalized text, and
decoding a default-mode token sequence reproduces it exactly (a word the vocab cannot spell comes
back as ``[UNK]``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterable, Iterator

from cmedbert.errors import ArtifactError, CmedbertError

TOKENIZER_STAGE = "tokenizer"


def load_tokenizer(id_or_dir: str | Path) -> Any:
    """``AutoTokenizer.from_pretrained`` with one-line errors for the usual mistakes.

    A local folder must hold ``vocab.txt`` or ``tokenizer.json``; a hub id only works when it is
    cached (offline machines) or the hub is reachable.
    """
    from transformers import AutoTokenizer

    path = Path(str(id_or_dir))
    if path.exists() or str(id_or_dir).startswith((".", "/")):
        if not path.is_dir():
            raise ArtifactError(f"tokenizer folder not found: {path}")
        if not ((path / "vocab.txt").is_file() or (path / "tokenizer.json").is_file()):
            raise ArtifactError(f"{path}: not a tokenizer folder (no vocab.txt or tokenizer.json)")
    try:
        tok = AutoTokenizer.from_pretrained(str(id_or_dir))
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"cannot load tokenizer {id_or_dir!r}: {str(exc).splitlines()[0]}") from None
    if not getattr(tok, "is_fast", False) and not hasattr(tok, "backend_tokenizer"):
        raise ArtifactError(f"tokenizer {id_or_dir!r} has no Rust backend (tokenizers); cannot use it here")
    if tok.unk_token_id is None:
        raise ArtifactError(f"tokenizer {id_or_dir!r} has no [UNK] token")
    return tok


def vocab_list(tok: Any) -> list[str]:
    """Tokens by id (id i -> list[i]); added tokens included. Raises if ids have gaps."""
    vocab = tok.get_vocab()
    out: list[str | None] = [None] * (max(vocab.values()) + 1)
    for t, i in vocab.items():
        out[i] = t
    if any(t is None for t in out):
        missing = out.index(None)
        raise ArtifactError(f"tokenizer vocab has a gap at id {missing}")
    return out  # type: ignore[return-value]


def normalized_words(tok: Any, text: str) -> list[str]:
    """The tokenizer's normalizer + pre-tokenizer applied to ``text`` (see module doc)."""
    backend = tok.backend_tokenizer
    norm = backend.normalizer.normalize_str(text) if backend.normalizer is not None else text
    if backend.pre_tokenizer is None:
        return norm.split()
    return [w for w, _ in backend.pre_tokenizer.pre_tokenize_str(norm)]


# --- KG term lists ---------------------------------------------------------------------------

def read_terms(paths: Iterable[str | Path], min_chars: int = 2, max_chars: int = 20) -> list[str]:
    """All terms of the given KG term lists (read by :func:`cmedbert.corpus.kg.read_terms`, the one
    term-list reader), de-duplicated, in file order, ``min_chars..max_chars`` long, without
    whitespace (a term is matched as one unit)."""
    from cmedbert.corpus.kg import read_terms as read_term_lists

    return [t for t in read_term_lists(paths)
            if min_chars <= len(t) <= max_chars and not any(c.isspace() for c in t)]


# --- corpus ----------------------------------------------------------------------------------

def iter_corpus_texts(corpus_dir: str | Path, max_docs: int = 0) -> Iterator[str]:
    """Texts of a corpus folder through ``corpus.io`` (which verifies the manifest first)."""
    from cmedbert.corpus.io import iter_texts

    n = 0
    for text in iter_texts(corpus_dir):
        if max_docs and n >= max_docs:
            return
        n += 1
        yield text
    if n == 0:
        raise CmedbertError(f"{corpus_dir}: corpus has no documents")


class CorpusTexts:
    """A re-iterable view of a corpus folder's texts: every pass streams the shards again
    (through ``corpus.io``, which re-verifies them), so audit/extend/train need O(batch) memory,
    not O(corpus). ``len()`` is the number of documents (known after the first full pass)."""

    def __init__(self, corpus_dir: str | Path, max_docs: int = 0):
        self.corpus_dir, self.max_docs = corpus_dir, max_docs
        self._len: int | None = None

    def __iter__(self) -> Iterator[str]:
        n = 0
        for text in iter_corpus_texts(self.corpus_dir, self.max_docs):
            n += 1
            yield text
        self._len = n

    def __len__(self) -> int:
        if self._len is None:
            self._len = sum(1 for _ in self)
        return self._len


def corpus_texts(corpus_dir: str | Path, max_docs: int = 0) -> CorpusTexts:
    """The corpus texts (re-iterable, streaming); an empty or all-blank corpus is an error."""
    texts = CorpusTexts(corpus_dir, max_docs)
    if not any(t.strip() for t in texts):  # stops at the first non-blank document
        raise CmedbertError(f"{corpus_dir}: corpus has only empty documents")
    return texts


def batched(items: Iterable[str], n: int) -> Iterator[list[str]]:
    """Lists of up to ``n`` items from any iterable."""
    import itertools

    it = iter(items)
    while batch := list(itertools.islice(it, n)):
        yield batch


# --- characters ------------------------------------------------------------------------------

_LATIN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.+\-/%]*$")


def is_cjk(ch: str) -> bool:
    """The CJK ideograph ranges BERT's basic tokenizer splits one by one."""
    cp = ord(ch)
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF
            or 0x2A700 <= cp <= 0x2B73F or 0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF
            or 0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F)


def is_latin_word(word: str) -> bool:
    """ASCII letters/digits (a unit, abbreviation or lab name) containing at least one letter."""
    return bool(_LATIN.match(word)) and any(c.isalpha() for c in word)


# --- decoding (round trips) ------------------------------------------------------------------

def decode_words(vocab: list[str], ids: Iterable[int]) -> str:
    """Ids -> text in the normalized space: ``##`` pieces glue to the previous token, every other
    token starts a new space-separated word. Unlike ``tokenizer.decode`` it does no clean-up of
    spaces before punctuation, so for a default-mode tokenizer
    ``decode_words(vocab, ids) == " ".join(normalized_words(tok, text))`` whenever no word is
    [UNK] (a word the vocab cannot spell decodes as ``[UNK]``)."""
    out: list[str] = []
    for i in ids:
        t = vocab[int(i)]
        if t.startswith("##") and out:
            out[-1] += t[2:]
        else:
            out.append(t)
    return " ".join(out)
