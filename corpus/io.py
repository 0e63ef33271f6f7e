"""The corpus artifact format, shared by the writer (``corpus.build``) and every reader.

A corpus folder holds::

    manifest.json      stage "corpus"; extra key "shards": [{path, sha256, rows, bytes}]
    config.json        the resolved CorpusConfig
    drops.jsonl        one line per dropped record: {reason, source, file, line, doc_id?}
    shards/part-00000.parquet ...   columns: text (str), source (str), doc_id (str)

Readers go through :func:`iter_documents`, which checks the manifest against the shards first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

from cmedbert.artifact import read_manifest, sha256_file
from cmedbert.errors import ArtifactError

STAGE = "corpus"
COLUMNS = ("text", "source", "doc_id")


def corpus_shards(corpus_dir: str | Path, verify: bool = True) -> list[Path]:
    """Shard paths of a corpus folder, in order, after checking them against the manifest."""
    corpus_dir = Path(corpus_dir)
    manifest = read_manifest(corpus_dir, stage=STAGE)
    shards = manifest.get("shards")
    if not shards:
        raise ArtifactError(f"{corpus_dir}: corpus manifest lists no shards (empty corpus)")
    paths = []
    for row in shards:
        p = corpus_dir / row["path"]
        if not p.is_file():
            raise ArtifactError(f"{corpus_dir}: shard {row['path']} listed in the manifest is missing")
        if verify and p.stat().st_size != row.get("bytes", p.stat().st_size):
            raise ArtifactError(f"{corpus_dir}: shard {row['path']} size does not match the manifest")
        if verify and row.get("sha256") and sha256_file(p) != row["sha256"]:
            raise ArtifactError(f"{corpus_dir}: shard {row['path']} does not match its sha256 in the manifest")
        paths.append(p)
    on_disk = sorted((corpus_dir / "shards").glob("*.parquet"))
    extra = sorted(set(on_disk) - set(paths))
    if extra:
        raise ArtifactError(f"{corpus_dir}: shard {extra[0].name} is not listed in the manifest")
    return paths


def iter_documents(corpus_dir: str | Path, verify: bool = True, batch_rows: int = 4096) -> Iterator[dict[str, Any]]:
    """Stream {text, source, doc_id} records of a corpus folder, shard by shard, in order."""
    import pyarrow.parquet as pq

    for path in corpus_shards(corpus_dir, verify=verify):
        pf = pq.ParquetFile(path)
        for batch in pf.iter_batches(batch_size=batch_rows, columns=list(COLUMNS)):
            cols = batch.to_pydict()
            for text, source, doc_id in zip(cols["text"], cols["source"], cols["doc_id"]):
                yield {"text": text, "source": source, "doc_id": doc_id}


def iter_texts(corpus_dir: str | Path, verify: bool = True) -> Iterator[str]:
    for doc in iter_documents(corpus_dir, verify=verify):
        yield doc["text"]
