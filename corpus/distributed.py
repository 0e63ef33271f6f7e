"""The corpus build as datatrove pipelines: the same three passes, run by a datatrove executor
(local processes, a SLURM array per pass, or Ray), so one build scales from a laptop to a cluster
with datatrove's resumable tasks, logs and stats.

Passes (each a :class:`datatrove.pipeline.base.PipelineStep`, each run as ``tasks`` datatrove tasks;
a re-run skips the tasks datatrove has marked complete):

1. :class:`Pass1Step` — clean / scrub / filter / decontaminate / hash. Task ``r`` takes the input
   units with ``index % tasks == r`` (the same units and per-unit code as the single-process build)
   and writes their kept documents, hashes and drops to ``WORK/units/``.
2. :class:`ExactDedupStep` — task ``r`` owns the exact keys with ``key % tasks == r``: equal keys
   meet in one task, so the duplicate groups are found without any node holding every key.
3. :class:`NearDedupStep` — task ``r`` owns the LSH band keys with ``key % tasks == r`` of the
   documents that survived exact dedup, finds the candidate pairs of its keys and verifies them on
   the full MinHash signatures (memory-mapped).
4. :class:`ClusterStep` — one task: connected components of the verified pairs (only documents
   that have a duplicate are held in memory); the earliest document of a group is kept.
5. :class:`WriteStep` — one task: streams the kept documents into the shards, writes
   ``drops.jsonl`` (which document each duplicate duplicates) and the manifest, atomically.

Global document numbers, duplicate groups, verified pairs and the "earliest kept" rule are those of
:func:`cmedbert.corpus.dedup.global_dedup`, so the folder is the same as the single-process build's.
Accounting ``records_in == records_out + sum(dropped)`` is checked over all tasks in the manifest.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from cmedbert.artifact import atomic_output, atomic_write_text
from cmedbert.corpus.config import CorpusConfig
from cmedbert.errors import CmedbertError

log = logging.getLogger(__name__)

try:  # datatrove is a product dependency; the import is cheap (~0.2 s)
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.base import PipelineStep
except ImportError:  # pragma: no cover - only without the dependency
    LocalPipelineExecutor = PipelineStep = object  # type: ignore[assignment,misc]

PASSES = ("pass1", "exact", "near", "cluster", "write")


# --------------------------------------------------------------------------- work folder layout
@dataclass(frozen=True)
class Work:
    """Where one distributed build keeps its intermediate files and datatrove logs."""
    root: Path

    @property
    def units(self) -> Path:
        return self.root / "units"

    def logs(self, name: str) -> Path:
        return self.root / "logs" / name

    def part(self, name: str, rank: int, ext: str = "json") -> Path:
        return self.root / name / f"rank-{rank:05d}.{ext}"

    def parts(self, name: str, ext: str) -> list[Path]:
        folder = self.root / name
        return sorted(folder.glob(f"rank-*.{ext}")) if folder.is_dir() else []


def default_work_dir(out: Path) -> Path:
    """Beside the output folder (a hidden sibling), so a SLURM build needs only one shared path."""
    out = Path(out).resolve()
    return out.parent / f".{out.name}.datatrove"


def _save_npy(path: Path, arr: np.ndarray) -> None:
    """Atomic .npy write: a task killed half-way leaves no file that looks finished."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        np.save(fh, arr)
    os.replace(tmp, path)


_DECONTAM: dict[str, Any] = {}


def cached_decontaminator(cfg: CorpusConfig):
    """The CBLUE n-gram index, built once per process: the local executor forks its workers after
    :func:`run_local` built it, so they share it instead of rebuilding it per task."""
    from cmedbert.corpus import passes
    from cmedbert.config import config_hash, to_dict

    key = config_hash({"decontam": to_dict(cfg.decontam), "t2s": cfg.cleaning.traditional_to_simplified,
                       "data_root": cfg.data_root})
    if key not in _DECONTAM:
        _DECONTAM.clear()
        _DECONTAM[key] = passes.build_decontaminator(cfg)[0]
    return _DECONTAM[key]


