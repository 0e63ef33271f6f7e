"""The parts of `cmedbert tokenizer pack` (:mod:`cmedbert.tokenizer.pack` picks who runs them): corpus
folder + tokenizer folder -> packed folder (format: ``tokenizer/packed.py``).

* split by document: a document goes to ``valid`` iff
  ``int(sha256(f"{split_seed}:{doc_id}")[:16], 16) / 2**64 < valid_fraction`` (stable under
  re-ordering, re-sharding and adding documents);
* tokens and flags come from :mod:`tokenizer.segment` in ``workers`` processes
  (``multiprocessing.Pool`` whose initializer loads the tokenizer, jieba and the user dictionary
  once per process; ``imap`` keeps document order, so the output does not depend on ``workers``);
* streaming: documents are read batch by batch and sequences are appended to the ``.bin`` files
  as soon as they are full; memory is O(batch), not O(corpus);
* packing per split: ``[CLS] doc1 [SEP] doc2 [SEP] …`` cut every ``seq_len`` tokens, each
  sequence starting with its own [CLS] (a long document continues in the next sequence); only the
  last sequence of a split is padded with [PAD] (flags 0). [CLS]/[SEP] are WORD_START.
"""

from __future__ import annotations

import collections
import hashlib
import logging
import multiprocessing as mp
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Iterator, Sequence

import numpy as np

from cmedbert.artifact import manifest_hash, read_manifest, write_manifest
from cmedbert.corpus.config import SlurmConfig
from cmedbert.errors import ArtifactError, CmedbertError, ConfigError
from cmedbert.paths import resolve
from cmedbert.tokenizer import packed
from cmedbert.tokenizer.base import load_tokenizer
from cmedbert.tokenizer.hashing import tokenizer_hash
from cmedbert.tokenizer.segment import Segmented, Segmenter, init_worker, segment_batch

log = logging.getLogger(__name__)
SPLITS = ("train", "valid")


@dataclass
class PackConfig:
    corpus: str = field(default="", metadata={"path": "path", "help": "corpus folder (stage 'corpus') (required)"})
    tokenizer: str = field(default="", metadata={"path": "path", "help": "tokenizer folder (stage 'tokenizer' or any HF folder) (required)"})
    seq_len: int = field(default=128, metadata={"help": "tokens per packed sequence, [CLS]/[SEP] included (e.g. 128, 512)"})
    valid_fraction: float = field(default=0.01, metadata={"help": "share of documents held out as 'valid' (by doc_id hash)"})
    split_seed: int = field(default=0, metadata={"help": "salt of the doc_id hash that assigns splits"})
    kg_terms: list[str] = field(default_factory=list, metadata={"path": "path",
        "help": "KG term lists: jieba user dictionary and entity spans ('${data_root}/…' = the data root)"})
    entity_flags: bool = field(default=True, metadata={"help": "set ENTITY/ENTITY_START flags for KG terms"})
    jieba_hmm: bool = field(default=True, metadata={"help": "let jieba's HMM join unknown words (slower, better words)"})
    segmenter: str = field(default="jieba_fast_dat", metadata={
        "help": "jieba_fast_dat (jieba's words, route in C++; falls back to jieba when not installed) | jieba"})
    workers: int = field(default=2, metadata={"help": "segmentation processes (1 = in this process)", "affects_output": False})
    batch_docs: int = field(default=256, metadata={"help": "documents per work item sent to a worker"})
    max_docs: int = field(default=0, metadata={"help": "pack only the first N documents (0 = all)"})
    executor: str = field(default="inline", metadata={"affects_output": False,
        "help": "inline (this process + `workers` segmentation processes) | local | slurm: datatrove tasks, each "
                "segmenting one range of documents, then one task packing the streams in order (same bytes as "
                "inline)"})
    tasks: int = field(default=2, metadata={"affects_output": False, "help": "datatrove segmentation tasks (executor local|slurm)"})
    work_dir: str = field(default="", metadata={"path": "path", "affects_output": False,
        "help": "token streams and datatrove logs (empty = .OUT.datatrove beside the output; shared FS for slurm)"})
    slurm: SlurmConfig = field(default_factory=SlurmConfig, metadata={"affects_output": False, "help": "executor=slurm settings"})

    def validate(self) -> None:
        if not self.corpus or not self.tokenizer:
            raise ConfigError("pack needs 'corpus' and 'tokenizer' folders")
        if self.seq_len < 8:
            raise ConfigError(f"seq_len must be >= 8 tokens, got {self.seq_len}")
        if not 0.0 <= self.valid_fraction < 1.0:
            raise ConfigError(f"valid_fraction must be in [0, 1), got {self.valid_fraction}")
        from cmedbert.tokenizer.segment import SEGMENTERS

        if self.segmenter not in SEGMENTERS:
            raise ConfigError(f"segmenter must be one of {SEGMENTERS}, got {self.segmenter!r}")
        if self.workers < 1 or self.batch_docs < 1 or self.max_docs < 0:
            raise ConfigError("workers and batch_docs must be >= 1, max_docs >= 0")
        if self.executor not in ("inline", "local", "slurm"):
            raise ConfigError(f"executor must be inline, local or slurm, got {self.executor!r}")
        if self.tasks < 1:
            raise ConfigError(f"tasks must be >= 1, got {self.tasks}")


