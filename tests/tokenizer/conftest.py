"""Fixtures of the tokenizer tests: a tiny bert-base-chinese-like base tokenizer folder (vocab.txt +
tokenizer_config.json + config.json, no tokenizer.json, like ../shared/data/vocab/bert-base-chinese),
a tiny medical corpus folder and a KG term list (data in ``tokenizer.testing``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cmedbert.tokenizer.testing import TERMS, base_vocab, corpus_texts, write_base_tokenizer, write_corpus_folder

@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory) -> Path:
    return write_base_tokenizer(tmp_path_factory.mktemp("base") / "tok", base_vocab())


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> Path:
    return write_corpus_folder(tmp_path_factory.mktemp("corpus") / "c", corpus_texts(), rows_per_shard=10)


@pytest.fixture(scope="session")
def kg_file(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("kg") / "terms.txt"
    # THUOCL-style term<TAB>freq lines, a blank line and a CRLF line must all be read
    p.write_text("糖尿病\t100\n糖尿病肾病\t20\n\n" + "\r\n".join(TERMS[2:]) + "\r\n", encoding="utf-8")
    return p


@pytest.fixture(scope="session")
def extended(tmp_path_factory, tiny_base, tiny_corpus, kg_file) -> dict[str, Path]:
    """Default-mode and term-mode extensions of the tiny base (built once per session)."""
    from cmedbert.config import load_config
    from cmedbert.tokenizer.extend import ExtendConfig, main

    out = {}
    for mode in ("default", "term"):
        cfg = load_config(ExtendConfig, None, [f"base={tiny_base}", f"corpus={tiny_corpus}", f"mode={mode}",
                                               f'kg_terms=["{kg_file}"]', "min_char_count=2", "min_latin_count=2",
                                               "min_term_count=2", "word_fertility=false"])
        out[mode] = tmp_path_factory.mktemp(f"ext_{mode}") / "tok"
        main(cfg, out[mode])
    return out
