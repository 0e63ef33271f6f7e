"""Tiny local fixtures for tests and benchmarks: a WordPiece tokenizer folder and packed folders
written exactly per ``tokenizer/packed.py`` (no hub, no packer needed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from cmedbert.artifact import write_manifest
from cmedbert.tokenizer.hashing import tokenizer_hash
from cmedbert.tokenizer.packed import ENTITY, ENTITY_START, WORD_START, ids_dtype

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def make_tokenizer(folder: str | Path, tokens: Sequence[str], specials_first: bool = True) -> Path:
    """A BERT WordPiece tokenizer folder: the 5 specials then ``tokens`` (chars / pieces), or,
    with ``specials_first=False``, exactly ``tokens`` in order (a full vocab.txt that already holds
    the specials, e.g. bert-base-chinese). Loadable with ``AutoTokenizer.from_pretrained(folder)``."""
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordPiece
    from transformers import BertTokenizerFast

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    order = list(SPECIALS) + [t for t in tokens if t not in SPECIALS] if specials_first else list(tokens)
    vocab: dict[str, int] = {}
    for t in order:
        vocab.setdefault(t, len(vocab))
    tok = Tokenizer(WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=False, handle_chinese_chars=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    fast = BertTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", sep_token="[SEP]", pad_token="[PAD]",
                             cls_token="[CLS]", mask_token="[MASK]", do_lower_case=False)
    fast.save_pretrained(str(folder))
    if not (folder / "vocab.txt").is_file():
        (folder / "vocab.txt").write_text("".join(t + "\n" for t in vocab), encoding="utf-8")
    return folder


def extend_tokenizer(base_dir: str | Path, out_dir: str | Path, new_tokens: Sequence[str]) -> Path:
    """Extended tokenizer folder: the base vocab + ``new_tokens`` appended, and an ``extension.json``
    whose ``base_pieces`` are the base ids each new token splits into."""
    from transformers import AutoTokenizer

    base = AutoTokenizer.from_pretrained(str(base_dir))
    n_base = len(base)
    vocab = [t for t, _ in sorted(base.get_vocab().items(), key=lambda kv: kv[1])]
    out = make_tokenizer(out_dir, vocab[len(SPECIALS):] + list(new_tokens))
    rows = [{"token": t, "id": n_base + i, "origin": "test", "count": 1,
             "base_pieces": base.convert_tokens_to_ids(base.tokenize(t))} for i, t in enumerate(new_tokens)]
    (out / "extension.json").write_text(json.dumps({"base": str(base_dir), "base_vocab_size": n_base,
                                                     "vocab_size": n_base + len(rows), "mode": "extend",
                                                     "tokens": rows}, ensure_ascii=False))
    return out


def synthetic_split(rng: np.random.Generator, n_seq: int, seq_len: int, vocab_size: int,
                    n_special: int = len(SPECIALS)) -> tuple[np.ndarray, np.ndarray]:
    """Packed-looking sequences: [CLS] doc [SEP] doc [SEP] ... with words of 1-3 tokens, some
    entity spans, and a learnable pattern (each word repeats a token) so loss can fall."""
    cls_id, sep_id = SPECIALS.index("[CLS]"), SPECIALS.index("[SEP]")
    ids = np.zeros((n_seq, seq_len), dtype=np.int64)
    flags = np.zeros((n_seq, seq_len), dtype=np.uint8)
    for r in range(n_seq):
        pos = 0
        ids[r, 0], flags[r, 0] = cls_id, WORD_START
        pos = 1
        while pos < seq_len:
            if rng.random() < 0.08:
                ids[r, pos], flags[r, pos] = sep_id, WORD_START
                pos += 1
                continue
            wl = int(rng.integers(1, 4))
            tok = int(rng.integers(n_special, vocab_size))
            ent = rng.random() < 0.2
            for j in range(min(wl, seq_len - pos)):
                ids[r, pos + j] = tok if j % 2 == 0 else (tok * 7 + 3) % (vocab_size - n_special) + n_special
                flags[r, pos + j] = (WORD_START if j == 0 else 0) | (ENTITY if ent else 0) | \
                    (ENTITY_START if ent and j == 0 else 0)
            pos += wl
    return ids, flags


def write_packed(folder: str | Path, tokenizer_dir: str | Path, splits: dict[str, tuple[np.ndarray, np.ndarray]],
                 vocab_size: int | None = None, pad_id: int = 0, cls_id: int = 2, sep_id: int = 3,
                 mask_id: int = 4) -> Path:
    """Write a packed folder (stage "packed") from ``{split: (ids, flags)}`` arrays."""
    from transformers import AutoTokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    vocab_size = vocab_size or len(tok)
    dtype = ids_dtype(vocab_size)
    seq_len = next(iter(splits.values()))[0].shape[1]
    meta_splits = {}
    for name, (ids, flags) in splits.items():
        (folder / name).mkdir(exist_ok=True)
        np.ascontiguousarray(ids, dtype=dtype).astype(dtype.newbyteorder("<")).tofile(folder / name / "ids.bin")
        np.ascontiguousarray(flags, dtype=np.uint8).tofile(folder / name / "flags.bin")
        meta_splits[name] = {"ids": f"{name}/ids.bin", "flags": f"{name}/flags.bin", "n_seq": int(ids.shape[0]),
                             "n_tokens": int((ids != pad_id).sum())}
    packed = {"seq_len": int(seq_len), "dtype": dtype.name, "vocab_size": int(vocab_size), "pad_id": pad_id,
              "cls_id": cls_id, "sep_id": sep_id, "mask_id": mask_id,
              "tokenizer_hash": tokenizer_hash(tokenizer_dir), "corpus_manifest_hash": "test", "splits": meta_splits}
    write_manifest(folder, stage="packed", config={"source": "cmedbert.pretrain.testing"}, inputs=[],
                   counts={k: v["n_seq"] for k, v in meta_splits.items()}, extra={"packed": packed})
    return folder


def tiny_setup(root: str | Path, seq_len: int = 32, n_train: int = 64, n_valid: int = 16, n_chars: int = 200,
               seed: int = 0) -> tuple[Path, Path]:
    """A tokenizer folder (5 specials + ``n_chars`` CJK chars) and a packed folder for it."""
    root = Path(root)
    chars = [chr(0x4E00 + i) for i in range(n_chars)]
    tok_dir = make_tokenizer(root / "tokenizer", chars)
    rng = np.random.default_rng(seed)
    vocab = len(SPECIALS) + n_chars
    packed = write_packed(root / f"packed{seq_len}", tok_dir,
                          {"train": synthetic_split(rng, n_train, seq_len, vocab),
                           "valid": synthetic_split(rng, n_valid, seq_len, vocab)})
    return tok_dir, packed


def tiny_run_config(tokenizer_dir: str | Path, packed: str | Path, max_steps: int = 6, **sections) -> dict:
    """A plain-data PretrainConfig for a tiny CPU run (hidden 32, 1 layer, fp32, ZeRO-2);
    ``sections`` update the tables, e.g. ``engine={"zero_stage": 0}``."""
    cfg = {"tokenizer": str(tokenizer_dir), "data": {"path": str(packed)},
           "model": {"preset": "tiny", "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                     "intermediate_size": 64, "max_position_embeddings": 64},
           "batch": {"global_batch": 4, "micro_batch": 2}, "train": {"max_steps": max_steps},
           "optimizer": {"lr": 3e-3, "warmup_steps": 1},
           "engine": {"zero_stage": 2, "precision": "fp32"},
           "checkpoint": {"every": 0, "keep_last": 2}, "eval": {"every": 0, "max_sequences": 16},
           "metrics": {"log_every": 1, "progress_bar": False}}
    for key, val in sections.items():
        if isinstance(val, dict):
            cfg.setdefault(key, {}).update(val)
        else:
            cfg[key] = val
    return cfg


def child_process_env() -> dict[str, str]:
    """The environment for a child torchrun / pretrain process in a test: this process's, without a
    launcher's rendezvous variables (a stale RANK / MASTER_PORT would join the wrong group), one
    thread per process (2 processes on 2 cores), unbuffered output."""
    import os

    from cmedbert.pretrain.engine import _LAUNCH_ENV

    env = {k: v for k, v in os.environ.items() if k not in _LAUNCH_ENV}
    return {**env, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (a rendezvous port for a test's process group)."""
    from cmedbert.pretrain.engine import _free_port

    return _free_port()