# --------------------------------------------------------------------------- pass-1 results
def load_pass1(work: Work, n_units: int) -> list[dict[str, Any]]:
    """Every unit's pass-1 result row (from all tasks), in unit order; refuses a partial set."""
    rows: list[dict[str, Any]] = []
    for f in work.parts("pass1", "json"):
        rows.extend(json.loads(f.read_text(encoding="utf-8"))["results"])
    rows.sort(key=lambda r: r["unit"])
    if [r["unit"] for r in rows] != list(range(n_units)):
        raise CmedbertError(f"{work.root}: pass 1 results cover {len(rows)} of {n_units} input units "
                            "(did a task fail, or did the input files change since?)")
    for r in rows:
        r.update(work=str(work.units), dropped=Counter(r["dropped"]), pii=Counter(r["pii"]),
                 decontaminated=Counter(r["decontaminated"]))
    return rows


def offsets_of(rows: list[dict[str, Any]]) -> tuple[dict[int, int], int]:
    """Global number of each unit's first kept document (documents numbered in (unit, row) order)."""
    offsets: dict[int, int] = {}
    total = 0
    for r in rows:
        offsets[r["unit"]] = total
        total += r["kept"]
    return offsets, total


# --------------------------------------------------------------------------- steps
class _BuildStep(PipelineStep):
    """A pass of the build: holds the config and the work folder, yields no documents."""
    type = "🩺 - CMEDBERT"

    def __init__(self, cfg: CorpusConfig, work: Path) -> None:
        super().__init__()
        self.cfg = cfg
        self.work = Work(Path(work))

    def n_units(self) -> int:
        from cmedbert.corpus.passes import plan_units

        return len(plan_units(self.cfg))

    def run(self, data: Iterable | None = None, rank: int = 0, world_size: int = 1):  # noqa: D401
        self.run_task(rank, world_size)
        return None

    def run_task(self, rank: int, world_size: int) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


class Pass1Step(_BuildStep):
    """Clean, scrub, filter, decontaminate and hash the units with ``index % world_size == rank``."""
    name = "pass 1: clean/scrub/filter/hash"

    def run_task(self, rank: int, world_size: int) -> None:
        from cmedbert.corpus import passes

        cfg = self.cfg
        units = passes.plan_units(cfg)
        # Largest units go to the lowest ranks: with one task per unit the local executor's pool
        # starts the big files first, so one big file does not leave the other cores idle at the end.
        by_size = sorted(units, key=lambda u: (-u.size, u.index))
        mine = by_size[rank::world_size]
        decontam = cached_decontaminator(cfg) if mine else None
        self.work.units.mkdir(parents=True, exist_ok=True)
        passes._init_state(cfg, self.work.units, decontam)
        results = []
        for u in mine:
            res = passes.process_unit(u)
            self.stat_update("units")
            self.stat_update("records_read", value=res["records_read"])
            self.stat_update("kept_before_dedup", value=res["kept"])
            self.stat_update("bytes_in", value=res["bytes_in"], unit="unit")
            results.append({**res, "dropped": dict(res["dropped"]), "pii": dict(res["pii"]),
                            "decontaminated": dict(res["decontaminated"])})
        results.sort(key=lambda r: r["unit"])
        info = {"eval_texts": decontam.eval_texts if decontam else 0, "ngrams": decontam.size if decontam else 0,
                "tasks": decontam.tasks if decontam else []}
        path = self.work.part("pass1", rank)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps({"rank": rank, "world_size": world_size, "units": len(units),
                                            "results": results, "decontam": info}, ensure_ascii=False) + "\n")


