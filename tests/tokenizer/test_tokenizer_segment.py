"""Segmenter backends and batch alignment: the fast path gives jieba's words and the same flags as
the per-document reference implementation (real shared documents when present, tiny data always)."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from cmedbert.tokenizer.base import read_terms
from cmedbert.tokenizer.segment import FastJieba, PlainJieba, Segmenter, build_segmenter
from cmedbert.tokenizer.testing import TERMS, corpus_texts

KG = ["kg/qasystem-medicalkg/dict/disease.txt", "kg/qasystem-medicalkg/dict/symptom.txt",
      "kg/qasystem-medicalkg/dict/drug.txt", "kg/qasystem-medicalkg/dict/check.txt",
      "kg/thuocl/THUOCL_medical.txt"]
# texts that exercise every branch of FastJieba.cut: HMM runs with digits/percent/decimals (where
# jieba_fast_dat's own cut differs), periodic blocks (route ties), English runs, user words with '-'
EDGE = ["血糖40%，体温37.5℃，24%-43%之间", "急急急医生你好", "片片片片片和银片片", "哈哈哈哈哈", "变硬变脆，易患高血压",
        "低密度脂蛋白-胆固醇偏高，C-肽正常", "这亇我在吃三歺", "口服二甲双胍500mg bid，HbA1c 7.2%",
        "", " \n\t", "\u200b", "糖尿病", "a", "ABC abc 123 1.5 --", "\r\n患者\r\n\r\n主诉：头痛"]


def _assert_same(a, r) -> None:
    for f in ("ids", "flags", "lengths"):
        np.testing.assert_array_equal(getattr(a, f), getattr(r, f), err_msg=f)
    assert (a.n_words, a.n_entities, a.n_bytes) == (r.n_words, r.n_entities, r.n_bytes)


@pytest.fixture(scope="module")
def shared_docs(shared_data):
    """~600 real documents from three shared corpora (GB18030 dialogues, JSON Q&A, long text)."""
    root = shared_data
    toyhom = (root / "corpus/toyhom-dialogue/内科.txt").read_bytes().decode("gb18030", errors="replace")
    docs = [p for p in toyhom.split("\n\n") if p.strip()][:250]
    huatuo = json.loads((root / "corpus/zhongjing/huatuo26M_test.json").read_text(encoding="utf-8"))
    docs += [r["instruction"][0] + "\n" + r["output"][0] for r in huatuo[:250]]
    covid = (root / "corpus/covid-dialogue/COVID-Dialogue-Dataset-Chinese.txt").read_text(encoding="utf-8")
    docs += [p for p in covid.split("\n\n") if p.strip()][:100]
    return docs, read_terms(root / p for p in KG), str(root / "vocab/bert-base-chinese")


@pytest.mark.parametrize("hmm", [True, False])
def test_fast_segmenter_gives_jiebas_words_on_real_documents(shared_docs, hmm):
    docs, terms, _ = shared_docs
    fast, ref = FastJieba(terms, hmm), PlainJieba(terms, hmm)
    for d in docs + EDGE:
        assert fast.cut(d) == ref.cut(d), d[:80]


@pytest.mark.parametrize("hmm", [True, False])
def test_fast_segmenter_gives_jiebas_words_on_edge_cases(hmm):
    fast, ref = FastJieba(TERMS + ["低密度脂蛋白-胆固醇", "变硬"], hmm), PlainJieba(TERMS + ["低密度脂蛋白-胆固醇", "变硬"], hmm)
    for d in EDGE + corpus_texts():
        assert fast.cut(d) == ref.cut(d), d


def test_batch_alignment_is_the_per_document_reference_on_real_documents(shared_docs):
    docs, terms, tok_dir = shared_docs
    new = Segmenter(tok_dir, terms)  # default: jieba_fast_dat + batch alignment
    old = Segmenter(tok_dir, terms, segmenter="jieba")
    assert isinstance(new.seg, FastJieba) and isinstance(old.seg, PlainJieba)
    docs = docs + EDGE
    for i in range(0, len(docs), 128):
        _assert_same(new.segment(docs[i:i + 128]), old.segment_reference(docs[i:i + 128]))
    assert new.segment(docs).flags.any()


@pytest.mark.parametrize("entities", [True, False])
def test_batch_alignment_is_the_per_document_reference_on_tiny_data(tiny_base, entities):
    new = Segmenter(tiny_base, TERMS, entities=entities)
    old = Segmenter(tiny_base, TERMS, entities=entities, segmenter="jieba")
    texts = corpus_texts() + EDGE
    r = new.segment(texts)
    _assert_same(r, old.segment_reference(texts))
    assert (r.n_entities > 0) == entities
    for only_empty in ([""], [" ", "\n"], []):  # batches without a single token
        _assert_same(new.segment(only_empty), old.segment_reference(only_empty))


def test_missing_fast_package_falls_back_to_jieba(monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "jieba_fast_dat", None)  # import raises ImportError
    seg = build_segmenter(TERMS, True, "jieba_fast_dat")
    assert isinstance(seg, PlainJieba) and "not installed" in caplog.text
    with pytest.raises(ValueError, match="segmenter must be one of"):
        build_segmenter(TERMS, True, "ltp")


def test_pack_output_does_not_depend_on_the_segmenter(tmp_path, tiny_corpus, extended, kg_file):
    from cmedbert.config import load_config
    from cmedbert.errors import ConfigError
    from cmedbert.tokenizer.pack import PackConfig, main as pack_main

    common = [f"corpus={tiny_corpus}", f"tokenizer={extended['default']}", f'kg_terms=["{kg_file}"]',
              "seq_len=32", "valid_fraction=0.2", "batch_docs=4", "workers=1"]
    for s in ("jieba", "jieba_fast_dat"):
        m = pack_main(load_config(PackConfig, None, common + [f"segmenter={s}"]), tmp_path / s)
        assert m["counts"]["words"] > 0
    for split in ("train", "valid"):
        for f in ("ids.bin", "flags.bin"):
            assert (tmp_path / "jieba" / split / f).read_bytes() == (tmp_path / "jieba_fast_dat" / split / f).read_bytes()
    with pytest.raises(ConfigError, match="segmenter"):
        load_config(PackConfig, None, common + ["segmenter=ltp"]).validate()