def split_of(doc_id: str, valid_fraction: float, seed: int = 0) -> str:
    """'valid' or 'train' for a document, from a salted sha256 of its id (see module doc)."""
    if valid_fraction <= 0:
        return "train"
    h = int(hashlib.sha256(f"{seed}:{doc_id}".encode("utf-8")).hexdigest()[:16], 16)
    return "valid" if h / 2**64 < valid_fraction else "train"


class SplitWriter:
    """Appends packed sequences of one split to ``ids.bin`` / ``flags.bin`` as they fill."""

    def __init__(self, folder: Path, seq_len: int, dtype: np.dtype, cls_id: int, sep_id: int, pad_id: int):
        folder.mkdir(parents=True, exist_ok=True)
        self.seq_len, self.dtype = seq_len, dtype.newbyteorder("<")
        self.cls_id, self.sep_id, self.pad_id = cls_id, sep_id, pad_id
        self.ids_fh: BinaryIO = open(folder / "ids.bin", "wb")
        self.flags_fh: BinaryIO = open(folder / "flags.bin", "wb")
        self.pend_ids: list[np.ndarray] = []
        self.pend_flags: list[np.ndarray] = []
        self.pending = 0
        self.n_seq = self.n_tokens = self.n_docs = 0

    def add(self, ids: np.ndarray, flags: np.ndarray) -> None:
        """One document: its tokens, then [SEP]."""
        self.n_docs += 1
        self._push([ids, np.array([self.sep_id], np.uint32)], [flags, np.array([packed.WORD_START], np.uint8)])

    def add_stream(self, ids: np.ndarray, flags: np.ndarray, n_docs: int = 0) -> None:
        """Tokens of whole documents as :class:`StreamWriter` wrote them (each already followed by
        its [SEP]): packing them gives the same sequences as adding the documents one by one."""
        self.n_docs += n_docs
        if len(ids):
            self._push([ids.astype(np.uint32, copy=False)], [flags])

    def _push(self, ids_parts: list[np.ndarray], flag_parts: list[np.ndarray]) -> None:
        self.pend_ids += ids_parts
        self.pend_flags += flag_parts
        self.pending += sum(len(x) for x in ids_parts)
        body = self.seq_len - 1
        if self.pending >= body:
            ids_all, flags_all = np.concatenate(self.pend_ids), np.concatenate(self.pend_flags)
            n_full = len(ids_all) // body
            self._emit(ids_all[:n_full * body].reshape(n_full, body), flags_all[:n_full * body].reshape(n_full, body))
            rest = n_full * body
            self.pend_ids, self.pend_flags = [ids_all[rest:]], [flags_all[rest:]]
            self.pending = len(ids_all) - rest

    def _emit(self, ids: np.ndarray, flags: np.ndarray) -> None:
        n = ids.shape[0]
        seq = np.empty((n, self.seq_len), dtype=self.dtype)
        seq[:, 0] = self.cls_id
        seq[:, 1:] = ids
        fl = np.empty((n, self.seq_len), dtype=np.uint8)
        fl[:, 0] = packed.WORD_START
        fl[:, 1:] = flags
        self.ids_fh.write(seq.tobytes())
        self.flags_fh.write(fl.tobytes())
        self.n_seq += n
        self.n_tokens += n * self.seq_len

    def close(self) -> None:
        if self.pending:
            ids_all, flags_all = np.concatenate(self.pend_ids), np.concatenate(self.pend_flags)
            body = self.seq_len - 1
            ids = np.full((1, body), self.pad_id, dtype=np.uint32)
            flags = np.zeros((1, body), dtype=np.uint8)
            ids[0, :len(ids_all)], flags[0, :len(flags_all)] = ids_all, flags_all
            self._emit(ids, flags)
            self.n_tokens -= body - len(ids_all)  # padding is not counted
            self.pending = 0
        self.ids_fh.close()
        self.flags_fh.close()


