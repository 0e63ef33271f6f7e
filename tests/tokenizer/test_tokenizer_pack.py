"""Whole-word flags and packing: alignment, round trip, determinism, manifest, bad inputs."""

from __future__ import annotations

import numpy as np
import pytest

from cmedbert.artifact import manifest_hash
from cmedbert.config import load_config
from cmedbert.errors import ArtifactError, CmedbertError
from cmedbert.tokenizer import packed
from cmedbert.tokenizer.base import decode_words, load_tokenizer, normalized_words, vocab_list
from cmedbert.tokenizer.hashing import tokenizer_hash
from cmedbert.tokenizer.pack import PackConfig, main as pack_main, split_of
from cmedbert.tokenizer.segment import Segmenter
from cmedbert.tokenizer.testing import TERMS, corpus_texts, write_corpus_folder


def test_word_start_flags_align_with_jieba_words(tiny_base):
    seg = Segmenter(tiny_base, TERMS)
    text = "患者有糖尿病史，口服二甲双胍500mg。"
    r = seg.segment([text])
    vocab = vocab_list(load_tokenizer(tiny_base))
    toks = [vocab[i] for i in r.ids]
    assert toks[:6] == ["患", "者", "有", "糖", "尿", "病"]
    words = seg.words(text)
    assert "糖尿病" in words and "二甲双胍" in words and "500mg" in words
    # every non-initial piece of a multi-character word is a continuation
    pos = 0
    flags = r.flags.tolist()
    for w in words:
        n = len(seg.backend.encode(w, add_special_tokens=False).ids)
        assert flags[pos] & packed.WORD_START, w
        assert all(not f & packed.WORD_START for f in flags[pos + 1:pos + n]), w
        pos += n
    assert pos == len(toks)
    # the Latin word 500mg is one word in several pieces (5 ##0 ##0 ##mg): one word start
    i = toks.index("##mg")
    assert toks[i - 3:i] == ["5", "##0", "##0"]
    assert [f & packed.WORD_START for f in flags[i - 3:i + 1]] == [packed.WORD_START, 0, 0, 0]
    # KG terms are entity spans: ENTITY on every token, ENTITY_START on the first only
    k = toks.index("糖")
    assert [f & (packed.ENTITY | packed.ENTITY_START) for f in flags[k:k + 3]] == [6, 2, 2]
    assert not flags[k - 1] & packed.ENTITY and not flags[k + 3] & packed.ENTITY


def test_latin_pieces_stay_one_word_even_if_jieba_splits():
    """A pre-tokenized word split by jieba (here at a user word inside it) is still one word."""
    from cmedbert.tokenizer.segment import Segmenter as S

    seg = S.__new__(S)
    seg.jieba, seg.hmm, seg.terms = None, True, frozenset()
    seg.words = lambda text: ["ab", "cd"]  # jieba would cut inside the Latin word "abcd"
    flags, n_words, _ = S.flags(seg, "abcd", [(0, 2), (2, 4)], [0, 0])
    assert flags.tolist() == [packed.WORD_START, 0] and n_words == 2


def _pack(tmp_path, corpus, tok, name="p", **kw):
    args = [f"corpus={corpus}", f"tokenizer={tok}", "kg_terms=[]", "workers=1"]
    args += [f"{k}={v}" for k, v in kw.items()]
    return pack_main(load_config(PackConfig, None, args), tmp_path / name)


def _docs_from_split(split, cls_id, sep_id, pad_id):
    """Undo packing: drop each sequence's [CLS], concatenate, cut at [SEP], drop the padding."""
    flat = split.ids[:, 1:].reshape(-1) if len(split) else np.zeros(0, np.uint16)
    assert (split.ids[:, 0] == cls_id).all()
    flat = flat[flat != pad_id] if len(flat) else flat
    docs, cur = [], []
    for i in flat.tolist():
        if i == sep_id:
            docs.append(cur)
            cur = []
        else:
            cur.append(i)
    assert cur == []
    return docs


