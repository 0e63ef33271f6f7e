"""extend: [UNK] repair, term mode, default mode leaves the base's spelling alone, padding, files."""

from __future__ import annotations

import json

import pytest

from cmedbert.artifact import read_manifest
from cmedbert.config import load_config
from cmedbert.errors import CmedbertError
from cmedbert.tokenizer.base import load_tokenizer, normalized_words
from cmedbert.tokenizer.extend import ExtendConfig, main as extend_main

from cmedbert.tokenizer.testing import SENTENCES, TERMS, corpus_texts


def _ids(tok, text):
    return tok.backend_tokenizer.encode(text, add_special_tokens=False).ids


def test_base_folder_loads_like_bert_base_chinese(tiny_base):
    tok = load_tokenizer(tiny_base)
    assert type(tok).__name__ in ("BertTokenizer", "BertTokenizerFast")
    assert tok.tokenize("CT示") == ["[UNK]", "示"]
    assert tok.tokenize("癔症") == ["[UNK]", "症"]


def test_default_mode_repairs_unk_and_pads(extended, tiny_base):
    folder = extended["default"]
    tok = load_tokenizer(folder)
    base = load_tokenizer(tiny_base)
    ext = json.loads((folder / "extension.json").read_text(encoding="utf-8"))
    assert len(tok) % 64 == 0 and ext["vocab_size"] == len(tok)
    assert ext["base_vocab_size"] == len(base) and ext["mode"] == "default"
    added = {t["token"]: t for t in ext["tokens"]}
    assert added["癔"]["origin"] == "char"
    assert added["癔"]["count"] == sum(t.count("癔") for t in corpus_texts()) > 0
    for word in ("CT", "MRI", "HbA1c"):
        assert added[word]["origin"] == "latin"
        assert tok.tokenize(word) == [word]
    assert not any(t["origin"] == "term" for t in ext["tokens"])
    # ids are contiguous after the base, fillers last, and base_pieces are base ids of the string
    assert [t["id"] for t in ext["tokens"]] == list(range(len(base), len(tok)))
    assert added["CT"]["base_pieces"] == _ids(base, "ct") and added["CT"]["pieces_from"] == "nfkc_lower"
    assert added["癔"]["base_pieces"] == [base.unk_token_id]
    fillers = [t for t in ext["tokens"] if t["origin"] == "pad"]
    assert fillers and all(t["token"].startswith("[unused") and t["base_pieces"] == [] for t in fillers)
    # the audit before/after is in the manifest and the [UNK] rate drops to zero on this corpus
    m = read_manifest(folder, stage="tokenizer")
    assert m["audit"]["before"]["unk_rate_token"] > 0.01
    assert m["audit"]["after"]["unk_rate_token"] == 0.0
    assert (folder / "audit.json").is_file() and (folder / "config.json").is_file()


def test_default_mode_changes_nothing_the_base_could_spell(extended, tiny_base):
    base, tok = load_tokenizer(tiny_base), load_tokenizer(extended["default"])
    checked = 0
    for text in corpus_texts() + TERMS:
        for word in normalized_words(base, text):
            b = _ids(base, word)
            if base.unk_token_id not in b:
                assert _ids(tok, word) == b, word
                checked += 1
    assert checked > 100
    # a KG term is spelled character by character, exactly as by the base
    for term in TERMS:
        assert _ids(tok, term) == _ids(base, term) and len(_ids(tok, term)) == len(term)


def test_term_mode_makes_kg_terms_single_tokens(extended, tiny_base):
    base, tok = load_tokenizer(tiny_base), load_tokenizer(extended["term"])
    ext = json.loads((extended["term"] / "extension.json").read_text(encoding="utf-8"))
    terms = {t["token"]: t for t in ext["tokens"] if t["origin"] == "term"}
    assert {"糖尿病", "糖尿病肾病", "二甲双胍", "血糖"} <= set(terms)
    vocab = tok.get_vocab()
    for term in ("糖尿病", "糖尿病肾病", "二甲双胍"):
        assert _ids(tok, term) == [vocab[term]] == [terms[term]["id"]]
        assert terms[term]["base_pieces"] == _ids(base, term)
    # leftmost-longest matching inside running text, offsets still point into the raw text
    enc = tok.backend_tokenizer.encode("他患糖尿病肾病多年", add_special_tokens=False)
    assert enc.ids[2] == vocab["糖尿病肾病"] and enc.offsets[2] == (2, 7)
    # a term only matches as a whole: split by a space it falls back to characters
    assert vocab["糖尿病"] not in _ids(tok, "糖 尿病")
    # counts are occurrences under the final matching; term mode lowers fertility
    assert terms["糖尿病肾病"]["count"] >= 4
    m = read_manifest(extended["term"], stage="tokenizer")
    assert m["audit"]["after"]["tokens_per_char"] < m["audit"]["before"]["tokens_per_char"]
    assert m["audit"]["after"]["kg"]["single_token"] > 0.5 > m["audit"]["before"]["kg"]["single_token"]


