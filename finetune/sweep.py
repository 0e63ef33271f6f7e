"""The sweep runner: every (checkpoint, task, seed) of a finetune config is an independent job.

* Jobs run one after another in this process (one CPU, or one GPU), or concurrently in worker
  processes: one per visible GPU (each worker sees only its GPU through ``CUDA_VISIBLE_DEVICES``)
  or ``workers=N`` CPU workers sharing the cores.
* The output folder fills job by job, so a sweep can be stopped at any point and resumed: a job's
  folder ``OUT/<checkpoint>/<task>/seed_<s>/`` is built under a temporary name and renamed when
  complete, then its rows are appended to ``OUT/results.jsonl``; a job is done when its rows are
  there (a folder without rows, from a run killed between the two, is redone). Running the same
  command again runs only the jobs that are not done.
* Rows are appended under an exclusive lock (``OUT/.results.lock``) with one ``write`` of whole
  lines and an fsync, so several processes (SLURM array tasks on a shared filesystem) can add to
  one file; a reader ignores a trailing line without its newline.
* A failing job is reported (its traceback in the log, its name in the final error) and the
  others carry on; the sweep then ends with an error naming it, and a re-run retries only it.
* ``manifest.json`` is written when the last job is done (by whichever process finishes it):
  a folder with a manifest is a complete sweep.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import signal
import threading
import traceback
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

from cmedbert.artifact import atomic_write_text
from cmedbert.config import config_hash, to_dict
from cmedbert.errors import CmedbertError

log = logging.getLogger("finetune")

RESULTS = "results.jsonl"
SWEEP = "sweep.json"
LOCK = ".results.lock"
IDENTITY_ENV = "CMEDBERT_SWEEP_IDENTITY"  # set by `cmedbert launch` (kind finetune) for every array task
# keys that say how a sweep runs, not what it computes: a sweep may be resumed with other values
EXECUTION_KEYS = ("device", "precision", "workers", "num_threads", "results")


@dataclass(frozen=True)
class Job:
    index: int
    checkpoint: str
    path: str
    task: str
    seed: int
    lr: float | None = None                 # one point of the task's lr_grid (None: no grid)
    lr_grid: tuple[float, ...] | None = None

    @property
    def rel(self) -> str:
        """Its folder, relative to the sweep's output folder."""
        lr = f"lr_{self.lr:g}/" if self.lr_grid else ""
        return f"{self.checkpoint}/{self.task}/{lr}seed_{self.seed}"

    @property
    def label(self) -> str:
        lr = f" lr {self.lr:g}" if self.lr_grid else ""
        return f"{self.checkpoint} {self.task}{lr} seed {self.seed}"


def plan_jobs(cfg) -> list[Job]:
    """Every (checkpoint, task[, learning rate of its lr_grid], seed), in that nesting order;
    ``index`` is the SLURM array index."""
    jobs = []
    for name, path in cfg.model_dirs().items():
        for task in cfg.tasks:
            grid = cfg.task_hp(task).get("lr_grid") or []
            if len(grid) > 1:
                pairs = [(float(lr), tuple(float(x) for x in grid)) for lr in grid]
            else:  # one listed learning rate is simply the learning rate
                pairs = [(float(grid[0]) if grid else None, None)]
            jobs += [(name, str(path), task, seed, lr, g) for lr, g in pairs for seed in cfg.seeds]
    return [Job(i, *j) for i, j in enumerate(jobs)]


def sweep_identity(cfg) -> str:
    """Hash of what the sweep computes (the config without :data:`EXECUTION_KEYS`)."""
    d = to_dict(cfg)
    return config_hash({k: v for k, v in d.items() if k not in EXECUTION_KEYS})


# --------------------------------------------------------------------------- results file

@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (created if missing) for the duration of the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def append_rows(path: Path, rows: list[dict[str, Any]], lock: Path | None = None) -> None:
    """Append ``rows`` as JSON lines: under ``lock``, one ``write`` of whole lines, then fsync."""
    if not rows:
        return
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
    with locked(lock or path.with_name(path.name + ".lock")):
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            if size and _last_byte(path, size) != b"\n":
                data = b"\n" + data  # a torn line of a killed writer stays alone on its line
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)


