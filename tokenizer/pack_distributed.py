"""``tokenizer pack`` as datatrove tasks (``executor=local|slurm``).

Segmentation (jieba + WordPiece, the expensive part) is spread over ``tasks`` datatrove tasks:
task ``r`` segments the documents numbered ``[r*n/tasks, (r+1)*n/tasks)`` of the corpus and writes
one flat token stream per split (each document followed by [SEP]). One final task packs the
streams of all tasks, in task order, into the ``[n_seq, seq_len]`` memmaps and writes the
manifest: the concatenated stream is the single-process stream, so the packed folder is
byte-identical to ``executor=inline`` for the same input and seed (tested).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from cmedbert.artifact import atomic_output, atomic_write_text, read_manifest
from cmedbert.corpus.distributed import PipelineStep, _quiet_datatrove, default_work_dir
from cmedbert.errors import CmedbertError
from cmedbert.tokenizer.packing import (SPLITS, PackConfig, StreamWriter, check_inputs, finish, new_counts,
                                        segment_into, split_writers)

CHUNK_TOKENS = 1 << 22  # tokens read back per step when packing the streams (memory stays O(chunk))


def corpus_docs(cfg: PackConfig) -> int:
    """Documents to pack: the corpus' kept documents (manifest), capped by ``max_docs``."""
    n = int(read_manifest(cfg.corpus, stage="corpus")["counts"]["records_out"])
    return min(n, cfg.max_docs) if cfg.max_docs else n


class _PackStep(PipelineStep):
    type = "🔢 - TOKENIZE"

    def __init__(self, cfg: PackConfig, work: Path) -> None:
        super().__init__()
        self.cfg, self.work = cfg, Path(work)

    def stem(self, rank: int, split: str) -> Path:
        return self.work / "streams" / f"rank-{rank:05d}.{split}"

    def run(self, data: Iterable | None = None, rank: int = 0, world_size: int = 1):
        self.run_task(rank, world_size)
        return None


class SegmentStep(_PackStep):
    """Segment one contiguous range of documents into per-split token streams."""
    name = "pack: segment a document range"

    def run_task(self, rank: int, world_size: int) -> None:
        from cmedbert.paths import resolve
        from cmedbert.tokenizer.base import load_tokenizer, read_terms

        cfg = self.cfg
        n = corpus_docs(cfg)
        lo, hi = rank * n // world_size, (rank + 1) * n // world_size
        tok = load_tokenizer(str(Path(cfg.tokenizer)))
        terms = read_terms(resolve(p) for p in cfg.kg_terms)
        counts = new_counts()
        writers = {s: StreamWriter(self.stem(rank, s), tok.sep_token_id) for s in SPLITS}
        try:
            if hi > lo:
                segment_into(cfg, terms, writers, counts, lo, hi)
        finally:
            for w in writers.values():
                w.close()
        counts["docs"] = {s: w.n_docs for s, w in writers.items()}
        self.stat_update("documents", value=counts["docs_in"])
        atomic_write_text(self.work / "streams" / f"rank-{rank:05d}.json",
                          json.dumps({"lo": lo, "hi": hi, "counts": counts}) + "\n")


