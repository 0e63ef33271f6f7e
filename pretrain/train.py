"""The pretrain stage: ``main(cfg, out)`` trains (or resumes) a run folder and returns its manifest.

Run folder::

    config.json, manifest.json (written when the run is complete)
    checkpoints/step_N/ (DeepSpeed, + cmedbert_checkpoint.json), checkpoints/latest
    hf/step_N/          Hugging Face exports at chosen steps (step 0 = the initial model)
    model/              the final Hugging Face export (safetensors, config, tokenizer files)
    metrics.jsonl       one row per logged step; evaluation rows carry "split": "valid"

Works under torchrun / the deepspeed launcher (rank from the environment), from plain Python
(a single-rank gloo group is created) and several times in one process.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from cmedbert.artifact import atomic_output, read_manifest, write_manifest
from cmedbert.config import config_hash, to_dict
from cmedbert.errors import ArtifactError, CmedbertError
from cmedbert.pretrain import engine as eng
from cmedbert.pretrain.config import PretrainConfig, peak_tflops
from cmedbert.pretrain.data import Batches, Prefetcher, build_phases, check_ids_fit, eval_batches, open_phases, phase_at, plan_steps
from cmedbert.pretrain.metrics import MetricsSink, memory_gb

log = logging.getLogger("pretrain")

STAGE = "pretrain"
# Config keys that may change between a run and its resume (they do not change what is trained
# per step). Raising train.max_steps / train.train_tokens extends a run.
RESUMABLE_CHANGES = ("metrics.", "checkpoint.", "eval.every", "train.")


# ------------------------------------------------------------------ entry point

def main(cfg: PretrainConfig, out: str | Path) -> dict[str, Any]:
    """Train ``cfg`` into the run folder ``out``: fresh, resumed from ``checkpoints/latest``, or,
    if ``out`` already holds a finished run of this config, return its manifest untouched.

    Returns the manifest, or ``{"status": "interrupted", "step": N, ...}`` after SIGTERM/SIGINT
    (a checkpoint was written; re-running resumes)."""
    t_start = time.perf_counter()
    out = Path(out).absolute()
    with eng.distributed(cfg.engine.backend) as dist, _stop_on_signals() as stop:
        return _train(cfg, out, dist, stop, t_start)


# ------------------------------------------------------------------ the run

def _train(cfg: PretrainConfig, out: Path, dist: eng.DistInfo, stop: threading.Event, t_start: float) -> dict[str, Any]:
    import torch

    rank, world = dist.rank, dist.world_size
    finished = _finished_run(cfg, out)
    if finished is not None:
        log.info("%s holds a finished run (%s steps): not retraining", out, finished["counts"].get("steps"))
        return finished

    # 1. inputs, checked before anything is built or trained
    tokenizer, tok_hash = _load_tokenizer(cfg.tokenizer)
    specials = _special_ids(tokenizer)
    packed = open_phases(cfg, tok_hash, len(tokenizer), {k: v for k, v in specials.items()})
    total_steps = plan_steps(cfg, [p.seq_len for p in packed])
    phases = build_phases(cfg, packed, total_steps)
    accum = eng.grad_accumulation(cfg.batch.global_batch, cfg.batch.micro_batch, world)
    ds_config = eng.build_ds_config(cfg, world)
    if cfg.engine.precision == "fp16" and not dist.device.startswith("cuda"):
        raise CmedbertError("engine.precision='fp16' needs a GPU (use bf16 or fp32 on CPU)")
    ckpt_dir = out / "checkpoints"
    _prepare_run_dir(cfg, out, rank)
    resume_step = _checked_resume_point(cfg, ckpt_dir, rank)
    if resume_step is not None and resume_step > total_steps:
        raise CmedbertError(f"{out} already trained {resume_step} steps, more than the {total_steps} this config "
                            f"asks for: use another --out (a run can be extended, not shortened)")

    # 2. model and engine
    model = _build_model(cfg, tokenizer, max(p.seq_len for p in phases))
    check_ids_fit(phases, model.config.vocab_size)
    from cmedbert.pretrain.model import count_params, wrap_masked_lm

    params = count_params(model)
    engine = eng.initialize(wrap_masked_lm(model), cfg, ds_config, total_steps, dist.device)
    engine_desc = eng.describe_engine(engine, cfg.engine.precision, world)
    log.info("engine: %s; global batch %d sequences = %d micro x %d accumulation x %d ranks; %d steps",
             engine_desc, cfg.batch.global_batch, cfg.batch.micro_batch, accum, world, total_steps)
    for ph in phases:
        log.info("phase %d: %s seq_len %d, steps %d-%d, %d tokens per step", ph.index, ph.packed.folder,
                 ph.seq_len, ph.start_step, ph.end_step, cfg.batch.global_batch * ph.seq_len)

    state = {"step": 0, "tokens_seen": 0, "sequences_seen": 0}
    if resume_step is not None:
        client = eng.load_checkpoint(engine, ckpt_dir, resume_step)
        state.update({k: client[k] for k in state if k in client})
        log.info("resumed from %s at step %d (%d tokens seen)", ckpt_dir / f"step_{resume_step}", state["step"],
                 state["tokens_seen"])
    batches = Batches(cfg, phases, rank, world, accum, sorted(set(specials.values())), specials["mask_id"],
                      specials["pad_id"], len(tokenizer))
    sink = MetricsSink(cfg.metrics, out, rank, total_steps, state["step"], run_config=to_dict(cfg))
    try:
        if state["step"] == 0 and 0 in _export_steps(cfg, total_steps):
            _export_hf(engine, tokenizer, out / "hf" / "step_0", rank)
        resume_s = time.perf_counter() - t_start
        result = _loop(cfg, engine, batches, phases, state, total_steps, sink, stop, tokenizer, out,
                       specials, dist, model.config, params, resume_s)
        if result is not None:
            return result
        # 3. the end: final eval, checkpoint, model/ export, manifest
        final_eval = _evaluate(engine, phase_at(phases, total_steps - 1), cfg, specials, dist, len(tokenizer))
        if final_eval:
            sink.write({"step": state["step"], "tokens_seen": state["tokens_seen"], "split": "valid", **final_eval})
        if eng.latest_step(ckpt_dir) != state["step"]:
            eng.save_checkpoint(engine, ckpt_dir, state["step"], dict(state), cfg.checkpoint.keep_last, rank)
        _export_hf(engine, tokenizer, out / "model", rank)
        manifest = None
        if rank == 0:
            manifest = _write_run_manifest(cfg, out, state, params, engine_desc, final_eval, ds_config, tok_hash,
                                           phases, resume_s, accum, world)
        _barrier()
        if manifest is None:
            manifest = read_manifest(out, stage=STAGE)
        return manifest
    finally:
        sink.close()
        eng.teardown(engine)
        del engine
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _loop(cfg, engine, batches: Batches, phases, state, total_steps, sink: MetricsSink, stop, tokenizer, out,
          specials, dist, model_config, params, resume_s) -> dict[str, Any] | None:
    """The training steps; returns a status dict if stopped by a signal, else None."""
    import torch

    ckpt_dir = out / "checkpoints"
    exports = _export_steps(cfg, total_steps)
    peak = peak_tflops(cfg.metrics, cfg.engine.precision, _device_name())
    window, first = _Window(), True
    engine.train()
    prefetch = Prefetcher(batches, total_steps)
    try:
        while state["step"] < total_steps:
            step = state["step"]
            ph = phase_at(phases, step)
            lr = engine.get_lr()[0] if engine.get_lr() else cfg.optimizer.lr
            stats = _one_step(cfg, engine, prefetch, step, batches.accum, stop, torch.device(dist.device),
                              dist.world_size)
            if first:
                log.info("first step starts %.2fs after main() started (setup + resume latency)", resume_s)
                first = False
            state["step"] = done = step + 1
            state["tokens_seen"] += int(stats[4])
            state["sequences_seen"] += cfg.batch.global_batch
            window.add(stats, flops_per_step(model_config, ph.seq_len, cfg.batch.global_batch, float(stats[3])))
            if done % cfg.metrics.log_every == 0 or done == total_steps:
                gn = engine.get_global_grad_norm()
                sink.write({"step": done, "tokens_seen": state["tokens_seen"], **window.row(peak, dist.world_size),
                            "lr": lr, "grad_norm": None if gn is None else float(gn), "seq_len": ph.seq_len,
                            "mem_gb": memory_gb(dist.device), "epoch": batches.position(step)["epoch"],
                            "time": time.time()})
                window = _Window()
            sink.progress(done)
            if cfg.eval.every and done % cfg.eval.every == 0 and done < total_steps:
                ev = _evaluate(engine, ph, cfg, specials, dist, len(tokenizer))
                if ev:
                    sink.write({"step": done, "tokens_seen": state["tokens_seen"], "split": "valid", **ev})
            if done in exports and done < total_steps:
                _export_hf(engine, tokenizer, out / "hf" / f"step_{done}", dist.rank)
            stopping = bool(stats[5] > 0)
            if stopping or (cfg.checkpoint.every and done % cfg.checkpoint.every == 0):
                client = {**state, "position": batches.position(done) if done < total_steps else None}
                eng.save_checkpoint(engine, ckpt_dir, done, client, cfg.checkpoint.keep_last, dist.rank)
            if stopping:
                log.info("stop signal: checkpoint step_%d written, exiting (re-run to resume)", done)
                return {"status": "interrupted", "step": done, "tokens_seen": state["tokens_seen"],
                        "checkpoint": str(ckpt_dir / f"step_{done}")}
        return None
    finally:
        prefetch.close()


def _one_step(cfg, engine, prefetch: Prefetcher, step: int, accum: int, stop, device, world: int):
    """Forward/backward over the accumulation micro-batches and the optimizer step. Returns the
    step's [loss sum, micro count, correct, masked, non-pad tokens, stop flag] summed over ranks
    (one small all-reduce, which also makes every rank agree on stopping)."""
    import torch
    import torch.distributed as tdist

    acc = torch.zeros(3, dtype=torch.float64, device=device)  # loss sum, correct, masked: no host sync
    tokens = 0
    for m in range(accum):
        b = prefetch.get(step, m)
        torch.manual_seed(_dropout_seed(cfg.seed, step, int(b["block"])))
        attn = None if b["attention_mask"].all() else torch.from_numpy(b["attention_mask"]).to(device)
        loss, n_correct, n_masked = engine(torch.from_numpy(b["input_ids"]).to(device), attn,
                                           torch.from_numpy(b["labels"]).to(device))
        engine.backward(loss)
        engine.step()  # DeepSpeed steps the optimizer at the accumulation boundary only
        acc += torch.stack([loss.detach().double(), n_correct.double(), n_masked.double()])
        tokens += int(b["n_tokens"])
    host = torch.tensor([accum, tokens, float(stop.is_set())], dtype=torch.float64, device=device)
    stats = torch.cat([acc[:1], host[:1], acc[1:], host[1:]])
    if world > 1:
        tdist.all_reduce(stats)
    return stats.cpu()


def flops_per_step(model_config, seq_len: int, global_batch: int, n_masked: float) -> float:
    from cmedbert.pretrain.model import flops_per_sequence

    return flops_per_sequence(model_config, seq_len, n_masked / global_batch) * global_batch


class _Window:
    """Sums over the steps between two metrics rows."""

    def __init__(self):
        self.loss = self.correct = self.masked = self.tokens = self.flops = 0.0
        self.n = 0
        self.t0 = time.perf_counter()

    def add(self, stats, flops: float) -> None:
        self.loss += float(stats[0])
        self.n += int(stats[1])
        self.correct += float(stats[2])
        self.masked += float(stats[3])
        self.tokens += float(stats[4])
        self.flops += flops

    def row(self, peak_tflops: float | None, world: int) -> dict[str, Any]:
        dt = max(time.perf_counter() - self.t0, 1e-9)
        return {"loss": self.loss / max(self.n, 1), "mlm_acc": self.correct / max(self.masked, 1.0),
                "tok_s": self.tokens / dt,
                "mfu": self.flops / dt / (peak_tflops * 1e12 * world) if peak_tflops else None}


def _evaluate(engine, phase, cfg, specials, dist, vocab_size) -> dict[str, float] | None:
    """Loss and accuracy on the valid split under the fixed 15% mask (all ranks take part)."""
    import torch
    import torch.distributed as tdist

    if phase.valid is None or len(phase.valid) == 0:
        return None
    device = torch.device(dist.device)
    totals = torch.zeros(3, dtype=torch.float64, device=device)  # loss x masked, correct, masked
    engine.eval()
    with torch.no_grad():
        for b in eval_batches(phase, cfg, dist.rank, dist.world_size, sorted(set(specials.values())),
                              specials["mask_id"], specials["pad_id"], vocab_size):
            attn = None if b["attention_mask"].all() else torch.from_numpy(b["attention_mask"]).to(device)
            loss, n_correct, n_masked = engine(torch.from_numpy(b["input_ids"]).to(device), attn,
                                               torch.from_numpy(b["labels"]).to(device))
            w = b["weight"]
            totals += torch.stack([loss.double() * n_masked, n_correct.double(), n_masked.double()]) * w
    if dist.world_size > 1:
        tdist.all_reduce(totals)
    totals = totals.cpu()
    engine.train()
    masked = max(float(totals[2]), 1.0)
    return {"loss": float(totals[0]) / masked, "mlm_acc": float(totals[1]) / masked,
            "eval_masked_tokens": int(totals[2])}


# ------------------------------------------------------------------ helpers

def _barrier() -> None:
    import torch.distributed as tdist

    if tdist.is_initialized():
        tdist.barrier()


def _dropout_seed(seed: int, step: int, block: int) -> int:
    """Dropout randomness as a function of (seed, step, micro-batch block): exact on resume and
    identical for 2 ranks x 1 micro-batch vs 1 rank x 2 accumulation steps."""
    return int(np.random.SeedSequence([seed, 7, step, block]).generate_state(1)[0])


def _device_name() -> str | None:
    import torch

    return torch.cuda.get_device_name() if torch.cuda.is_available() else None


def _load_tokenizer(folder: str):
    from transformers import AutoTokenizer

    from cmedbert.tokenizer.hashing import tokenizer_hash

    path = Path(folder)
    if not path.is_dir():
        raise ArtifactError(f"tokenizer folder not found: {folder}")
    tok_hash = tokenizer_hash(path)
    try:
        tok = AutoTokenizer.from_pretrained(str(path))
    except Exception as exc:
        raise ArtifactError(f"{folder}: cannot load tokenizer: {exc}") from None
    return tok, tok_hash


def _special_ids(tok) -> dict[str, int]:
    out = {"pad_id": tok.pad_token_id, "cls_id": tok.cls_token_id, "sep_id": tok.sep_token_id,
           "mask_id": tok.mask_token_id}
    missing = [k for k, v in out.items() if v is None]
    if missing:
        raise ArtifactError(f"tokenizer lacks special tokens: {', '.join(missing)}")
    if tok.unk_token_id is not None:
        out["unk_id"] = tok.unk_token_id
    return out


def _build_model(cfg, tokenizer, max_seq_len: int):
    from cmedbert.pretrain.model import build_model

    return build_model(cfg, tokenizer, cfg.tokenizer, max_seq_len)


def _export_steps(cfg, total_steps: int) -> set[int]:
    steps = set(cfg.checkpoint.hf_export_steps)
    if cfg.checkpoint.hf_export_every:
        steps |= set(range(cfg.checkpoint.hf_export_every, total_steps + 1, cfg.checkpoint.hf_export_every))
    return steps


def _identity(cfg_dict: dict[str, Any]) -> dict[str, Any]:
    """The config minus keys that may change on resume (flattened)."""
    flat: dict[str, Any] = {}

    def walk(d, prefix=""):
        for k, v in d.items():
            key = f"{prefix}{k}"
            if isinstance(v, dict):
                walk(v, key + ".")
            elif not any(key.startswith(p) for p in RESUMABLE_CHANGES):
                flat[key] = v

    walk(cfg_dict)
    return flat


def _finished_run(cfg, out: Path) -> dict[str, Any] | None:
    if not (out / "manifest.json").is_file():
        return None
    manifest = read_manifest(out, stage=STAGE)
    old, new = _identity(manifest.get("config", {})), _identity(to_dict(cfg))
    diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    if diff:
        raise CmedbertError(f"{out} holds a finished run with a different config ({', '.join(diff[:5])}): "
                            f"use another --out")
    if manifest.get("config", {}).get("train") != to_dict(cfg)["train"]:
        log.info("%s: finished run, but train.* changed: extending it from checkpoints/latest", out)
        return None  # a larger budget extends the run (resume path); a smaller one is refused there
    return manifest


def _prepare_run_dir(cfg, out: Path, rank: int) -> None:
    """Create the run folder and pin its config; a resumed run must keep the same config."""
    cfg_path = out / "config.json"
    err = ""
    if rank == 0:
        if cfg_path.is_file():
            old = _identity(json.loads(cfg_path.read_text(encoding="utf-8")))
            new = _identity(to_dict(cfg))
            diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            if diff:
                err = (f"{out} holds a run with a different config ({', '.join(diff[:5])}): resume with the same "
                       f"config or use another --out")
        elif out.exists() and any(p.name != "metrics.jsonl" for p in out.iterdir()):
            err = f"{out} exists and is not a pretrain run folder (no config.json): use another --out"
        else:
            out.mkdir(parents=True, exist_ok=True)
            (out / "checkpoints").mkdir(exist_ok=True)
            from cmedbert.artifact import atomic_write_text

            atomic_write_text(cfg_path, json.dumps(to_dict(cfg), indent=2, ensure_ascii=False) + "\n")
    _raise_everywhere(err)


def _raise_everywhere(err: str) -> None:
    """Rank 0 decided on an error: every rank raises it (no rank is left waiting in a collective)."""
    import torch.distributed as tdist

    if tdist.is_initialized() and tdist.get_world_size() > 1:
        box = [err]
        tdist.broadcast_object_list(box, src=0)
        err = box[0]
    if err:
        raise ArtifactError(err)


def _checked_resume_point(cfg, ckpt_dir: Path, rank: int) -> int | None:
    err, step = "", None
    if rank == 0:
        try:
            step = eng.latest_step(ckpt_dir)
            if step is not None:
                eng.verify_checkpoint(ckpt_dir / f"step_{step}", cfg.checkpoint.verify)
        except CmedbertError as exc:
            err = str(exc)
    _raise_everywhere(err)
    return eng.latest_step(ckpt_dir)


def _export_hf(engine, tokenizer, dest: Path, rank: int) -> None:
    """A Hugging Face folder (safetensors + config + tokenizer), written atomically by rank 0."""
    state_dict = eng.full_state_dict(engine)  # collective
    if rank == 0:
        with atomic_output(dest, overwrite=True) as tmp:
            engine.module.hf.save_pretrained(str(tmp), state_dict=state_dict, safe_serialization=True)
            tokenizer.save_pretrained(str(tmp))
    _barrier()


def _write_run_manifest(cfg, out, state, params, engine_desc, final_eval, ds_config, tok_hash, phases,
                        resume_s, accum, world) -> dict[str, Any]:
    from cmedbert.artifact import describe_outputs

    model_files = sorted(str(p.relative_to(out)) for p in (out / "model").rglob("*") if p.is_file())
    inputs = [cfg.tokenizer] + [str(ph.packed.folder) for ph in phases]
    if cfg.init == "continual" and cfg.init_from and Path(cfg.init_from).is_dir():
        inputs.append(cfg.init_from)
    counts = {"steps": state["step"], "tokens_seen": state["tokens_seen"],
              "sequences_seen": state["sequences_seen"], **params}
    extra = {"pretrain": {"engine": engine_desc, "world_size": world, "grad_accumulation": accum,
                          "tokens_per_step": {str(ph.index): cfg.batch.global_batch * ph.seq_len for ph in phases},
                          "tokenizer_hash": tok_hash, "final_eval": final_eval, "ds_config": ds_config,
                          "resume_s": resume_s, "init": cfg.init, "init_from": cfg.init_from}}
    return write_manifest(out, stage=STAGE, config=cfg, inputs=inputs, counts=counts, seed=cfg.seed,
                          outputs=describe_outputs(out, model_files), extra=extra)


@contextlib.contextmanager
def _stop_on_signals():
    """SIGTERM / SIGINT set a flag: the loop writes a checkpoint at the end of the step and returns."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum, frame):
        log.warning("received %s: checkpointing at the end of this step", signal.Signals(signum).name)
        stop.set()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stop
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def config_fingerprint(cfg: PretrainConfig) -> str:
    return config_hash(_identity(to_dict(cfg)))


os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
