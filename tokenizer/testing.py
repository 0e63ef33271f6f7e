"""Tiny corpus folders for tests and benchmarks, in exactly the format ``corpus/io.py`` documents
(``shards/part-NNNNN.parquet`` with columns text/source/doc_id + a stage-"corpus" manifest
listing each shard's path, sha256, rows and bytes). The real writer is ``corpus build``."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

from cmedbert.artifact import sha256_file, write_manifest


def write_corpus_folder(folder: str | Path, texts: Sequence[str], *, source: str = "test",
                        rows_per_shard: int = 0, doc_ids: Iterable[str] | None = None) -> Path:
    """Write ``texts`` as a corpus folder (one shard unless ``rows_per_shard``)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = Path(folder)
    (folder / "shards").mkdir(parents=True, exist_ok=True)
    ids = list(doc_ids) if doc_ids is not None else [f"{source}-{i:07d}" for i in range(len(texts))]
    step = rows_per_shard or max(len(texts), 1)
    shards = []
    for k, start in enumerate(range(0, max(len(texts), 1), step)):
        part = list(texts[start:start + step])
        table = pa.table({"text": part, "source": [source] * len(part), "doc_id": ids[start:start + step]})
        rel = f"shards/part-{k:05d}.parquet"
        pq.write_table(table, folder / rel)
        shards.append({"path": rel, "sha256": sha256_file(folder / rel), "rows": len(part),
                       "bytes": (folder / rel).stat().st_size})
    (folder / "drops.jsonl").write_text("", encoding="utf-8")
    write_manifest(folder, stage="corpus", config={"source": source}, counts={"records_out": len(texts)},
                   extra={"shards": shards})
    return folder
