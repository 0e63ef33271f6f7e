"""The passes of ``cmedbert corpus build`` (:mod:`cmedbert.corpus.build` picks who runs them): raw
sources -> cleaned, scrubbed, deduplicated, decontaminated shards.

Three passes, each streaming (memory does not grow with corpus size except for the compact
global dedup arrays: 5 bytes per document, ~50 while one LSH band is sorted):

1. **Per file, in parallel** (a process pool over input files, big line-based files cut into
   chunks; ``workers`` processes): read
   records, normalize, strip boilerplate, scrub PII, split long documents, filter, decontaminate,
   and compute the exact-duplicate key and the MinHash signature. Kept documents go to an
   intermediate parquet file per input file, their hashes to flat binary files, drops to a
   per-file drop log.
2. **Global dedup** (:mod:`corpus.dedup`): exact duplicates by sorting the 64-bit keys; near
   duplicates by sorting LSH band keys band by band, verifying candidate pairs on the full
   signatures and taking connected components. The earliest document (config order of sources,
   then file order, then record order) of a group is kept.
3. **Write**: stream the intermediate files in order, drop the duplicates, write
   ``shards/part-NNNNN.parquet`` of about ``output.shard_mb`` MB, ``drops.jsonl`` and the manifest.

Accounting: ``records_in = records_read + split_added`` (a document split into k pieces adds
k - 1 records) and ``records_in == records_out + sum(dropped.values())``; every dropped record
has a line in ``drops.jsonl`` with its reason, source, file and line.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing as mp
import os
import re
import shutil
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cmedbert.artifact import sha256_file, write_manifest, die_with_parent
from cmedbert.errors import CmedbertError
from cmedbert.corpus import io as cio
from cmedbert.corpus.clean import Boilerplate, Filters, normalize, split_long
from cmedbert.corpus.config import CorpusConfig, SourceConfig, expand_paths
from cmedbert.corpus.decontam import Decontaminator
from cmedbert.corpus.dedup import unit_file
from cmedbert.corpus.hashing import Batch, MinHasher, band_hashes, band_multipliers, lsh_params
from cmedbert.corpus.pii import Scrubber
from cmedbert.corpus.readers import Bad, Span, chunkable, detect_encoding
from cmedbert.corpus.source_types import reader_for

log = logging.getLogger(__name__)

BATCH_ROWS = 2048  # rows per intermediate parquet write
INLINE_BYTES = 4_000_000  # below this much input, pass 1 runs in the calling process
HASH_BATCH = 512  # documents hashed together (<= hashing.Batch.MAX_DOCS)
SEGMENT_CHARS = 32  # a plain-text line is read in segments of SEGMENT_CHARS x max_chars bytes


@dataclass
class Unit:
    """One input file (or one chunk of a big line-based file) of one source: the unit of
    parallel work."""
    index: int
    source: int
    path: Path
    span: Span | None = None

    @property
    def size(self) -> int:
        return self.span.end - self.span.start if self.span else self.path.stat().st_size


def split_spans(path: Path, chunk_bytes: int) -> list[Span]:
    """Cut a line-based file into chunks of about ``chunk_bytes`` at line ends, with the line
    number each chunk starts at (one sequential read of the file)."""
    size = path.stat().st_size
    bounds = [(0, 1)]  # (byte offset, line number) where each chunk starts
    target, offset, lines = chunk_bytes, 0, 0
    with open(path, "rb") as fh:
        while target < size:
            block = fh.read(1 << 22)
            if not block:
                break
            i = max(target - offset, 0)
            while i < len(block):
                j = block.find(b"\n", i)
                if j < 0:
                    break
                b = offset + j + 1
                if b >= size:
                    target = size
                    break
                bounds.append((b, lines + block.count(b"\n", 0, j + 1) + 1))
                target = b + chunk_bytes
                i = target - offset
            lines += block.count(b"\n")
            offset += len(block)
    ends = [b for b, _ in bounds[1:]] + [size]
    return [Span(start, end, line) for (start, line), end in zip(bounds, ends)]


def _sha256_span(path: Path, span: Span | None) -> str:
    if span is None:
        return sha256_file(path)
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        fh.seek(span.start)
        left = span.end - span.start
        while left > 0:
            block = fh.read(min(1 << 20, left))
            if not block:
                break
            h.update(block)
            left -= len(block)
    return h.hexdigest()


# --------------------------------------------------------------------------- worker state
# Set in the parent before the pool forks, so workers share it copy-on-write (the
# decontamination index in particular) instead of rebuilding or pickling it.
_STATE: dict[str, Any] = {}


def _init_state(cfg: CorpusConfig, work: Path, decontam: Decontaminator | None) -> None:
    # LSH false positives only cost a verification on the full signatures, false negatives are
    # missed duplicates: weight the latter 4x (threshold 0.7, 128 perms -> 18 bands x 7 rows,
    # 98.6% recall at Jaccard 0.8).
    bands, rows = lsh_params(cfg.dedup.threshold, cfg.dedup.num_perm, fp_weight=0.2, fn_weight=0.8)
    _STATE.update(
        cfg=cfg, work=work, decontam=decontam,
        boiler=Boilerplate(cfg.cleaning.boilerplate_lines),
        filters=Filters(cfg.cleaning),
        scrubber=Scrubber(cfg.pii.types) if cfg.pii.enabled else None,
        minhash=MinHasher(cfg.dedup.num_perm, cfg.dedup.ngram, cfg.dedup.seed),
        bands=bands, rows=rows, mult=band_multipliers(rows, cfg.dedup.seed),
    )


_KEY_STRIP = re.compile(r"[\s\W_]+", re.U)


def exact_key(text: str) -> int:
    """64-bit key of the text with case, whitespace and punctuation ignored."""
    key = _KEY_STRIP.sub("", text.lower()) or text
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest(), "little")


class _UnitWriter:
    """Intermediate outputs of one unit: kept docs (parquet) + hashes (flat binaries)."""

    def __init__(self, work: Path, unit: int, k: int, bands: int) -> None:
        self.stem = work / f"unit-{unit:05d}"
        self.rows: dict[str, list] = {"text": [], "source": [], "doc_id": [], "line": []}
        self.exact: list[int] = []
        self.sigs: list[np.ndarray] = []
        self.k, self.bands = k, bands
        self.writer = None
        self.n = 0
        self.fh = {name: open(f"{self.stem}.{name}.bin", "wb") for name in ("exact", "sig", "band")}

    def add(self, text: str, source: str, doc_id: str, line: int, key: int, sig: np.ndarray) -> None:
        r = self.rows
        r["text"].append(text)
        r["source"].append(source)
        r["doc_id"].append(doc_id)
        r["line"].append(line)
        self.exact.append(key)
        self.sigs.append(sig)
        if len(self.exact) >= BATCH_ROWS:
            self.flush()

    def flush(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not self.exact:
            return
        table = pa.table({"text": pa.array(self.rows["text"], pa.string()),
                          "source": pa.array(self.rows["source"], pa.string()),
                          "doc_id": pa.array(self.rows["doc_id"], pa.string()),
                          "line": pa.array(self.rows["line"], pa.int64())})
        if self.writer is None:
            self.writer = pq.ParquetWriter(f"{self.stem}.parquet", table.schema, compression="lz4")
        self.writer.write_table(table)
        sigs = np.stack(self.sigs)
        st = _STATE
        np.asarray(self.exact, dtype=np.uint64).tofile(self.fh["exact"])
        sigs.tofile(self.fh["sig"])
        band_hashes(sigs, st["bands"], st["rows"], st["mult"]).tofile(self.fh["band"])
        self.n += len(self.exact)
        self.rows = {k: [] for k in self.rows}
        self.exact, self.sigs = [], []

    def close(self) -> None:
        self.flush()
        if self.writer is not None:
            self.writer.close()
        for fh in self.fh.values():
            fh.close()


def process_unit(unit: Unit) -> dict[str, Any]:
    """Pass 1 for one input file. Returns its counts (drops and kept docs are on disk)."""
    st = _STATE
    cfg: CorpusConfig = st["cfg"]
    src: SourceConfig = cfg.sources[unit.source]
    c = cfg.cleaning
    res: dict[str, Any] = {"unit": unit.index, "source": src.name, "path": str(unit.path),
                           "span": [unit.span.start, unit.span.end] if unit.span else None,
                           "bytes_in": unit.size, "sha256": _sha256_span(unit.path, unit.span),
                           "records_read": 0, "split_added": 0, "kept": 0, "dropped": Counter(),
                           "pii": Counter(), "decontaminated": Counter(), "boilerplate_removed": 0}
    out = _UnitWriter(st["work"], unit.index, cfg.dedup.num_perm, st["bands"])
    with open(st["work"] / f"unit-{unit.index:05d}.drops.jsonl", "w", encoding="utf-8") as drops:
        def drop(reason: str, line: int, detail: str = "", doc_id: str | None = None, **extra: Any) -> None:
            res["dropped"][reason] += 1
            row = {"reason": reason, "source": src.name, "file": str(unit.path), "line": line}
            if doc_id:
                row["doc_id"] = doc_id
            if detail:
                row["detail"] = detail
            row.update(extra)
            drops.write(json.dumps(row, ensure_ascii=False) + "\n")

        if res["bytes_in"] == 0:
            res["records_read"] = 1
            drop("empty_file", 0, "file is empty")
        else:
            enc = detect_encoding(unit.path, src.encoding)
            res["encoding"] = enc
            if src.type in ("kg_dict", "kg_terms_freq"):
                from cmedbert.corpus.kg import iter_terms

                res["terms"] = sum(1 for _, t in iter_terms(unit.path, enc, unit.span) if t)
            recno = 0
            pending: list[tuple[str, str, int]] = []
            reader = reader_for(src.type)
            kwargs: dict[str, Any] = {"span": unit.span} if unit.span else {}
            if src.type == "plain_text":  # long lines in segments: memory bounded by max_chars
                kwargs["segment_bytes"] = SEGMENT_CHARS * c.max_chars
            segment = 0

            def flush() -> None:
                _flush_pending(pending, src, st, res, out, drop)

            for item in reader(unit.path, src, enc, **kwargs):
                if item.continued:  # a later segment of a long line: a piece of the same document
                    res["split_added"] += 1
                    segment += 1
                    doc_id = f"{src.name}:{unit.index}:{recno}~{segment}"
                else:
                    res["records_read"] += 1
                    recno += 1
                    segment = 0
                    doc_id = f"{src.name}:{unit.index}:{recno}"
                if isinstance(item, Bad):
                    drop(item.reason, item.line, item.detail, doc_id)
                    continue
                _process_record(item.text, item.line, doc_id, src, c, st, res, pending, drop, flush)
            flush()
    out.close()
    res["kept"] = out.n
    return res


def _process_record(text: str, line: int, doc_id: str, src: SourceConfig, c, st: dict, res: dict,
                    pending: list[tuple[str, str, int]], drop, flush) -> None:
    """Per-record text work (normalize, boilerplate, PII, split, text filters); survivors are
    queued for the batched hashing in :func:`_flush_pending`, which ``flush`` runs whenever
    HASH_BATCH pieces are queued (a long record splits into many)."""
    text = normalize(text, c.traditional_to_simplified)
    text, n_boiler = st["boiler"].strip(text)
    res["boilerplate_removed"] += n_boiler
    if st["scrubber"] is not None:
        text = st["scrubber"].scrub(text, res["pii"])
    pieces = split_long(text, c.max_chars) if text else [""]
    res["split_added"] += len(pieces) - 1
    for k, piece in enumerate(pieces):
        pid = doc_id if len(pieces) == 1 else f"{doc_id}.{k}"
        reason = st["filters"].reason(piece)
        if reason == "too_short" and n_boiler:
            reason = "boilerplate"
        if reason:
            drop(reason, line, doc_id=pid, chars=len(piece))
        else:
            pending.append((piece, pid, line))
            if len(pending) >= HASH_BATCH:
                flush()


def _flush_pending(pending: list[tuple[str, str, int]], src: SourceConfig, st: dict, res: dict,
                   out: _UnitWriter, drop) -> None:
    """Batched numpy work: repetition filter, decontamination, exact key, MinHash."""
    if not pending:
        return
    c = st["cfg"].cleaning
    texts = [p[0] for p in pending]
    batch = Batch(texts)
    dup = batch.dup_fraction(10)
    tasks = st["decontam"].match_batch(batch, texts) if st["decontam"] is not None else [None] * len(texts)
    sigs = st["minhash"].signatures(batch)
    for i, (text, pid, line) in enumerate(pending):
        if len(text) >= 100 and dup[i] > c.max_dup_ngram_fraction:
            drop("ngram_repetition", line, doc_id=pid, chars=len(text))
        elif tasks[i]:
            task, match = tasks[i]
            res["decontaminated"][task] += 1
            drop("decontaminated", line, doc_id=pid, task=task, match=match)
        else:
            out.add(text, src.name, pid, line, exact_key(text), sigs[i])
    pending.clear()


# --------------------------------------------------------------------------- main
def plan_units(cfg: CorpusConfig) -> list[Unit]:
    """Input files in config order; line-based files above ``chunk_mb`` become several units."""
    units: list[Unit] = []
    chunk = int(cfg.chunk_mb * 1e6)
    for si, src in enumerate(cfg.sources):
        for path in expand_paths(cfg, src.paths, f"source {src.name!r}"):
            if chunk > 0 and path.stat().st_size > chunk and chunkable(src, path):
                for span in split_spans(path, chunk):
                    units.append(Unit(len(units), si, path, span))
            else:
                units.append(Unit(len(units), si, path))
    return units


def build_decontaminator(cfg: CorpusConfig) -> tuple[Decontaminator | None, list[Path]]:
    if not cfg.decontam.files:
        return None, []
    files = expand_paths(cfg, cfg.decontam.files, "decontam.files")
    d = cfg.decontam
    return Decontaminator(files, d.ngram, d.min_chars, d.fields, d.task_from, cfg.cleaning.traditional_to_simplified), files


def _warm_imports() -> None:
    """Import pyarrow (and the pandas it pulls in) and build the lookup tables once in the
    parent, so forked workers share them instead of each paying ~1 s."""
    import pyarrow as pa
    import pyarrow.parquet  # noqa: F401

    from cmedbert.corpus.clean import _t2s, _table_re, _trad_set

    pa.table({"x": pa.array(["x"])}).to_pylist()
    _table_re()
    _t2s()
    _trad_set()


def run_pass1(cfg: CorpusConfig, units: list[Unit]) -> list[dict[str, Any]]:
    from tqdm import tqdm

    workers = min(cfg.workers or os.cpu_count() or 1, len(units))
    _warm_imports()
    total = sum(u.size for u in units)
    bar = tqdm(total=total, unit="B", unit_scale=True, desc="corpus: clean", disable=not cfg.progress)
    results = []
    # Largest files first, so one big file does not start last and leave the other cores idle.
    order = sorted(units, key=lambda u: -u.size)
    if total < INLINE_BYTES:  # small inputs (tests, the demo): a pool costs more than it saves
        workers = 1
    if workers <= 1:
        for u in order:
            results.append(process_unit(u))
            bar.update(results[-1]["bytes_in"])
    else:
        ctx = mp.get_context("fork")
        with ctx.Pool(workers, initializer=die_with_parent, initargs=(os.getpid(),)) as pool:
            for res in pool.imap_unordered(process_unit, order):
                results.append(res)
                bar.update(res["bytes_in"])
    bar.close()
    return sorted(results, key=lambda r: r["unit"])


def run_inline_pass1(cfg: CorpusConfig, work: Path) -> tuple[list[dict], dict, list[dict]]:
    """Pass 1 over every unit into ``work`` with a process pool (``executor=inline``)."""
    units = plan_units(cfg)
    decontam, eval_files = build_decontaminator(cfg)
    work.mkdir(parents=True, exist_ok=True)
    _init_state(cfg, work, decontam)
    t0 = time.time()
    results = run_pass1(cfg, units) if units else []
    mb = sum(r["bytes_in"] for r in results) / 1e6
    log.info("pass 1 (clean/scrub/filter/hash): %d file(s), %.1f MB in %.1f s, %d documents kept before dedup",
             len(results), mb, time.time() - t0, sum(r["kept"] for r in results))
    for r in results:
        r["work"] = str(work)
    info = {"eval_texts": decontam.eval_texts if decontam else 0, "ngrams": decontam.size if decontam else 0,
            "tasks": decontam.tasks if decontam else []}
    eval_inputs = [{"path": str(p), "sha256": sha256_file(p)} for p in eval_files]
    return results, info, eval_inputs


def finish(cfg: CorpusConfig, tmp: Path, results: list[dict], decontam_info: dict, eval_inputs: list[dict],
           t0: float) -> dict[str, Any]:
    """Passes 2 (global dedup) and 3 (shards, drop log, manifest) into the folder ``tmp``."""
    from cmedbert.corpus.dedup import global_dedup

    t1 = time.time()
    dedup = global_dedup(cfg, results, _STATE["bands"], _STATE["rows"])
    log.info("pass 2 (global dedup): %d exact + %d near duplicates of %d documents in %.1f s",
             dedup.stats["exact_duplicates"], dedup.stats["near_duplicates"], dedup.stats["documents"], time.time() - t1)
    shards, out_counts = write_output(cfg, tmp, results, dedup)
    counts = summarize(cfg, results, dedup, out_counts)
    check_counts(counts)
    inputs = [{"path": r["path"], "sha256": r["sha256"], **({"span": r["span"]} if r.get("span") else {})}
              for r in results] + eval_inputs
    outputs = [{"path": s["path"], "sha256": s["sha256"], "bytes": s["bytes"]} for s in shards]
    outputs.append({"path": "drops.jsonl", "sha256": sha256_file(tmp / "drops.jsonl"),
                    "bytes": (tmp / "drops.jsonl").stat().st_size})
    extra = {"shards": shards, "dedup": dedup.summary(), "decontam": decontam_info,
             "seconds": round(time.time() - t0, 2)}
    return write_manifest(tmp, stage=cio.STAGE, config=cfg, inputs=inputs, counts=counts,
                          seed=cfg.dedup.seed, outputs=outputs, extra=extra)


def check_counts(counts: dict[str, Any]) -> None:
    """Accounting holds, and the corpus is not empty (later stages cannot use an empty corpus:
    say why now)."""
    check_accounting(counts)
    if counts["records_out"] == 0:
        top = ", ".join(f"{k} {v}" for k, v in sorted(counts["dropped"].items(), key=lambda kv: -kv[1])[:5])
        raise CmedbertError(f"no document survived: all {counts['records_in']} records were dropped ({top or 'no input records'})")


def check_accounting(counts: dict[str, Any]) -> None:
    dropped = sum(counts["dropped"].values())
    if counts["records_in"] != counts["records_out"] + dropped:
        raise AssertionError(f"corpus accounting broken: records_in {counts['records_in']} != "
                             f"records_out {counts['records_out']} + dropped {dropped}")


def write_output(cfg: CorpusConfig, tmp: Path, results: list[dict], dedup) -> tuple[list[dict], dict]:
    """Pass 3: stream the kept documents into shards; log the dedup drops."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    from tqdm import tqdm

    (tmp / "shards").mkdir()
    shards: list[dict] = []
    schema = pa.schema([("text", pa.string()), ("source", pa.string()), ("doc_id", pa.string())])
    limit = cfg.output.shard_mb * 1e6
    state = {"writer": None, "bytes": 0, "rows": 0, "path": None}
    per_source_out: Counter = Counter()
    bytes_out = 0

    def close_shard() -> None:
        if state["writer"] is None:
            return
        state["writer"].close()
        p = state["path"]
        shards.append({"path": str(p.relative_to(tmp)), "sha256": sha256_file(p), "rows": state["rows"],
                       "bytes": p.stat().st_size, "text_bytes": state["bytes"]})
        state.update(writer=None, bytes=0, rows=0, path=None)

    def write(table: pa.Table, text_bytes: int) -> None:
        if state["writer"] is None:
            state["path"] = tmp / "shards" / f"part-{len(shards):05d}.parquet"
            state["writer"] = pq.ParquetWriter(state["path"], schema, compression=cfg.output.compression)
        state["writer"].write_table(table)
        state["bytes"] += text_bytes
        state["rows"] += table.num_rows
        if state["bytes"] >= limit:
            close_shard()

    target_ids: dict[int, str] = {}
    with open(tmp / "drops.jsonl", "w", encoding="utf-8") as drops:
        for r in results:  # per-file drops first, in unit order
            with open(unit_file(r, "drops.jsonl"), encoding="utf-8") as fh:
                shutil.copyfileobj(fh, drops)
        for r in tqdm(results, desc="corpus: write", disable=not cfg.progress):
            p = unit_file(r, "parquet")
            if not r["kept"]:
                continue
            base = dedup.offsets[r["unit"]]
            pf = pq.ParquetFile(p)
            row0 = 0
            for batch in pf.iter_batches(batch_size=8192):
                n = batch.num_rows
                gidx = np.arange(base + row0, base + row0 + n)
                row0 += n
                reason = dedup.reason[gidx]
                keep = reason == 0
                targets = np.flatnonzero(dedup.is_target(gidx))
                dropped = np.flatnonzero(~keep)
                if len(targets) or len(dropped):  # only then are ids needed in Python
                    doc_ids = batch.column("doc_id").to_pylist()
                    lines = batch.column("line").to_pylist()
                for i in targets:
                    target_ids[int(gidx[i])] = doc_ids[i]
                if len(dropped) < n:
                    table = pa.Table.from_batches([batch]).select(["text", "source", "doc_id"]).filter(pa.array(keep))
                    tb = pc.sum(pc.binary_length(table["text"])).as_py() or 0
                    bytes_out += tb
                    per_source_out[r["source"]] += table.num_rows
                    write(table, tb)
                for i in dropped:
                    g = int(gidx[i])
                    row = {"reason": dedup.REASONS[int(reason[i])], "source": r["source"], "file": r["path"],
                           "line": lines[i], "doc_id": doc_ids[i],
                           "duplicate_of": target_ids.get(int(dedup.dup_of[g]))}
                    drops.write(json.dumps(row, ensure_ascii=False) + "\n")
        close_shard()
    return shards, {"per_source_out": per_source_out, "bytes_out": bytes_out}