class ExactDedupStep(_BuildStep):
    """Exact duplicates among the keys ``key % world_size == rank``: every repeat of a key is an
    ``exact_duplicate`` of its first (lowest-numbered) document."""
    name = "pass 2a: exact dedup (one key range)"

    def run_task(self, rank: int, world_size: int) -> None:
        from cmedbert.corpus.dedup import unit_file

        rows = load_pass1(self.work, self.n_units())
        offsets, _ = offsets_of(rows)
        keys_l, idx_l = [], []
        if self.cfg.dedup.exact:
            for r in rows:
                if not r["kept"]:
                    continue
                keys = np.fromfile(unit_file(r, "exact.bin"), dtype=np.uint64)
                mine = np.flatnonzero(keys % np.uint64(world_size) == np.uint64(rank))
                keys_l.append(keys[mine])
                idx_l.append(mine.astype(np.int64) + offsets[r["unit"]])
        pairs = _exact_pairs(np.concatenate(keys_l) if keys_l else np.empty(0, np.uint64),
                             np.concatenate(idx_l) if idx_l else np.empty(0, np.int64))
        self.stat_update("exact_duplicates", value=len(pairs))
        _save_npy(self.work.part("exact", rank, "npy"), pairs)


def _exact_pairs(keys: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``[n, 2]`` (duplicate, first) for documents ``idx`` (ascending) with their keys."""
    if len(keys) == 0:
        return np.empty((0, 2), np.int64)
    order = np.argsort(keys, kind="stable")  # stable: ascending document number within a key
    sk = keys[order]
    start = np.r_[True, sk[1:] != sk[:-1]]
    first = idx[order[np.maximum.accumulate(np.where(start, np.arange(len(sk)), 0))]]
    dups = ~start
    return np.stack([idx[order[dups]], first[dups]], axis=1).astype(np.int64)


def _exact_duplicates(work: Work) -> np.ndarray:
    parts = [np.load(f) for f in work.parts("exact", "npy")]
    return np.concatenate(parts) if parts else np.empty((0, 2), np.int64)


class NearDedupStep(_BuildStep):
    """Candidate pairs from the LSH band keys ``key % world_size == rank`` of the documents left
    after exact dedup, verified on the full signatures."""
    name = "pass 2b: near dedup (one band-key range)"

    def run_task(self, rank: int, world_size: int) -> None:
        from cmedbert.corpus import passes
        from cmedbert.corpus.dedup import unit_file

        cfg = self.cfg
        rows = load_pass1(self.work, self.n_units())
        offsets, total = offsets_of(rows)
        live = [r for r in rows if r["kept"]]
        out = np.empty((0, 3), np.int64)
        if cfg.dedup.near and total:
            passes._init_state(cfg, self.work.units, None)
            bands = passes._STATE["bands"]
            exact_dups = np.sort(_exact_duplicates(self.work)[:, 0])
            found = []
            for b in range(bands):
                keys_l, idx_l = [], []
                for r in live:
                    m = np.memmap(unit_file(r, "band.bin"), dtype=np.uint64, mode="r", shape=(r["kept"], bands))
                    col = np.asarray(m[:, b])
                    del m
                    gidx = np.arange(r["kept"], dtype=np.int64) + offsets[r["unit"]]
                    sel = (col % np.uint64(world_size) == np.uint64(rank)) & ~_isin_sorted(gidx, exact_dups)
                    keys_l.append(col[sel])
                    idx_l.append(gidx[sel])
                pairs = _exact_pairs(np.concatenate(keys_l), np.concatenate(idx_l))
                if len(pairs):
                    found.append(pairs[:, ::-1])  # (first of the run, member), as global_dedup
            if found:
                cand = np.unique(np.concatenate(found), axis=0)
                verified = _verify(cfg, live, offsets, cand)
                out = np.concatenate([cand, verified[:, None].astype(np.int64)], axis=1)
        self.stat_update("candidate_pairs", value=len(out))
        self.stat_update("verified_pairs", value=int(out[:, 2].sum()) if len(out) else 0)
        _save_npy(self.work.part("near", rank, "npy"), out)


def _isin_sorted(values: np.ndarray, sorted_set: np.ndarray) -> np.ndarray:
    if len(sorted_set) == 0:
        return np.zeros(len(values), dtype=bool)
    pos = np.searchsorted(sorted_set, values)
    pos[pos == len(sorted_set)] = 0
    return sorted_set[pos] == values


def _verify(cfg: CorpusConfig, live: list[dict], offsets: dict[int, int], pairs: np.ndarray) -> np.ndarray:
    """True where a candidate pair's signatures agree on at least ``threshold`` of the positions."""
    from cmedbert.corpus.dedup import signature_lookup, signatures_agree

    sig = signature_lookup(cfg, live, offsets)
    return np.array([signatures_agree(cfg, sig, int(a), int(b)) for a, b in pairs], dtype=bool)


class ClusterStep(_BuildStep):
    """Connected components of the verified pairs; writes the sparse list of dropped documents."""
    name = "pass 2c: duplicate clusters"

    def run_task(self, rank: int, world_size: int) -> None:
        from cmedbert.corpus import passes
        from cmedbert.corpus.dedup import _UnionFind

        cfg = self.cfg
        rows = load_pass1(self.work, self.n_units())
        _, total = offsets_of(rows)
        passes._init_state(cfg, self.work.units, None)
        exact = _exact_duplicates(self.work)
        near_parts = [np.load(f) for f in self.work.parts("near", "npy")]
        near = np.concatenate(near_parts) if near_parts else np.empty((0, 3), np.int64)
        near = np.unique(near, axis=0) if len(near) else near  # a pair can come from several key ranges
        uf = _UnionFind()
        for a, b, ok in near:
            if ok:
                uf.union(int(a), int(b))
        near_dups = [(node, uf.find(node)) for node in list(uf.parent) if uf.find(node) != node]
        idx = np.concatenate([exact[:, 0], np.array([n for n, _ in near_dups], np.int64)])
        dup_of = np.concatenate([exact[:, 1], np.array([r for _, r in near_dups], np.int64)])
        reason = np.concatenate([np.ones(len(exact), np.int8), np.full(len(near_dups), 2, np.int8)])
        order = np.argsort(idx, kind="stable")
        stats = {"documents": total, "bands": passes._STATE["bands"], "rows": passes._STATE["rows"],
                 "threshold": cfg.dedup.threshold, "ngram": cfg.dedup.ngram, "num_perm": cfg.dedup.num_perm,
                 "candidate_pairs": int(len(near)), "verified_pairs": int(near[:, 2].sum()) if len(near) else 0,
                 "exact_duplicates": int(len(exact)), "near_duplicates": int(len(near_dups))}
        self.stat_update("exact_duplicates", value=len(exact))
        self.stat_update("near_duplicates", value=len(near_dups))
        path = self.work.root / "cluster" / "dedup.npz"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name("dedup.tmp.npz")
        np.savez(tmp, idx=idx[order], reason=reason[order], dup_of=dup_of[order])
        os.replace(tmp, path)
        atomic_write_text(path.with_name("stats.json"), json.dumps(stats) + "\n")


class SparseDedup:
    """The result of :class:`ClusterStep` with the interface :func:`passes.write_output` reads from
    :class:`cmedbert.corpus.dedup.DedupResult`, holding only the dropped documents."""
    REASONS = ("kept", "exact_duplicate", "near_duplicate")

    def __init__(self, offsets: dict[int, int], idx: np.ndarray, reason: np.ndarray, dup_of: np.ndarray,
                 stats: dict[str, Any], rows: list[dict]) -> None:
        self.offsets, self.idx, self._reason, self._dup_of, self.stats = offsets, idx, reason, dup_of, stats
        self.targets = np.unique(dup_of)
        self.reason = _SparseLookup(idx, reason, 0)
        self.dup_of = _SparseLookup(idx, dup_of, -1)
        self.dropped_by_source: dict[str, Counter] = defaultdict(Counter)
        starts = np.array([offsets[r["unit"]] for r in rows]) if rows else np.empty(0, np.int64)
        unit_pos = np.searchsorted(starts, idx, side="right") - 1
        for pos, code in zip(unit_pos, reason):
            self.dropped_by_source[rows[int(pos)]["source"]][self.REASONS[int(code)]] += 1

    def is_target(self, gidx: np.ndarray) -> np.ndarray:
        return _isin_sorted(np.asarray(gidx), self.targets)

    def summary(self) -> dict[str, Any]:
        return dict(self.stats)


class _SparseLookup:
    """``lookup[gidx]`` for an array of global numbers (or one int), ``default`` where absent."""

    def __init__(self, idx: np.ndarray, values: np.ndarray, default: int) -> None:
        self.idx, self.values, self.default = idx, values, default

    def __getitem__(self, gidx):
        g = np.atleast_1d(np.asarray(gidx))
        out = np.full(len(g), self.default, dtype=self.values.dtype if len(self.values) else np.int64)
        if len(self.idx):
            pos = np.searchsorted(self.idx, g)
            pos[pos == len(self.idx)] = 0
            hit = self.idx[pos] == g
            out[hit] = self.values[pos[hit]]
        return out if np.ndim(gidx) else out[0]


class WriteStep(_BuildStep):
    """Shards, ``drops.jsonl`` and the manifest into ``out`` (written atomically)."""
    name = "pass 3: shards + manifest"

    def __init__(self, cfg: CorpusConfig, work: Path, out: Path, overwrite: bool = False,
                 keep_work: bool = False) -> None:
        super().__init__(cfg, work)
        self.out, self.overwrite, self.keep_work = Path(out), overwrite, keep_work

    def run_task(self, rank: int, world_size: int) -> None:
        from cmedbert.corpus import passes
        from cmedbert.artifact import sha256_file, write_manifest
        from cmedbert.corpus.config import expand_paths
        from cmedbert.corpus.io import STAGE

        cfg = self.cfg
        t0 = time.time()
        rows = load_pass1(self.work, self.n_units())
        offsets, _ = offsets_of(rows)
        passes._init_state(cfg, self.work.units, None)
        z = np.load(self.work.root / "cluster" / "dedup.npz")
        stats = json.loads((self.work.root / "cluster" / "stats.json").read_text(encoding="utf-8"))
        dedup = SparseDedup(offsets, z["idx"], z["reason"], z["dup_of"], stats, rows)
        first = json.loads(self.work.parts("pass1", "json")[0].read_text(encoding="utf-8"))
        eval_files = expand_paths(cfg, cfg.decontam.files, "decontam.files") if cfg.decontam.files else []
        eval_inputs = [{"path": str(p), "sha256": sha256_file(p)} for p in eval_files]
        with atomic_output(self.out, overwrite=self.overwrite) as tmp:
            shards, out_counts = passes.write_output(cfg, tmp, rows, dedup)
            counts = passes.summarize(cfg, rows, dedup, out_counts)
            passes.check_counts(counts)
            inputs = [{"path": r["path"], "sha256": r["sha256"], **({"span": r["span"]} if r.get("span") else {})}
                      for r in rows] + eval_inputs
            outputs = [{"path": s["path"], "sha256": s["sha256"], "bytes": s["bytes"]} for s in shards]
            outputs.append({"path": "drops.jsonl", "sha256": sha256_file(tmp / "drops.jsonl"),
                            "bytes": (tmp / "drops.jsonl").stat().st_size})
            extra = {"shards": shards, "dedup": dedup.summary(), "decontam": first["decontam"],
                     "executor": {"kind": cfg.executor, "tasks": first["world_size"]},
                     "seconds": round(time.time() - t0, 2)}
            write_manifest(tmp, stage=STAGE, config=cfg, inputs=inputs, counts=counts,
                           seed=cfg.dedup.seed, outputs=outputs, extra=extra)
        if not self.keep_work:  # the intermediates; datatrove's logs/ stay until the driver is done
            for name in ("units", "pass1", "exact", "near", "cluster"):
                shutil.rmtree(self.work.root / name, ignore_errors=True)


# --------------------------------------------------------------------------- executors
@dataclass
class Pipelines:
    """One executor per pass, each depending on the previous one."""
    executors: list[Any] = field(default_factory=list)

    @property
    def last(self) -> Any:
        return self.executors[-1]


def task_counts(cfg: CorpusConfig, n_units: int, input_bytes: int) -> tuple[int, int]:
    """(pass-1 tasks, dedup tasks). ``tasks`` set: that many of each (pass 1 at most one per unit).
    Else: small local inputs run as one task per pass in this process (a pool costs more than it
    saves); otherwise one pass-1 task per unit (the pool then balances big and small files) and
    ``workers`` (default: all cores) tasks for the dedup passes."""
    from cmedbert.corpus.passes import INLINE_BYTES

    if cfg.tasks > 0:
        return max(1, min(cfg.tasks, n_units)), cfg.tasks
    if cfg.executor == "local" and input_bytes < INLINE_BYTES:
        return 1, 1
    workers = cfg.workers or os.cpu_count() or 1
    return max(1, n_units), workers


def build_pipelines(cfg: CorpusConfig, out: Path, work: Path, overwrite: bool = False) -> Pipelines:
    """The five passes as datatrove executors of the configured kind, chained with ``depends``."""
    from cmedbert.corpus.passes import plan_units

    units = plan_units(cfg)
    p1, dd = task_counts(cfg, len(units), sum(u.size for u in units))
    steps = [("pass1", Pass1Step(cfg, work), p1), ("exact", ExactDedupStep(cfg, work), dd),
             ("near", NearDedupStep(cfg, work), dd), ("cluster", ClusterStep(cfg, work), 1),
             ("write", WriteStep(cfg, work, out, overwrite, cfg.keep_work), 1)]
    w = Work(Path(work))
    executors: list[Any] = []
    for name, step, n in steps:
        executors.append(_executor(cfg, name, step, n, w.logs(name), executors[-1] if executors else None))
    return Pipelines(executors)


def _executor(cfg: CorpusConfig, name: str, step: PipelineStep, tasks: int, logs: Path, depends: Any) -> Any:
    if cfg.executor == "local":
        workers = max(1, min(tasks, cfg.workers or os.cpu_count() or 1))
        # fork: the workers inherit the imported modules and the decontamination index instead of
        # re-importing / rebuilding them in every task
        ex = CmedbertLocalExecutor(pipeline=[step], tasks=tasks, workers=workers, logging_dir=str(logs),
                                   depends=depends, start_method="fork")
        ex.progress, ex.driver_pid = cfg.progress, os.getpid()
        return ex
    if cfg.executor == "slurm":
        from datatrove.executor import SlurmPipelineExecutor

        s = cfg.slurm
        return SlurmPipelineExecutor(
            pipeline=[step], tasks=tasks, time=s.time, partition=s.partition, cpus_per_task=s.cpus_per_task,
            mem_per_cpu_gb=s.mem_per_cpu_gb, job_name=f"{s.job_name}-{name}", qos=s.qos,
            venv_path=s.venv_path or None, env_command=s.env_command or None, sbatch_args=dict(s.sbatch_args),
            logging_dir=str(logs), depends=depends, max_array_size=s.max_array_size,
            mail_type=s.mail_type, requeue=True)
    if cfg.executor == "ray":
        try:
            from datatrove.executor import RayPipelineExecutor
            import ray  # noqa: F401
        except ImportError as e:
            raise CmedbertError(f"executor=ray needs the `ray` package ({e}); pip install 'datatrove[ray]'") from None
        return RayPipelineExecutor(pipeline=[step], tasks=tasks, logging_dir=str(logs), depends=depends,
                                   cpus_per_task=cfg.slurm.cpus_per_task)
    raise CmedbertError(f"executor must be local, slurm or ray, got {cfg.executor!r}")


def _task_logger(progress: bool):
    """datatrove's per-task logger, with our stderr policy: the task's full log (tracebacks too)
    goes to ``logs/task_NNNNN.log``; stderr gets INFO lines when ``progress`` and never a
    traceback (the error itself reaches the user as one line from the driver)."""
    import sys

    from loguru import logger

    fmt = "{time:YYYY-MM-DD HH:mm:ss.SSS} | {level: <8} | {name}:{function}:{line} - {message}"

    def add_task_logger(logging_dir, rank: int, local_rank: int = 0, node_rank: int = -1):
        logger.remove()
        logfile = logging_dir.open(f"logs/task_{rank:05d}.log", "w")
        if progress and local_rank == 0:
            logger.add(sys.stderr, level="INFO", format=fmt, filter=lambda r: r["exception"] is None)
        logger.add(logfile, colorize=False, level="DEBUG", format=fmt)
        logger.info(f"Launching pipeline for {rank=}")
        return logfile

    return add_task_logger


class CmedbertLocalExecutor(LocalPipelineExecutor):
    """datatrove's local executor with :func:`_task_logger` as the per-task logger.

    Defined at module level on purpose: the executor is pickled (dill) for every task sent to the
    pool, and a class defined inside a function is pickled by value, dragging this module's
    globals (the cached CBLUE index, tens of MB) along with each task."""

    progress: bool = True
    driver_pid: int = 0  # the process that runs the executor; pool workers die with it

    def _run_for_rank(self, rank: int, local_rank: int = 0, node_rank: int = -1):
        from datatrove.executor import base

        from cmedbert.artifact import die_with_parent

        if self.driver_pid:
            die_with_parent(self.driver_pid)

        orig = base.add_task_logger
        base.add_task_logger = _task_logger(self.progress)
        try:
            return super()._run_for_rank(rank, local_rank, node_rank)
        finally:
            base.add_task_logger = orig
            _quiet_datatrove(self.progress)


def run_local(cfg: CorpusConfig, out: Path, work: Path, overwrite: bool = False) -> None:
    """Run every pass with the local (or Ray) executor, in order; finished tasks are skipped.
    The work folder is removed once the corpus is written (unless keep_work)."""
    pipes = build_pipelines(cfg, out, work, overwrite)
    _quiet_datatrove(cfg.progress)
    for ex in pipes.executors:
        try:
            ex.run()
        except CmedbertError:  # bad input: re-running cannot help, so nothing is kept for a resume
            if not cfg.keep_work:
                shutil.rmtree(work, ignore_errors=True)
            raise
        except Exception as e:  # a task failed: datatrove re-raises it; its traceback is in the task log
            raise CmedbertError(f"corpus build failed in {ex.pipeline[0].name}: {type(e).__name__}: {e} "
                                f"(task logs: {ex.logging_dir.path}/logs; a re-run resumes)") from e
        missing = ex.get_incomplete_ranks(skip_completed=True)
        if missing:
            raise CmedbertError(f"{ex.logging_dir.path}: {len(missing)} datatrove task(s) did not finish "
                                f"(ranks {missing[:10]}); see the logs there, then re-run to resume")
    _quiet_datatrove(True)
    if not cfg.keep_work:
        shutil.rmtree(work, ignore_errors=True)


def _quiet_datatrove(progress: bool) -> None:
    """datatrove logs through loguru at INFO on stderr; keep our own logging the only chatter
    unless progress output is wanted (task logs still go to the logs/ folders)."""
    try:
        from loguru import logger
    except ImportError:  # pragma: no cover
        return
    import sys

    logger.remove()
    logger.add(sys.stderr, level="WARNING" if progress else "CRITICAL", filter=lambda r: r["exception"] is None)


# --------------------------------------------------------------------------- drivers
def check_out(out: Path, overwrite: bool) -> None:
    """Refuse a non-empty ``out`` before any pass runs (the write pass would refuse it at the end)."""
    from cmedbert.artifact import check_output_folder

    check_output_folder(out, overwrite, hint="pass --overwrite or choose another --out")


def work_dir_for(cfg: CorpusConfig, out: Path) -> Path:
    return Path(cfg.work_dir).absolute() if cfg.work_dir else default_work_dir(out)


def prepare_work(cfg: CorpusConfig, work: Path) -> None:
    """A work folder is reused (finished tasks skipped) only for the same config and the same input
    files (path, size, modification time); otherwise it is cleared first, so no stale task result
    of another build is ever picked up."""
    from cmedbert.config import config_hash
    from cmedbert.corpus.passes import plan_units

    plan = {"config_hash": config_hash(cfg),  # run-only fields (workers, executor, ...) do not count
            "inputs": [[str(u.path), u.span.start if u.span else 0, u.size, u.path.stat().st_mtime_ns]
                       for u in plan_units(cfg)]}
    marker = work / "plan.json"
    if marker.is_file():
        try:
            same = json.loads(marker.read_text(encoding="utf-8")) == plan
        except ValueError:
            same = False
        if same:
            log.info("resuming the build in %s (finished datatrove tasks are skipped)", work)
            return
        log.warning("work folder %s belongs to another config or other inputs: starting it afresh", work)
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    atomic_write_text(marker, json.dumps(plan) + "\n")


def _rewrite_output(work: Path) -> None:
    """The write pass always runs again (the output may have been removed since a kept-work
    build); the passes before it resume."""
    shutil.rmtree(Work(work).logs("write") / "completions", ignore_errors=True)


def build(cfg: CorpusConfig, out: Path, overwrite: bool = False) -> dict[str, Any]:
    """``executor=local|ray``: run every pass here; returns the manifest of ``out``."""
    from cmedbert.artifact import read_manifest
    from cmedbert.corpus.passes import _warm_imports
    from cmedbert.corpus.io import STAGE

    check_out(out, overwrite)
    work = work_dir_for(cfg, out)
    prepare_work(cfg, work)
    _rewrite_output(work)
    _warm_imports()
    if cfg.decontam.files:
        cached_decontaminator(cfg)  # built once here, shared by the forked task processes
    run_local(cfg, out, work, overwrite)
    return read_manifest(out, stage=STAGE)


def submit(cfg: CorpusConfig, out: Path, overwrite: bool = False, dry_run: bool = False) -> list[str]:
    """``executor=slurm``: submit one array job per pass (each ``afterok`` the previous one) and
    return their job ids; with ``dry_run`` return the job scripts instead, submitting nothing."""
    check_out(out, overwrite)
    work = work_dir_for(cfg, out)
    if dry_run:
        existed = work.exists()
        try:  # datatrove's SLURM executor creates its log folders when constructed: undo that
            return [_launch_script(ex) for ex in build_pipelines(cfg, out, work, overwrite).executors]
        finally:
            if not existed:
                shutil.rmtree(work, ignore_errors=True)
    prepare_work(cfg, work)
    _rewrite_output(work)
    pipes = build_pipelines(cfg, out, work, overwrite)
    _quiet_datatrove(cfg.progress)
    pipes.last.run()  # launches the dependencies first, each with its own array
    return [str(ex.job_id) for ex in pipes.executors]


def _launch_script(ex: Any) -> str:
    """The sbatch script datatrove would submit for ``ex`` (all its tasks), built without touching
    the cluster or the work folder."""
    tasks = ex.tasks
    n_jobs = -(-tasks // ex.tasks_per_job)
    max_array = min(n_jobs, ex.max_array_size) if ex.max_array_size != -1 else n_jobs
    cmd = f"srun -l -n {ex.nodes_per_task} launch_pickled_pipeline {ex.logging_dir.resolve_paths('executor.pik')}"
    return f"# {ex.job_name}: {tasks} task(s)\n" + ex.get_launch_file_contents(ex.get_sbatch_args(max_array), cmd)
