"""train (WordPiece from scratch) and audit (JSON + table), through the CLI."""

from __future__ import annotations

import json

from cmedbert.artifact import read_manifest
from cmedbert.tokenizer.base import load_tokenizer
from cmedbert.tokenizer.testing import corpus_texts


def test_train_wordpiece_loads_with_autotokenizer(tmp_path, tiny_corpus):
    from cmedbert.cli import main

    out = tmp_path / "tok"
    assert main(["tokenizer", "train", f"corpus={tiny_corpus}", "vocab_size=300", "min_frequency=2",
                 "word_fertility=false", "--out", str(out)]) == 0
    tok = load_tokenizer(out)
    assert type(tok).__name__ in ("BertTokenizer", "BertTokenizerFast")
    assert len(tok) % 64 == 0 and len(tok) >= 64
    assert [tok.convert_ids_to_tokens(i) for i in range(5)] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    # BERT-Chinese normalization: every CJK character is its own token, never [UNK] on its corpus
    assert tok.tokenize("糖尿病") == ["糖", "尿", "病"]
    for text in corpus_texts():
        assert tok.unk_token_id not in tok(text)["input_ids"]
    assert tok("血糖")["input_ids"][0] == tok.cls_token_id
    m = read_manifest(out, stage="tokenizer")
    assert m["tokenizer"]["kind"] == "trained" and m["counts"]["vocab_size"] == len(tok)
    assert (out / "vocab.txt").read_text(encoding="utf-8").splitlines()[:2] == ["[PAD]", "[UNK]"]


def test_audit_cli_shortcuts_json_and_table(tmp_path, tiny_base, tiny_corpus, kg_file, capsys):
    from cmedbert.cli import main

    out = tmp_path / "audit"
    assert main(["tokenizer", "audit", "--tokenizer", str(tiny_base), "--corpus", str(tiny_corpus),
                 f'kg_terms=["{kg_file}"]', "--out", str(out)]) == 0
    audit = json.loads((out / "audit.json").read_text(encoding="utf-8"))
    texts = corpus_texts()
    assert audit["n_docs"] == len(texts)
    assert audit["n_chars"] == sum(1 for t in texts for c in t if not c.isspace())
    assert 0 < audit["unk_rate_token"] < audit["unk_rate_char"] < 1
    top_strings = dict(audit["top_unk_strings"])
    assert top_strings["癔"] == sum(t.count("癔") for t in texts)
    assert "HbA1c" in top_strings and "CT" in top_strings
    assert audit["kg"]["covered_without_unk"] == 1.0 and audit["kg"]["single_token"] == 0.0
    assert audit["tokens_per_word"] > audit["tokens_per_char"] > 0.5
    table = (out / "audit.txt").read_text(encoding="utf-8")
    assert "unk_rate_token" in table and "top [UNK] strings" in table
    assert "unk_rate_token" in capsys.readouterr().out
    assert read_manifest(out, stage="tokenizer-audit")["counts"]["n_docs"] == len(texts)


def test_demo_chain_train_then_extend_then_pack(tmp_path, tiny_corpus, kg_file):
    """The demo's path: a base trained on 'general' text, extended on the medical corpus, packed."""
    from cmedbert.cli import main
    from cmedbert.tokenizer.packed import open_packed
    from cmedbert.tokenizer.testing import write_corpus_folder

    general = write_corpus_folder(tmp_path / "general", ["今天天气很好，我们去公园散步。", "他在学校学习数学和语文。"] * 5)
    assert main(["tokenizer", "train", f"corpus={general}", "vocab_size=200", "min_frequency=1",
                 "word_fertility=false", "--out", str(tmp_path / "base")]) == 0
    assert main(["tokenizer", "extend", f"base={tmp_path / 'base'}", f"corpus={tiny_corpus}", "mode=term",
                 f'kg_terms=["{kg_file}"]', "min_char_count=1", "min_latin_count=1", "min_term_count=1",
                 "word_fertility=false", "--out", str(tmp_path / "ext")]) == 0
    base, ext = load_tokenizer(tmp_path / "base"), load_tokenizer(tmp_path / "ext")
    extension = json.loads((tmp_path / "ext" / "extension.json").read_text(encoding="utf-8"))
    assert extension["base_vocab_size"] == len(base) and len(ext) % 64 == 0
    assert ext.tokenize("糖尿病") == [ext.convert_ids_to_tokens(ext.convert_tokens_to_ids("糖尿病"))]
    assert not any(t.startswith("[unused") and t in base.get_vocab()
                   for t in [x["token"] for x in extension["tokens"]])  # fillers continue the numbering
    for text in corpus_texts():
        assert ext.unk_token_id not in ext(text)["input_ids"]
    assert main(["tokenizer", "pack", f"corpus={tiny_corpus}", f"tokenizer={tmp_path / 'ext'}", "seq_len=64",
                 "workers=1", f'kg_terms=["{kg_file}"]', "--out", str(tmp_path / "packed")]) == 0
    assert open_packed(tmp_path / "packed").split("train").ids.max() < len(ext)