def _last_byte(path: Path, size: int) -> bytes:
    with open(path, "rb") as fh:
        fh.seek(size - 1)
        return fh.read(1)


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The complete rows of a results file (a torn or malformed line is skipped with a warning)."""
    if not path.is_file():
        return []
    rows = []
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    for lineno, line in enumerate(lines[:-1], 1):  # the last piece has no newline: not complete
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            log.warning("%s:%d: skipping a malformed line (a writer killed mid-line?)", path, lineno)
    return rows


def _row_key(row: dict[str, Any]) -> tuple:
    lr = float(row["lr"]) if len(row.get("lr_grid") or []) > 1 else None
    return row["checkpoint"], row["task"], row["seed"], row["config_hash"], lr


def job_key(cfg, job: Job) -> tuple:
    from cmedbert.finetune.run import recipe_hash

    return job.checkpoint, job.task, job.seed, recipe_hash(cfg, job.task), job.lr if job.lr_grid else None


def done_jobs(cfg, out: Path, jobs: list[Job]) -> set[int]:
    """Indices of the jobs whose rows are in ``OUT/results.jsonl`` and whose folder exists."""
    have = {_row_key(r) for r in read_rows(out / RESULTS)}
    return {j.index for j in jobs if job_key(cfg, j) in have and (out / j.rel).is_dir()}


def sweep_rows(cfg, out: Path, jobs: list[Job]) -> list[dict[str, Any]]:
    """This sweep's rows in job order (a row repeated by a re-run job counts once)."""
    keys = {job_key(cfg, j): j.index for j in jobs}
    seen, rows = set(), []
    for r in read_rows(out / RESULTS):
        k = _row_key(r)
        if k in keys and (k, r["metric"]) not in seen:
            seen.add((k, r["metric"]))
            rows.append(r)
    return sorted(rows, key=lambda r: keys[_row_key(r)])


# --------------------------------------------------------------------------- the output folder

def open_sweep(cfg, out: Path, jobs: list[Job]) -> None:
    """Create ``out`` for this sweep, or check that it holds this sweep (same identity)."""
    out.mkdir(parents=True, exist_ok=True)
    ident = sweep_identity(cfg)
    with locked(out / LOCK):
        path = out / SWEEP
        if path.is_file():
            found = json.loads(path.read_text(encoding="utf-8")).get("identity")
            if found != ident:
                raise CmedbertError(f"{out} holds another fine-tuning sweep (identity {found} != {ident}): "
                                    f"choose another --out, or delete it to start again")
            return
        if any(p.name != LOCK for p in out.iterdir()):
            raise CmedbertError(f"output folder {out} already exists and is not a fine-tuning sweep folder "
                                f"(no {SWEEP}): choose another --out")
        atomic_write_text(path, json.dumps({"identity": ident, "jobs": [asdict(j) for j in jobs]},
                                           ensure_ascii=False, indent=2) + "\n")


def run_job(cfg, job: Job, out: Path, datas: dict) -> list[dict[str, Any]]:
    """Fine-tune one job into ``OUT/<rel>`` (built under a temporary name); return its rows."""
    from cmedbert.finetune.run import load_task_data, run_one
    from cmedbert.finetune.tasks import get_task

    spec = get_task(job.task)
    if job.task not in datas:
        datas[job.task] = load_task_data(cfg, spec)
    final = out / job.rel
    final.parent.mkdir(parents=True, exist_ok=True)
    for stale in final.parent.glob(f".{final.name}.tmp-*"):  # left by a killed run of this job
        shutil.rmtree(stale, ignore_errors=True)
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}"
    try:
        rows = run_one(cfg, job.checkpoint, Path(job.path), spec, datas[job.task], job.seed, tmp, lr=job.lr,
                       rel=job.rel)
        if job.lr_grid:
            rows = [dict(r, lr_grid=list(job.lr_grid)) for r in rows]
        if data_parallel_rank() != 0:  # one run over several processes: rank 0 keeps the outputs
            shutil.rmtree(tmp, ignore_errors=True)
            return rows
        if final.exists():  # complete folder without rows: its run was killed before appending them
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return rows


