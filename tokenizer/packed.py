"""The packed-shard format: the only thing the pretrainer reads.

A packed folder (stage "packed")::

    manifest.json   extra key "packed": {
                       "seq_len": int, "dtype": "uint16"|"uint32", "vocab_size": int,
                       "pad_id", "cls_id", "sep_id", "mask_id": int,
                       "tokenizer_hash": str, "corpus_manifest_hash": str,
                       "splits": {"train": {"ids": "train/ids.bin", "flags": "train/flags.bin",
                                            "n_seq": int, "n_tokens": int,    # non-pad tokens
                                            "fingerprints": {"ids": str, "flags": str}},
                                  "valid": {...}}}
    train/ids.bin   [n_seq, seq_len] token ids, little-endian, C order (np.memmap)
    train/flags.bin [n_seq, seq_len] uint8 bit flags per token (below)
    valid/...       a held-out split, same layout

Sequences are packed: ``[CLS] doc ... [SEP] doc ... [SEP]`` cut at ``seq_len``; only the
final sequence of a split may end in [PAD]. Token ids use uint16 when the vocab has fewer
than 65,536 entries, else uint32.

Integrity: every open checks each shard's size and its fingerprint (sha256 of the size and of
64 blocks of 4 KiB spread evenly over the file, 256 KiB read per shard whatever its size), so a
shard replaced or rewritten after packing is refused even at the same size. A change confined
to bytes between the sampled blocks is caught only by the full check (``open_packed(...,
full_check=True)`` or ``cmedbert tokenizer verify DIR``: sha256 of every file against the
manifest, streamed). Folders packed before fingerprints existed get the full check on every open.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cmedbert.artifact import read_manifest, sha256_file
from cmedbert.errors import ArtifactError

STAGE = "packed"

# flags.bin bits
WORD_START = 1  # first token of a (jieba / Latin) word; special tokens are their own word
ENTITY = 2  # token lies inside a KG entity span
ENTITY_START = 4  # first token of a KG entity span


FP_BLOCKS = 64
FP_BLOCK = 4096


def fingerprint(path: Path) -> str:
    """A cheap content fingerprint: sha256 of the size and of FP_BLOCKS blocks of FP_BLOCK bytes
    at evenly spaced offsets (first and last included); the whole file when it is that small."""
    size = path.stat().st_size
    h = hashlib.sha256(f"{size}:".encode())
    with open(path, "rb") as fh:
        if size <= FP_BLOCKS * FP_BLOCK:
            h.update(fh.read())
        else:
            for i in range(FP_BLOCKS):
                fh.seek((size - FP_BLOCK) * i // (FP_BLOCKS - 1))
                h.update(fh.read(FP_BLOCK))
    return "fp1:" + h.hexdigest()


def ids_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size < 65536 else np.dtype(np.uint32)


@dataclass
class PackedSplit:
    ids: np.ndarray  # [n_seq, seq_len] memmap
    flags: np.ndarray  # [n_seq, seq_len] uint8 memmap
    n_tokens: int  # non-pad tokens

    def __len__(self) -> int:
        return self.ids.shape[0]


@dataclass
class PackedData:
    folder: Path
    meta: dict[str, Any]  # manifest["packed"]
    manifest: dict[str, Any]

    @property
    def seq_len(self) -> int:
        return int(self.meta["seq_len"])

    @property
    def tokenizer_hash(self) -> str:
        return self.meta["tokenizer_hash"]

    def split(self, name: str) -> PackedSplit:
        splits = self.meta["splits"]
        if name not in splits:
            raise ArtifactError(f"{self.folder}: packed data has no split {name!r} (has {sorted(splits)})")
        s = splits[name]
        dtype = np.dtype(self.meta["dtype"])
        shape = (int(s["n_seq"]), self.seq_len)
        ids_path, flags_path = self.folder / s["ids"], self.folder / s["flags"]
        for p, itemsize in ((ids_path, dtype.itemsize), (flags_path, 1)):
            if not p.is_file():
                raise ArtifactError(f"{self.folder}: {p.name} of split {name!r} is missing")
            expected = shape[0] * shape[1] * itemsize
            if p.stat().st_size != expected:
                raise ArtifactError(f"{p}: {p.stat().st_size} bytes, manifest implies {expected} "
                                    f"({shape[0]} x {shape[1]} x {itemsize})")
        self._check_content(name, s, {"ids": ids_path, "flags": flags_path})
        if shape[0] == 0:
            return PackedSplit(np.zeros(shape, dtype), np.zeros(shape, np.uint8), 0)
        ids = np.memmap(ids_path, dtype=dtype, mode="r", shape=shape)
        flags = np.memmap(flags_path, dtype=np.uint8, mode="r", shape=shape)
        return PackedSplit(ids, flags, int(s.get("n_tokens", 0)))


    def _check_content(self, name: str, split: dict[str, Any], paths: dict[str, Path]) -> None:
        """Fingerprints recorded at packing (or, for older folders, the full sha256)."""
        fps = split.get("fingerprints")
        sha = {row["path"]: row.get("sha256") for row in self.manifest.get("outputs", [])}
        for kind, path in paths.items():
            if fps and kind in fps:
                ok = fingerprint(path) == fps[kind]
            else:
                rel = str(path.relative_to(self.folder))
                ok = sha.get(rel) is None or sha256_file(path) == sha[rel]
            if not ok:
                raise ArtifactError(f"{path}: content changed since packing (does not match the manifest of "
                                    f"{self.folder}): re-pack, or restore the file")

    def verify_full(self) -> int:
        """sha256 of every output file against the manifest (streamed); returns the bytes read."""
        read_manifest(self.folder, stage=STAGE, verify_outputs=True)
        return sum(int(row.get("bytes") or 0) for row in self.manifest.get("outputs", []))


def open_packed(folder: str | Path, expect_tokenizer_hash: str | None = None,
                full_check: bool = False) -> PackedData:
    """Open a packed folder; refuse it if its tokenizer hash differs from the expected one.
    Each split's shards are checked (size, fingerprint) when :meth:`PackedData.split` opens
    them; ``full_check`` also compares the sha256 of every file with the manifest now."""
    folder = Path(folder)
    manifest = read_manifest(folder, stage=STAGE, verify_outputs=full_check)
    meta = manifest.get("packed")
    if not meta:
        raise ArtifactError(f"{folder}: manifest has no 'packed' section")
    if expect_tokenizer_hash is not None and meta.get("tokenizer_hash") != expect_tokenizer_hash:
        raise ArtifactError(
            f"{folder}: packed with tokenizer {meta.get('tokenizer_hash')}, but the given tokenizer "
            f"has hash {expect_tokenizer_hash}: re-pack with this tokenizer or pass the one it was packed with")
    return PackedData(folder, meta, manifest)