class AssembleStep(_PackStep):
    """Pack every task's streams, in order, into the packed folder (atomically) + manifest."""
    name = "pack: assemble sequences + manifest"

    def __init__(self, cfg: PackConfig, work: Path, out: Path, tasks: int) -> None:
        super().__init__(cfg, work)
        self.out, self.tasks = Path(out), tasks

    def run_task(self, rank: int, world_size: int) -> None:
        cfg = self.cfg
        tok, tok_hash, corpus_hash = check_inputs(cfg)
        parts = []
        for r in range(self.tasks):
            f = self.work / "streams" / f"rank-{r:05d}.json"
            if not f.is_file():
                raise CmedbertError(f"{self.work}: segmentation task {r} has no result (did it fail?)")
            parts.append(json.loads(f.read_text(encoding="utf-8")))
        n = corpus_docs(cfg)  # reads the corpus manifest: once, not twice per task
        if [(p["lo"], p["hi"]) for p in parts] != [(r * n // self.tasks, (r + 1) * n // self.tasks)
                                                   for r in range(self.tasks)]:
            raise CmedbertError(f"{self.work}: the segmentation tasks do not cover the corpus exactly once")
        counts = new_counts()
        for p in parts:
            for key in ("docs_in", "empty_docs", "words", "entity_spans", "text_bytes"):
                counts[key] += p["counts"][key]
        with atomic_output(self.out) as tmp:
            writers = split_writers(cfg, tok, tmp)
            try:
                for split in SPLITS:
                    for r, p in enumerate(parts):
                        self._pack_stream(writers[split], self.stem(r, split), p["counts"]["docs"][split])
            finally:
                for w in writers.values():
                    w.close()
            finish(cfg, tmp, tok, tok_hash, corpus_hash, writers, counts)

    @staticmethod
    def _pack_stream(writer: Any, stem: Path, n_docs: int) -> None:
        ids = np.memmap(f"{stem}.ids", dtype="<u4", mode="r") if Path(f"{stem}.ids").stat().st_size else np.empty(0, "<u4")
        flags = np.memmap(f"{stem}.flags", dtype=np.uint8, mode="r") if len(ids) else np.empty(0, np.uint8)
        if len(ids) != len(flags):
            raise CmedbertError(f"{stem}: token and flag streams differ in length")
        for a in range(0, len(ids), CHUNK_TOKENS):
            writer.add_stream(np.asarray(ids[a:a + CHUNK_TOKENS]), np.asarray(flags[a:a + CHUNK_TOKENS]))
        writer.n_docs += n_docs


def run(cfg: PackConfig, out: Path) -> dict[str, Any]:
    """``executor=local``: both passes here (datatrove local executor; finished tasks of an
    interrupted run are skipped on re-run). ``executor=slurm``: submit both as array jobs."""
    from cmedbert.artifact import read_manifest as read

    from cmedbert.artifact import check_output_folder

    check_output_folder(out)
    work = Path(cfg.work_dir).absolute() if cfg.work_dir else default_work_dir(out)
    tasks = min(cfg.tasks, max(1, corpus_docs(cfg)))
    _prepare_work(cfg, work)
    execs = _executors(cfg, out, work, tasks)
    _quiet_datatrove(False)
    if cfg.executor == "slurm":
        execs[-1].run()  # submits the segmentation array, then the assembling job afterok it
        return {"submitted": [str(ex.job_id) for ex in execs]}
    for ex in execs:
        try:
            ex.run()
        except CmedbertError:
            shutil.rmtree(work, ignore_errors=True)
            raise
        except Exception as e:
            raise CmedbertError(f"pack failed in {ex.pipeline[0].name}: {type(e).__name__}: {e} "
                                f"(task logs: {work}/logs; a re-run resumes)") from e
    shutil.rmtree(work, ignore_errors=True)
    return read(out, stage="packed")


def _prepare_work(cfg: PackConfig, work: Path) -> None:
    """Reuse a work folder (skip finished tasks) only for the same config, corpus and tokenizer."""
    from cmedbert.artifact import manifest_hash
    from cmedbert.config import config_hash, to_dict
    from cmedbert.tokenizer.hashing import tokenizer_hash

    plan = {"config": config_hash({k: v for k, v in to_dict(cfg).items() if k not in ("workers", "slurm")}),
            "corpus": manifest_hash(cfg.corpus), "tokenizer": tokenizer_hash(Path(cfg.tokenizer))}
    marker = work / "plan.json"
    if marker.is_file() and json.loads(marker.read_text(encoding="utf-8")) != plan:
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    atomic_write_text(marker, json.dumps(plan) + "\n")


def _executors(cfg: PackConfig, out: Path, work: Path, tasks: int) -> list[Any]:
    from cmedbert.corpus.distributed import CmedbertLocalExecutor

    steps = [("segment", SegmentStep(cfg, work), tasks), ("assemble", AssembleStep(cfg, work, out, tasks), 1)]
    execs: list[Any] = []
    for name, step, n in steps:
        logs = str(work / "logs" / name)
        dep = execs[-1] if execs else None
        if cfg.executor == "local":
            ex = CmedbertLocalExecutor(pipeline=[step], tasks=n, workers=n, logging_dir=logs, depends=dep,
                                       start_method="spawn")  # fork after loading Rust tokenizers is not safe
            ex.progress = False
        else:
            from datatrove.executor import SlurmPipelineExecutor

            s = cfg.slurm
            ex = SlurmPipelineExecutor(pipeline=[step], tasks=n, time=s.time, partition=s.partition,
                                       cpus_per_task=max(s.cpus_per_task, cfg.workers), mem_per_cpu_gb=s.mem_per_cpu_gb,
                                       job_name=f"{s.job_name}-pack-{name}", qos=s.qos, venv_path=s.venv_path or None,
                                       env_command=s.env_command or None, sbatch_args=dict(s.sbatch_args),
                                       logging_dir=logs, depends=dep, max_array_size=s.max_array_size,
                                       mail_type=s.mail_type)
        execs.append(ex)
    return execs