class StreamWriter:
    """One task's share of a split as a flat token stream (``uint32`` ids, ``uint8`` flags; each
    document followed by [SEP]); :meth:`SplitWriter.add_stream` packs the streams of all tasks in
    order into exactly the sequences a single-process pack writes."""

    def __init__(self, stem: Path, sep_id: int) -> None:
        stem.parent.mkdir(parents=True, exist_ok=True)
        self.stem, self.sep_id = stem, sep_id
        self.ids_fh: BinaryIO = open(f"{stem}.ids", "wb")
        self.flags_fh: BinaryIO = open(f"{stem}.flags", "wb")
        self.n_docs = 0

    def add(self, ids: np.ndarray, flags: np.ndarray) -> None:
        self.ids_fh.write(np.concatenate([ids.astype(np.uint32, copy=False), [self.sep_id]]).astype("<u4").tobytes())
        self.flags_fh.write(np.concatenate([flags, [packed.WORD_START]]).astype(np.uint8).tobytes())
        self.n_docs += 1

    def close(self) -> None:
        self.ids_fh.close()
        self.flags_fh.close()


def _doc_batches(cfg: PackConfig, counts: dict[str, Any], lo: int = 0, hi: int | None = None
                 ) -> Iterator[tuple[list[str], list[str]]]:
    """(texts, splits) batches from the corpus, in corpus order, of the documents numbered
    ``lo <= i < hi`` (all by default); empty documents are counted."""
    from cmedbert.corpus.io import iter_documents

    texts: list[str] = []
    splits: list[str] = []
    n = 0
    for i, doc in enumerate(iter_documents(cfg.corpus)):
        if (cfg.max_docs and i >= cfg.max_docs) or (hi is not None and i >= hi):
            break
        if i < lo:
            continue
        n += 1
        text = doc["text"] or ""
        if not text.strip():
            counts["empty_docs"] += 1
            continue
        texts.append(text)
        splits.append(split_of(str(doc["doc_id"]), cfg.valid_fraction, cfg.split_seed))
        if len(texts) >= cfg.batch_docs:
            yield texts, splits
            texts, splits = [], []
    counts["docs_in"] = n
    if texts:
        yield texts, splits


def _segmented_batches(cfg: PackConfig, terms: Sequence[str], batches: Iterator[tuple[list[str], list[str]]]
                       ) -> Iterator[tuple[Segmented, list[str]]]:
    """Segment batches in ``cfg.workers`` processes, yielding results in input order.

    Streaming with back-pressure: at most ``2 * workers`` batches are read ahead."""
    tok_dir = str(Path(cfg.tokenizer).absolute())
    if cfg.workers == 1:
        seg = Segmenter(tok_dir, terms, hmm=cfg.jieba_hmm, entities=cfg.entity_flags, segmenter=cfg.segmenter)
        for texts, splits in batches:
            yield seg.segment(texts), splits
        return
    ctx = mp.get_context("spawn")  # fork after loading Rust tokenizers / torch is not safe
    window: collections.deque = collections.deque()
    with ctx.Pool(cfg.workers, initializer=init_worker,
                  initargs=(tok_dir, list(terms), cfg.jieba_hmm, cfg.entity_flags, cfg.segmenter)) as pool:
        # apply_async with a bounded window (not imap, which reads the whole input eagerly):
        # at most 2 batches per worker in flight, results taken in submission order.
        for texts, splits in batches:
            window.append((pool.apply_async(segment_batch, (texts,)), splits))
            if len(window) >= 2 * cfg.workers:
                res, sp = window.popleft()
                yield res.get(), sp
        while window:
            res, sp = window.popleft()
            yield res.get(), sp