def summarize(cfg: CorpusConfig, results: list[dict], dedup, out_counts: dict) -> dict[str, Any]:
    dropped: Counter = Counter()
    pii: Counter = Counter()
    decont: Counter = Counter()
    per_source: dict[str, dict[str, Any]] = {}
    for src in cfg.sources:
        per_source[src.name] = {"type": src.type, "files": 0, "bytes_in": 0, "records_read": 0, "split_added": 0,
                                "records_in": 0, "records_out": out_counts["per_source_out"].get(src.name, 0),
                                "dropped": Counter()}
    for r in results:
        ps = per_source[r["source"]]
        ps["files"] += 0 if r.get("span") and r["span"][0] > 0 else 1  # a chunked file counts once
        ps["bytes_in"] += r["bytes_in"]
        ps["records_read"] += r["records_read"]
        ps["split_added"] += r["split_added"]
        ps["dropped"].update(r["dropped"])
        if "terms" in r:
            ps["terms"] = ps.get("terms", 0) + r["terms"]
        dropped.update(r["dropped"])
        pii.update(r["pii"])
        decont.update(r["decontaminated"])
    for name, reasons in dedup.dropped_by_source.items():
        per_source[name]["dropped"].update(reasons)
        dropped.update(reasons)
    for ps in per_source.values():
        ps["records_in"] = ps["records_read"] + ps["split_added"]
        ps["dropped"] = dict(sorted(ps["dropped"].items()))
    records_read = sum(r["records_read"] for r in results)
    split_added = sum(r["split_added"] for r in results)
    return {
        "records_read": records_read,
        "split_added": split_added,
        "records_in": records_read + split_added,
        "records_out": sum(out_counts["per_source_out"].values()),
        "dropped": dict(sorted(dropped.items())),
        "pii": {k: pii.get(k, 0) for k in (cfg.pii.types if cfg.pii.enabled else [])},
        "decontaminated": dict(sorted(decont.items())),
        "boilerplate_removed": sum(r["boilerplate_removed"] for r in results),
        "per_source": per_source,
        "files": sum(ps["files"] for ps in per_source.values()),
        "units": len(results),
        "bytes_in": sum(r["bytes_in"] for r in results),
        "bytes_out": out_counts["bytes_out"],
    }
