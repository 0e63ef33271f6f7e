"""A tokenizer's identity: the hash that packed data and checkpoints pin."""

from __future__ import annotations

import hashlib
from pathlib import Path

from cmedbert.errors import ArtifactError

# Files that decide how text becomes ids. Config-only files (manifest, audit) do not count.
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "added_tokens.json")


def tokenizer_hash(folder: str | Path) -> str:
    """sha256 over (name, content) of the tokenizer files present in ``folder`` (16 hex chars).

    Two folders hash equal iff they hold byte-identical tokenizer files, wherever they live.
    """
    folder = Path(folder)
    present = [n for n in TOKENIZER_FILES if (folder / n).is_file()]
    if not present or not ((folder / "vocab.txt").is_file() or (folder / "tokenizer.json").is_file()):
        raise ArtifactError(f"{folder}: not a tokenizer folder (no vocab.txt or tokenizer.json)")
    h = hashlib.sha256()
    for name in present:
        h.update(name.encode())
        h.update(b"\0")
        h.update((folder / name).read_bytes())
        h.update(b"\0")
    return h.hexdigest()[:16]