def test_pack_round_trip_reproduces_normalized_text(tmp_path, tiny_base, tiny_corpus, extended):
    for name, tok_dir in (("default", extended["default"]), ("term", extended["term"])):
        m = _pack(tmp_path, tiny_corpus, tok_dir, name=name, seq_len=16, valid_fraction=0.3)
        tok = load_tokenizer(tok_dir)
        vocab = vocab_list(tok)
        data = packed.open_packed(tmp_path / name, expect_tokenizer_hash=tokenizer_hash(tok_dir))
        meta = data.meta
        assert meta["corpus_manifest_hash"] == manifest_hash(tiny_corpus)
        assert meta["dtype"] == "uint16" and meta["seq_len"] == 16 and meta["vocab_size"] == len(tok)
        texts = corpus_texts()
        doc_ids = [f"test-{i:07d}" for i in range(len(texts))]
        for split in ("train", "valid"):
            want = [t for t, d in zip(texts, doc_ids) if split_of(d, 0.3) == split]
            s = data.split(split)
            got = _docs_from_split(s, meta["cls_id"], meta["sep_id"], meta["pad_id"])
            assert len(got) == len(want) > 0
            for ids, text in zip(got, want):
                norm = " ".join(normalized_words(tok, text))
                if name == "default":  # exact, word for word
                    assert decode_words(vocab, ids) == norm
                else:  # term tokens are whole words: equal up to spaces
                    assert decode_words(vocab, ids).replace(" ", "") == norm.replace(" ", "")
            assert s.n_tokens == int((s.ids != meta["pad_id"]).sum()) == m["packed"]["splits"][split]["n_tokens"]
            # only the last sequence may hold padding, with flags 0 there
            assert not (s.ids[:-1] == meta["pad_id"]).any()
            assert (s.flags[s.ids == meta["pad_id"]] == 0).all()
        assert m["counts"]["docs"]["train"] + m["counts"]["docs"]["valid"] == len(texts)


def test_special_tokens_flags_and_no_unk_in_round_trip_corpus(tmp_path, tiny_corpus, extended):
    _pack(tmp_path, tiny_corpus, extended["default"], seq_len=32, valid_fraction=0.0)
    data = packed.open_packed(tmp_path / "p")
    s = data.split("train")
    special = (s.ids == data.meta["cls_id"]) | (s.ids == data.meta["sep_id"])
    assert (s.flags[special] & packed.WORD_START).all()
    assert len(data.split("valid")) == 0
    assert not (s.ids == load_tokenizer(extended["default"]).unk_token_id).any()


@pytest.mark.slow
def test_pack_two_processes_is_byte_identical_and_streaming_flags(tmp_path, tiny_corpus, extended, kg_file):
    tok = extended["default"]  # character tokens, so entity spans cover several tokens
    common = [f"corpus={tiny_corpus}", f"tokenizer={tok}", f'kg_terms=["{kg_file}"]', "seq_len=32",
              "valid_fraction=0.2", "batch_docs=3"]
    for w in (1, 2):
        pack_main(load_config(PackConfig, None, common + [f"workers={w}"]), tmp_path / f"w{w}")
    for split in ("train", "valid"):
        for f in ("ids.bin", "flags.bin"):
            assert (tmp_path / "w1" / split / f).read_bytes() == (tmp_path / "w2" / split / f).read_bytes()
    data = packed.open_packed(tmp_path / "w2")
    flags = data.split("train").flags
    n_start, n_ent = ((flags & packed.ENTITY_START) > 0).sum(), ((flags & packed.ENTITY) > 0).sum()
    assert 0 < n_start < n_ent


def test_split_rule_is_deterministic_by_doc_id():
    ids = [f"doc-{i}" for i in range(2000)]
    a = [split_of(d, 0.1) for d in ids]
    assert a == [split_of(d, 0.1) for d in ids]
    assert 100 < a.count("valid") < 300
    assert [split_of(d, 0.1, seed=1) for d in ids] != a
    assert all(split_of(d, 0.0) == "train" for d in ids)


def test_pack_cli_and_bad_inputs(tmp_path, tiny_base, tiny_corpus, extended):
    from cmedbert.cli import main

    out = tmp_path / "cli"
    assert main(["tokenizer", "pack", f"corpus={tiny_corpus}", f"tokenizer={tiny_base}", "seq_len=128",
                 "workers=1", "--out", str(out)]) == 0
    data = packed.open_packed(out, expect_tokenizer_hash=tokenizer_hash(tiny_base))
    assert data.split("train").ids.shape[1] == 128
    with pytest.raises(ArtifactError, match="re-pack"):
        packed.open_packed(out, expect_tokenizer_hash=tokenizer_hash(extended["term"]))
    # a corpus whose manifest does not match its shards
    bad = write_corpus_folder(tmp_path / "bad", ["患者有糖尿病史。"] * 3)
    shard = next((bad / "shards").glob("*.parquet"))
    shard.write_bytes(shard.read_bytes()[:-1] + b"\0")
    with pytest.raises(CmedbertError, match="does not match"):
        _pack(tmp_path, bad, tiny_base, name="o1")
    # an empty corpus and a corpus of blank documents
    with pytest.raises(CmedbertError, match="no shards|empty"):
        _pack(tmp_path, write_corpus_folder(tmp_path / "empty", []), tiny_base, name="o2")
    with pytest.raises(CmedbertError, match="no non-empty documents"):
        _pack(tmp_path, write_corpus_folder(tmp_path / "blank", [" ", "\n"]), tiny_base, name="o3")
    # a tokenizer folder without vocab
    (tmp_path / "novocab").mkdir()
    with pytest.raises(CmedbertError, match="no vocab.txt"):
        _pack(tmp_path, tiny_corpus, tmp_path / "novocab", name="o4")
    assert not any((tmp_path / n).exists() for n in ("o1", "o2", "o3", "o4"))