def test_extend_cli_and_bad_inputs(tmp_path, tiny_base, tiny_corpus):
    from cmedbert.cli import main

    out = tmp_path / "tok"
    rc = main(["tokenizer", "extend", f"base={tiny_base}", f"corpus={tiny_corpus}", "min_char_count=2",
               "word_fertility=false", "--out", str(out)])
    assert rc == 0 and (out / "tokenizer.json").is_file() and (out / "vocab.txt").is_file()
    # a tokenizer folder without a vocab
    empty = tmp_path / "novocab"
    empty.mkdir()
    (empty / "tokenizer_config.json").write_text("{}")
    assert main(["tokenizer", "extend", f"base={empty}", f"corpus={tiny_corpus}", "--out", str(tmp_path / "x")]) == 2
    with pytest.raises(CmedbertError, match="no vocab.txt or tokenizer.json"):
        extend_main(load_config(ExtendConfig, None, [f"base={empty}", f"corpus={tiny_corpus}"]), tmp_path / "y")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
    # term mode without KG lists is a config error
    with pytest.raises(CmedbertError, match="kg_terms"):
        load_config(ExtendConfig, None, [f"base={tiny_base}", f"corpus={tiny_corpus}", "mode=term"])


def test_empty_and_mismatched_corpus_are_clear_errors(tmp_path, tiny_base):
    from cmedbert.tokenizer.testing import write_corpus_folder

    empty = write_corpus_folder(tmp_path / "empty", [])
    cfg = load_config(ExtendConfig, None, [f"base={tiny_base}", f"corpus={empty}"])
    with pytest.raises(CmedbertError, match="no documents|empty"):
        extend_main(cfg, tmp_path / "out1")
    bad = write_corpus_folder(tmp_path / "bad", SENTENCES)
    shard = next((bad / "shards").glob("*.parquet"))
    shard.write_bytes(shard.read_bytes() + b"x")  # shard no longer matches the manifest
    cfg = load_config(ExtendConfig, None, [f"base={tiny_base}", f"corpus={bad}"])
    with pytest.raises(CmedbertError, match="does not match"):
        extend_main(cfg, tmp_path / "out2")
    assert not (tmp_path / "out1").exists() and not (tmp_path / "out2").exists()


@pytest.mark.slow
def test_real_bert_base_chinese_on_shared_medical_text(tmp_path, shared_file):
    """bert-base-chinese + 400 lines of the shared medical text: the [UNK] rate drops."""
    from cmedbert.tokenizer.testing import write_corpus_folder

    vocab_dir = shared_file("vocab/bert-base-chinese")
    tok = load_tokenizer(vocab_dir)
    assert len(tok) == 21128 and tok.convert_tokens_to_ids("[UNK]") == 100
    lines = shared_file("corpus/zhongjing/huatuo26M_test.json").read_text(encoding="utf-8")
    docs = [r["instruction"][0] + "\n" + r["output"][0] for r in json.loads(lines)[:400]]
    corpus = write_corpus_folder(tmp_path / "c", docs)
    cfg = load_config(ExtendConfig, None, [f"base={vocab_dir}", f"corpus={corpus}", "min_char_count=2",
                                           "min_latin_count=2", "word_fertility=false"])
    m = extend_main(cfg, tmp_path / "tok")
    before, after = m["audit"]["before"]["unk_rate_token"], m["audit"]["after"]["unk_rate_token"]
    assert before > 0 and after < before / 2
    assert m["counts"]["vocab_size"] % 64 == 0


def test_a_new_token_that_would_respell_a_known_word_is_dropped(tmp_path):
    """'abc' is [UNK] for the base (no '##c'), but adding it would re-spell 'abcd' (ab ##cd ->
    abc ##d): default mode must drop it."""
    import collections

    from cmedbert.tokenizer.extend import NewToken, drop_changing
    from cmedbert.tokenizer.testing import write_base_tokenizer

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "ab", "##cd", "##d", "x", "##y"]
    base = load_tokenizer(write_base_tokenizer(tmp_path / "b", vocab))
    assert base.tokenize("abc") == ["[UNK]"] and base.tokenize("abcd") == ["ab", "##cd"]
    words = collections.Counter({"abc": 5, "abcd": 5, "xyz": 5})
    kept, dropped = drop_changing(base, vocab, [NewToken("abc", "latin", 5), NewToken("xyz", "latin", 5)], words)
    assert dropped == ["abc"] and [t.token for t in kept] == ["xyz"]


def test_lowercase_option_reuses_base_pieces(tmp_path, tiny_base, tiny_corpus):
    """lowercase=true (right for bert-base-chinese, whose vocab has no uppercase): CT and MRI are
    spelled with existing pieces instead of new tokens; the audit 'before' is the base as shipped."""
    cfg = load_config(ExtendConfig, None, [f"base={tiny_base}", f"corpus={tiny_corpus}", "lowercase=true",
                                           "min_char_count=2", "min_latin_count=2", "word_fertility=false"])
    m = extend_main(cfg, tmp_path / "tok")
    tok = load_tokenizer(tmp_path / "tok")
    ext = json.loads((tmp_path / "tok" / "extension.json").read_text(encoding="utf-8"))
    added = {t["token"] for t in ext["tokens"]}
    assert ext["do_lower_case"] is True and "CT" not in added and "MRI" not in added
    assert tok.tokenize("CT") == ["c", "##t"] and tok.tokenize("MRI") == ["m", "##r", "##i"]
    assert "hba1c" in added and tok.tokenize("HbA1c") == ["hba1c"]  # no 'h' in the base vocab
    assert m["audit"]["before"]["unk_rate_token"] > 0.01 and m["audit"]["after"]["unk_rate_token"] == 0.0
