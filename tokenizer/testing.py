"""Tiny corpus folders for tests and benchmarks, in exactly the format ``corpus/io.py`` documents
(``shards/part-NNNNN.parquet`` with columns text/source/doc_id + a stage-"corpus" manifest
listing each shard's path, sha256, rows and bytes). The real writer is ``corpus build``.

Also a tiny medical corpus and a bert-base-chinese-like base vocab that deliberately lacks the
character 癔 and all uppercase Latin letters, so [UNK]s occur the way they do with the real one."""

from __future__ import annotations

import json
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


SENTENCES = [
    "患者有糖尿病史，近期口服二甲双胍500mg，血糖控制可。",
    "CT示右肺结节，建议做MRI进一步检查。",
    "糖尿病肾病是糖尿病的常见并发症，需要控制血糖和血压。",
    "高血压患者应低盐饮食，定期监测血压。",
    "癔症患者需要心理治疗，家属应耐心陪伴。",
    "HbA1c 7.5%提示血糖控制不佳，应调整二甲双胍剂量。",
    "patient was given aspirin 100 mg daily.",
]
TERMS = ["糖尿病", "糖尿病肾病", "高血压", "二甲双胍", "血糖", "肺结节", "并发症", "心理治疗", "血压"]
SPECIALS = ["[PAD]", "[unused1]", "[unused2]", "[unused3]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def corpus_texts(n_copies: int = 4) -> list[str]:
    """Documents: each sentence repeated with a number, some documents hold two sentences."""
    docs = []
    for k in range(n_copies):
        for i, s in enumerate(SENTENCES):
            docs.append(f"{s}第{k}次复查。" if i % 2 else s + "\n" + SENTENCES[(i + k) % len(SENTENCES)])
    return docs


def base_vocab() -> list[str]:
    chars = sorted({c for t in corpus_texts() + TERMS for c in t if not c.isspace()} | set("第次复查0123456789"))
    chars = [c for c in chars if c != "癔" and not ("A" <= c <= "Z")]
    cont = ["##" + c for c in chars if c.isascii() and c.isalnum()]
    return SPECIALS + chars + cont + ["mg", "##mg"]


def write_base_tokenizer(folder: Path, vocab: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("".join(t + "\n" for t in vocab), encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": False}), encoding="utf-8")
    (folder / "config.json").write_text(json.dumps({"model_type": "bert", "vocab_size": len(vocab)}), encoding="utf-8")
    return folder
