"""`cmedbert tokenizer pack`: corpus folder + tokenizer folder -> packed folder
(format: ``tokenizer/packed.py``).

:func:`main` picks who runs the work of :mod:`cmedbert.tokenizer.packing` (config, document split,
segmentation, writers, manifest): this process (``executor=inline``) or datatrove tasks
(:mod:`cmedbert.tokenizer.pack_distributed`, same bytes). It sits above both, so they never import
each other in a circle.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cmedbert.artifact import atomic_output
from cmedbert.paths import resolve
from cmedbert.tokenizer.base import read_terms
from cmedbert.tokenizer.packing import (SPLITS, PackConfig, check_inputs, finish, new_counts,  # noqa: F401
                                        segment_into, split_of, split_writers)


def main(cfg: PackConfig, out: str | Path) -> dict[str, Any]:
    tok, tok_hash, corpus_hash = check_inputs(cfg)
    if cfg.executor != "inline":
        from cmedbert.tokenizer import pack_distributed

        return pack_distributed.run(cfg, Path(out))
    terms = read_terms(resolve(p) for p in cfg.kg_terms)
    counts = new_counts()
    with atomic_output(out) as tmp:
        writers = split_writers(cfg, tok, tmp)
        try:
            segment_into(cfg, terms, writers, counts)
        finally:
            for w in writers.values():
                w.close()
        return finish(cfg, tmp, tok, tok_hash, corpus_hash, writers, counts)