def check_tokenizer_files(tok_dir: Path, tok: Any) -> None:
    """A tokenizer folder made by this pipeline must match its manifest (sha256 of every file);
    any folder's vocab.txt (line i = id i) must list every token of the tokenizer. The fast
    tokenizer reads tokenizer.json, so a cut or edited vocab.txt would otherwise go unnoticed
    until decoding or publishing."""
    if (tok_dir / "manifest.json").is_file():
        read_manifest(tok_dir, verify_outputs=True)
    vocab = tok_dir / "vocab.txt"
    if vocab.is_file():
        with open(vocab, encoding="utf-8", errors="replace") as fh:
            n = sum(1 for _ in fh)
        if n != len(tok):
            raise ArtifactError(f"{vocab}: {n} lines, but the tokenizer has {len(tok)} tokens "
                                "(vocab.txt cut or edited?): restore the tokenizer folder")
        model_vocab = _model_vocab_size(tok_dir)
        if model_vocab is not None and -(-n // 128) * 128 < model_vocab:  # a model may pad its vocab to x128
            raise ArtifactError(f"{vocab}: {n} lines, but the model config next to it has vocab_size "
                                f"{model_vocab} (vocab.txt cut?): restore the tokenizer folder")


def _model_vocab_size(tok_dir: Path) -> int | None:
    """``vocab_size`` of a Hugging Face model config.json in the folder (not a stage's config)."""
    import json

    try:
        cfg = json.loads((tok_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(cfg, dict) or "model_type" not in cfg or not isinstance(cfg.get("vocab_size"), int):
        return None
    return cfg["vocab_size"]


def check_inputs(cfg: PackConfig) -> tuple[Any, str, str]:
    """Tokenizer (loaded), its hash and the corpus manifest hash; clear errors for bad inputs."""
    tok_dir = Path(cfg.tokenizer)
    tok = load_tokenizer(str(tok_dir))
    if not tok_dir.is_dir():
        raise ArtifactError(f"pack needs a tokenizer folder, not a hub id: {cfg.tokenizer}")
    check_tokenizer_files(tok_dir, tok)
    read_manifest(cfg.corpus, stage="corpus")
    from cmedbert.corpus.io import corpus_shards

    corpus_shards(cfg.corpus)  # verifies every shard against the manifest before any work
    for name in ("cls_token_id", "sep_token_id", "pad_token_id", "mask_token_id"):
        if getattr(tok, name) is None:
            raise ArtifactError(f"{tok_dir}: tokenizer has no {name[:-9]} token; cannot pack")
    return tok, tokenizer_hash(tok_dir), manifest_hash(cfg.corpus)


def new_counts() -> dict[str, Any]:
    return {"docs_in": 0, "empty_docs": 0, "docs": {s: 0 for s in SPLITS}, "words": 0, "entity_spans": 0,
            "text_bytes": 0}


def segment_into(cfg: PackConfig, terms: Sequence[str], writers: dict[str, Any], counts: dict[str, Any],
                 lo: int = 0, hi: int | None = None) -> None:
    """Segment documents ``lo..hi`` and add each to the writer of its split, in corpus order."""
    for seg, splits in _segmented_batches(cfg, terms, _doc_batches(cfg, counts, lo, hi)):
        ends = np.cumsum(seg.lengths)
        for i, split in enumerate(splits):
            a, b = int(ends[i] - seg.lengths[i]), int(ends[i])
            if b > a:
                writers[split].add(seg.ids[a:b], seg.flags[a:b])
            else:
                counts["empty_docs"] += 1
        counts["words"] += seg.n_words
        counts["entity_spans"] += seg.n_entities
        counts["text_bytes"] += seg.n_bytes


def split_writers(cfg: PackConfig, tok: Any, tmp: Path) -> dict[str, SplitWriter]:
    dtype = packed.ids_dtype(len(tok))
    return {s: SplitWriter(tmp / s, cfg.seq_len, dtype, tok.cls_token_id, tok.sep_token_id, tok.pad_token_id)
            for s in SPLITS}


def finish(cfg: PackConfig, tmp: Path, tok: Any, tok_hash: str, corpus_hash: str,
           writers: dict[str, SplitWriter], counts: dict[str, Any]) -> dict[str, Any]:
    """Checks, split metadata and the manifest of a packed folder whose writers are closed."""
    dtype = packed.ids_dtype(len(tok))
    if writers["train"].n_docs == 0:
        raise CmedbertError(f"{cfg.corpus}: no non-empty documents to pack (into the train split)")
    if cfg.valid_fraction > 0 and writers["valid"].n_docs == 0:
        log.warning("valid split is empty: no doc_id fell under valid_fraction=%s (corpus too small?)",
                    cfg.valid_fraction)
    splits_meta = {}
    for s, w in writers.items():
        counts["docs"][s] = w.n_docs
        splits_meta[s] = {"ids": f"{s}/ids.bin", "flags": f"{s}/flags.bin", "n_seq": w.n_seq, "n_tokens": w.n_tokens,
                          "fingerprints": {k: packed.fingerprint(tmp / f"{s}/{k}.bin") for k in ("ids", "flags")}}
    counts["tokens"] = {s: w.n_tokens for s, w in writers.items()}
    meta = {"seq_len": cfg.seq_len, "dtype": dtype.name, "vocab_size": len(tok),
            "pad_id": tok.pad_token_id, "cls_id": tok.cls_token_id, "sep_id": tok.sep_token_id,
            "mask_id": tok.mask_token_id, "tokenizer_hash": tok_hash, "corpus_manifest_hash": corpus_hash,
            "splits": splits_meta}
    inputs = [cfg.corpus, cfg.tokenizer] + [str(resolve(p)) for p in cfg.kg_terms]
    manifest = write_manifest(tmp, stage=packed.STAGE, config=cfg, inputs=inputs, counts=counts,
                              extra={"packed": meta})
    log.info("packed %d docs: train %d seq, valid %d seq of %d tokens", counts["docs_in"],
             splits_meta["train"]["n_seq"], splits_meta["valid"]["n_seq"], cfg.seq_len)
    return manifest