@pytest.mark.slow
def test_pack_as_datatrove_tasks_is_byte_identical_to_inline(tmp_path, tiny_corpus, extended, kg_file):
    """2 datatrove segmentation tasks (document ranges) + the assembling task write the same bytes
    and counts as the single-process pack."""
    import json

    tok = extended["default"]
    common = [f"corpus={tiny_corpus}", f"tokenizer={tok}", f'kg_terms=["{kg_file}"]', "seq_len=32",
              "valid_fraction=0.2", "batch_docs=3", "workers=1"]
    ref = pack_main(load_config(PackConfig, None, common), tmp_path / "inline")
    got = pack_main(load_config(PackConfig, None, common + ["executor=local", "tasks=2"]), tmp_path / "dt")
    for split in ("train", "valid"):
        for f in ("ids.bin", "flags.bin"):
            assert (tmp_path / "inline" / split / f).read_bytes() == (tmp_path / "dt" / split / f).read_bytes()
    assert got["counts"] == ref["counts"] and got["packed"] == ref["packed"]
    assert not (tmp_path / ".dt.datatrove").exists()
    assert json.loads((tmp_path / "dt" / "manifest.json").read_text())["config"]["executor"] == "local"


def test_a_shard_changed_after_packing_is_refused(tmp_path, tiny_corpus, extended, capsys):
    """Overwritten at the same size (sequences reordered, or one token changed): refused by the
    fingerprint when the split is opened, and by the full sha256 check (`tokenizer verify`)."""
    from cmedbert.cli import main

    _pack(tmp_path, tiny_corpus, extended["default"], name="a", seq_len=16, valid_fraction=0.0)
    assert main(["tokenizer", "verify", str(tmp_path / "a")]) == 0
    assert "every file matches its manifest sha256" in capsys.readouterr().out
    ids_path = tmp_path / "a" / "train" / "ids.bin"
    original = ids_path.read_bytes()
    ids = packed.open_packed(tmp_path / "a").split("train").ids
    for changed in (np.ascontiguousarray(ids[::-1]).tobytes(),  # same tokens, other order
                    original[:2] + bytes([original[2] ^ 1]) + original[3:]):  # one token id changed
        assert len(changed) == len(original) and changed != original
        ids_path.write_bytes(changed)
        with pytest.raises(ArtifactError, match="content changed since packing"):
            packed.open_packed(tmp_path / "a").split("train")
        with pytest.raises(ArtifactError, match="does not match its sha256"):
            packed.open_packed(tmp_path / "a", full_check=True)
        assert main(["tokenizer", "verify", str(tmp_path / "a")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("cmedbert tokenizer: error:") and err.count("\n") == 1 and "ids.bin" in err
    ids_path.write_bytes(original)
    assert len(packed.open_packed(tmp_path / "a", full_check=True).split("train")) == len(ids)


def test_fingerprint_samples_big_files_and_the_full_check_reads_all(tmp_path):
    """Above FP_BLOCKS x FP_BLOCK bytes the fingerprint reads 64 blocks: a rewrite is caught, a
    single byte between two blocks only by the full sha256 (what `tokenizer verify` runs)."""
    from cmedbert.artifact import sha256_file

    f = tmp_path / "big.bin"
    data = bytearray(np.random.default_rng(0).integers(0, 256, packed.FP_BLOCKS * packed.FP_BLOCK * 3, np.uint8))
    f.write_bytes(bytes(data))
    fp, sha = packed.fingerprint(f), sha256_file(f)
    f.write_bytes(bytes(data[::-1]))
    assert packed.fingerprint(f) != fp
    gap = (len(data) - packed.FP_BLOCK) // (packed.FP_BLOCKS - 1)
    data[packed.FP_BLOCK + (gap - packed.FP_BLOCK) // 2] ^= 1  # between the first two sampled blocks
    f.write_bytes(bytes(data))
    assert packed.fingerprint(f) == fp and sha256_file(f) != sha


@pytest.mark.parametrize("which", ["base", "extended"])
def test_pack_refuses_a_vocab_txt_cut_in_half(tmp_path, tiny_base, tiny_corpus, extended, capsys, which):
    """The fast tokenizer reads tokenizer.json, so a cut vocab.txt loads fine: pack checks it
    against the folder's manifest (pipeline tokenizers) and the tokenizer's size (any folder)."""
    import shutil

    from cmedbert.cli import main

    tok = tmp_path / "tok"
    shutil.copytree(tiny_base if which == "base" else extended["default"], tok)
    lines = (tok / "vocab.txt").read_text(encoding="utf-8").splitlines(keepends=True)
    (tok / "vocab.txt").write_text("".join(lines[: len(lines) // 2]), encoding="utf-8")
    rc = main(["tokenizer", "pack", f"corpus={tiny_corpus}", f"tokenizer={tok}", "workers=1", "kg_terms=[]",
               "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "vocab.txt" in err, err
    assert not (tmp_path / "out").exists()