def data_parallel_rank() -> int:
    """This process's rank when one run spans several processes (torchrun / accelerate launch)."""
    return int(os.environ.get("RANK", "0"))


def record(cfg, out: Path, rows: list[dict[str, Any]]) -> None:
    if data_parallel_rank() != 0:
        return
    append_rows(out / RESULTS, rows, lock=out / LOCK)
    if cfg.results:
        extra = Path(cfg.results)
        append_rows(extra, rows)


# --------------------------------------------------------------------------- running

@dataclass
class Outcome:
    ran: list[Job]
    failed: list[tuple[Job, str]]


def worker_slots(cfg, n_jobs: int) -> list[str | None]:
    """One entry per worker: the GPU it sees (a CUDA_VISIBLE_DEVICES value) or None (CPU)."""
    gpus = visible_gpus() if cfg.device != "cpu" else []
    n = cfg.workers or max(1, len(gpus))
    n = max(1, min(n, n_jobs))
    return [gpus[i % len(gpus)] for i in range(n)] if gpus else [None] * n


def visible_gpus() -> list[str]:
    import torch

    if not torch.cuda.is_available():
        return []
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [x.strip() for x in env.split(",") if x.strip()] if env else []
    return ids[: torch.cuda.device_count()] or [str(i) for i in range(torch.cuda.device_count())]


def cpu_threads(cfg, n_workers: int) -> int | None:
    if cfg.num_threads:
        return cfg.num_threads
    if n_workers == 1:
        return None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // n_workers)


def execute(cfg, out: Path, todo: list[Job], datas: dict) -> Outcome:
    """Run ``todo``: here (one worker) or in worker processes; rows recorded as jobs finish."""
    slots = worker_slots(cfg, len(todo))
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 or len(slots) == 1:
        # one worker: this process (on the device it sees); or one data-parallel run spans the
        # launched processes, which take the jobs together, in order
        return _run_here(cfg, out, todo, datas)
    return _run_pool(cfg, out, todo, slots, cpu_threads(cfg, len(slots)))


def _run_here(cfg, out: Path, todo: list[Job], datas: dict) -> Outcome:
    res = Outcome([], [])
    for job in todo:
        log.info("job %d: %s", job.index, job.label)
        try:
            rows = run_job(cfg, job, out, datas)
        except Exception as exc:
            log.error("job %d (%s) failed:\n%s", job.index, job.label, traceback.format_exc())
            res.failed.append((job, _one_line(exc)))
            continue
        record(cfg, out, rows)
        res.ran.append(job)
    return res


def _one_line(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip().splitlines()
    return text[0] if text else type(exc).__name__


def _worker(conn, cfg, out: str, gpu: str | None, threads: int | None) -> None:
    """A worker process: receives jobs, sends back ("done", index, rows) or ("failed", index, error)."""
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu  # before torch touches CUDA: this worker's only GPU
    import torch

    if threads:
        torch.set_num_threads(threads)
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s [worker {os.getpid()}] %(message)s")
    datas: dict = {}
    while True:
        try:
            job = conn.recv()
        except EOFError:  # the sweep process is gone
            return
        if job is None:
            return
        try:
            rows = run_job(cfg, job, Path(out), datas)
            msg = ("done", job.index, rows)
        except Exception as exc:
            log.error("job %d (%s) failed:\n%s", job.index, job.label, traceback.format_exc())
            msg = ("failed", job.index, _one_line(exc))
        try:
            conn.send(msg)
        except (BrokenPipeError, EOFError):
            return


class _Pool:
    def __init__(self, cfg, out: Path, threads: int | None):
        import multiprocessing as mp

        self.ctx = mp.get_context("spawn")  # fresh interpreters: CUDA and threads set per worker
        self.cfg, self.out, self.threads = cfg, out, threads
        self.procs: list = []

    def start(self, gpu: str | None):
        parent, child = self.ctx.Pipe()
        proc = self.ctx.Process(target=_worker, args=(child, self.cfg, str(self.out), gpu, self.threads), daemon=True)
        proc.start()
        child.close()  # only the worker holds its end: its exit makes recv() here raise EOFError
        self.procs.append(proc)
        return parent, proc

    def stop(self) -> None:
        for proc in self.procs:
            if proc.is_alive():
                proc.terminate()
        for proc in self.procs:
            proc.join(timeout=10)


def _run_pool(cfg, out: Path, todo: list[Job], slots: list[str | None], threads: int | None) -> Outcome:
    from multiprocessing.connection import wait

    by_index = {j.index: j for j in todo}
    pending = deque(todo)
    res = Outcome([], [])
    pool = _Pool(cfg, out, threads)
    busy: dict[Any, tuple[Job, str | None, Any]] = {}  # conn -> (job, gpu, process)
    log.info("%d jobs on %d workers (%s)", len(todo), len(slots),
             ", ".join(f"GPU {g}" for g in slots) if slots[0] is not None else f"CPU, {threads or 'default'} threads each")
    restore = _terminate_on_sigterm()
    try:
        for gpu in slots:
            if pending:
                conn, proc = pool.start(gpu)
                job = pending.popleft()
                conn.send(job)
                busy[conn] = (job, gpu, proc)
        while busy:
            for conn in wait(list(busy)):
                job, gpu, proc = busy.pop(conn)
                try:
                    kind, index, payload = conn.recv()
                except (EOFError, OSError):
                    proc.join(timeout=10)
                    kind, index, payload = "failed", job.index, f"worker process died (exit code {proc.exitcode})"
                    conn = None
                if kind == "done":
                    record(cfg, out, payload)
                    res.ran.append(by_index[index])
                    log.info("job %d done: %s", index, job.label)
                else:
                    res.failed.append((by_index[index], payload))
                    log.error("job %d failed: %s: %s", index, job.label, payload)
                if pending:
                    if conn is None:  # replace a dead worker
                        conn, proc = pool.start(gpu)
                    nxt = pending.popleft()
                    conn.send(nxt)
                    busy[conn] = (nxt, gpu, proc)
                elif conn is not None:
                    conn.send(None)
    finally:
        pool.stop()
        restore()
    return res


def _terminate_on_sigterm():
    """Turn SIGTERM into SystemExit while the pool runs, so the workers are stopped too."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(signum, frame):
        raise SystemExit(128 + signum)

    old = signal.signal(signal.SIGTERM, handler)
    return lambda: signal.signal(signal.SIGTERM, old)


def run_sweep(cfg, out: Path, job_index: int | None = None) -> dict[str, Any]:
    """Run the sweep's jobs that are not done (or only job ``job_index``); write the manifest
    once every job is done. Raises :class:`CmedbertError` naming the failed jobs, if any."""
    from cmedbert.finetune.run import check_inputs, load_task_data
    from cmedbert.finetune.tasks import get_task

    out = Path(out).absolute()
    jobs = plan_jobs(cfg)
    expected = os.environ.get(IDENTITY_ENV)
    if expected and expected != sweep_identity(cfg):
        raise CmedbertError(f"this sweep's config hashes to {sweep_identity(cfg)} here, but it was planned as "
                            f"{expected} ({IDENTITY_ENV}): the config files differ between this node and the "
                            f"planning machine")
    if job_index is not None and not 0 <= job_index < len(jobs):
        raise CmedbertError(f"--job-index {job_index}: this sweep has jobs 0..{len(jobs) - 1}")
    inputs = check_inputs(cfg)
    wanted = [jobs[job_index]] if job_index is not None else jobs
    # fail on bad data before any training (an array task reads only its own task)
    datas = {t: load_task_data(cfg, get_task(t)) for t in dict.fromkeys(j.task for j in wanted)}
    open_sweep(cfg, out, jobs)
    done = done_jobs(cfg, out, jobs)
    todo = [j for j in wanted if j.index not in done]
    if len(todo) < len(wanted):
        log.info("%d of %d jobs already done in %s: skipped", len(wanted) - len(todo), len(wanted), out)
    outcome = execute(cfg, out, todo, datas)
    complete = _finish(cfg, out, jobs, datas, inputs)
    rows = sweep_rows(cfg, out, jobs)
    summary = {"out": str(out), "jobs": len(jobs), "done": len(done_jobs(cfg, out, jobs)), "ran": [j.index for j in outcome.ran],
               "skipped": sorted(done & {j.index for j in wanted}), "complete": complete,
               "failed": [(j.index, err) for j, err in outcome.failed], "rows": rows}
    if outcome.failed:
        names = "; ".join(f"job {j.index} ({j.label}): {err}" for j, err in outcome.failed)
        raise SweepFailed(f"{len(outcome.failed)} of {len(todo)} fine-tuning jobs failed: {names}. The other "
                          f"results are in {out / RESULTS}; run the same command again to retry only the "
                          f"missing jobs", summary)
    return summary


def main(cfg, out: Path, job_index: int | None = None) -> dict[str, Any]:
    """The finetune stage: run every (checkpoint, task, seed) not yet done in ``out`` (or only job
    ``job_index``, as a SLURM array task does); returns {"out", "scores": [primary-metric rows,
    chosen learning rates only], "rows", "ran", "skipped", "failed", "complete", ...}."""
    import torch

    from cmedbert.finetune.selection import select_rows
    from cmedbert.finetune.tasks import get_task

    threads = torch.get_num_threads()
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    try:
        summary = run_sweep(cfg, Path(out), job_index)
    finally:
        torch.set_num_threads(threads)  # callers (tests, notebooks) keep their own setting
    summary["scores"] = [r for r in select_rows(summary["rows"]) if r["metric"] == get_task(r["task"]).metric]
    return summary


class SweepFailed(CmedbertError):
    def __init__(self, message: str, summary: dict[str, Any]):
        super().__init__(message)
        self.summary = summary


def _finish(cfg, out: Path, jobs: list[Job], datas: dict, inputs: list[dict]) -> bool:
    """Write config.json + manifest.json when every job is done (once, under the lock)."""
    from cmedbert.artifact import describe_input, write_manifest
    from cmedbert.finetune.run import load_task_data, recipe_hash
    from cmedbert.finetune.tasks import get_task

    if data_parallel_rank() != 0:
        return False
    with locked(out / LOCK):
        if (out / "manifest.json").is_file():
            return True
        if len(done_jobs(cfg, out, jobs)) < len(jobs):
            return False
        rows = sweep_rows(cfg, out, jobs)
        write_selections(out, rows)
        datas = {t: datas.get(t) or load_task_data(cfg, get_task(t)) for t in cfg.tasks}
        files = sorted({f for d in datas.values() for f in d.files})
        write_manifest(out, stage="finetune", config=cfg, inputs=inputs + [describe_input(f) for f in files],
                       counts={"runs": len(jobs), "result_rows": len(rows)},
                       extra={"checkpoints": {k: str(v) for k, v in cfg.model_dirs().items()},
                              "tasks": {t: {"carved": d.carved, "n_train": len(d.train), "n_valid": len(d.valid),
                                            "data": d.identity, "n_eval": len(d.dev), "n_test": len(d.test),
                                            "submission_complete": d.test_complete,
                                            "recipe_hash": recipe_hash(cfg, t)} for t, d in datas.items()}})
    return True


def write_selections(out: Path, rows: list[dict[str, Any]]) -> None:
    """``<checkpoint>/<task>/selection.json`` for every learning-rate grid: the validation score of
    every learning rate and the one :func:`finetune.selection.select_rows` keeps."""
    from cmedbert.finetune.selection import chosen_lrs

    for (ckpt, task, _), (chosen, valid) in chosen_lrs(rows).items():
        atomic_write_text(out / ckpt / task / "selection.json", json.dumps(
            {"selected_by": "mean validation score over seeds", "chosen_lr": chosen,
             "valid": {f"{lr:g}": v for lr, v in valid.items()}}, indent=2) + "\n")
        log.info("%s %s: lr %g chosen on the validation split (%s)", ckpt, task, chosen,
                 ", ".join(f"{lr:g}: {sum(v) / len(v):.4f}" for lr, v in valid.items()))
