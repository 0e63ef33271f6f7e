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
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from cmedbert.artifact import atomic_output, read_manifest, write_manifest
from cmedbert.config import output_fields, to_dict
from cmedbert.errors import ArtifactError, CmedbertError
from cmedbert.pretrain import engine as eng
from cmedbert.pretrain.config import PretrainConfig, peak_tflops
from cmedbert.pretrain.data import (Batches, Phase, Prefetcher, build_phases, check_ids_fit, eval_batches, open_phases,
                                    phase_at, plan_steps)
from cmedbert.pretrain.metrics import MetricsSink, memory_gb
from cmedbert.training import barrier

log = logging.getLogger("pretrain")

STAGE = "pretrain"
# Config keys that may change between a run and its resume (they do not change what is trained
# per step). Raising train.max_steps / train.train_tokens extends a run.
RESUMABLE_CHANGES = ("checkpoint.", "eval.every", "train.")


# ------------------------------------------------------------------ entry point

def main(cfg: PretrainConfig, out: str | Path, callbacks: Sequence["Callback"] = ()) -> dict[str, Any]:
    """Train ``cfg`` into the run folder ``out``: fresh, resumed from ``checkpoints/latest``, or,
    if ``out`` already holds a finished run of this config, return its manifest untouched.

    Everything that can be checked without DeepSpeed (config, tokenizer, data, batch arithmetic
    for the launcher's world size, a stale extension build lock) is checked first; nothing is
    written into ``out`` before the model is built. ``callbacks`` run after the built-in ones.

    Returns the manifest, or ``{"status": "interrupted", "step": N, ...}`` after SIGTERM/SIGINT
    (a checkpoint was written; re-running resumes)."""
    t_start = time.perf_counter()
    out = Path(out).absolute()
    finished = _finished_run(cfg, out)
    if finished is not None:
        log.info("%s holds a finished run (%s steps): not retraining", out, finished["counts"].get("steps"))
        return finished
    inputs = check_inputs(cfg, _launcher_world_size())
    eng.check_extension_locks()  # DeepSpeed (re)loads its C++ op when the process group starts
    with eng.distributed(cfg.engine.backend) as dist, _stop_on_signals() as stop:
        return _train(cfg, out, inputs, dist, stop, t_start, list(callbacks))


@dataclass
class RunInputs:
    """What a run reads, opened and checked before DeepSpeed starts."""
    tokenizer: Any
    tokenizer_hash: str
    specials: dict[str, int]
    phases: list[Phase]
    total_steps: int


def check_inputs(cfg: PretrainConfig, world_size: int) -> RunInputs:
    """Open and cross-check the tokenizer and packed data, plan the steps and build the DeepSpeed
    config for ``world_size`` ranks; raise a one-line CmedbertError on any mismatch. No DeepSpeed,
    no process group, nothing written."""
    import torch

    tokenizer, tok_hash = _load_tokenizer(cfg.tokenizer)
    specials = _special_ids(tokenizer)
    packed = open_phases(cfg, tok_hash, len(tokenizer), dict(specials))
    total_steps = plan_steps(cfg, [p.seq_len for p in packed])
    phases = build_phases(cfg, packed, total_steps)
    eng.build_ds_config(cfg, world_size)  # batch arithmetic and the user's ds_config file
    if cfg.engine.precision == "fp16" and not torch.cuda.is_available():
        raise CmedbertError("engine.precision='fp16' needs a GPU (use bf16 or fp32 on CPU)")
    longest = max(p.seq_len for p in phases)
    if cfg.init == "scratch" and cfg.model.max_position_embeddings < longest:
        raise CmedbertError(f"model.max_position_embeddings={cfg.model.max_position_embeddings} is shorter than "
                            f"the packed seq_len {longest}")
    check_ids_fit(phases, len(tokenizer))
    return RunInputs(tokenizer, tok_hash, specials, phases, total_steps)


def _launcher_world_size() -> int:
    """The world size the launcher announces (1 outside any launcher), known before DeepSpeed."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


# ------------------------------------------------------------------ the run

def _train(cfg: PretrainConfig, out: Path, inputs: RunInputs, dist: eng.DistInfo, stop: threading.Event,
           t_start: float, extra_callbacks: list["Callback"]) -> dict[str, Any]:
    import torch

    from cmedbert.pretrain.model import count_params, wrap_masked_lm

    rank, world = dist.rank, dist.world_size
    phases, total_steps, tokenizer = inputs.phases, inputs.total_steps, inputs.tokenizer
    accum = eng.grad_accumulation(cfg.batch.global_batch, cfg.batch.micro_batch, world)
    ds_config = eng.build_ds_config(cfg, world)
    model = _build_model(cfg, tokenizer, max(p.seq_len for p in phases))
    check_ids_fit(phases, model.config.vocab_size)

    # the run folder: created (config pinned) only now that every input check passed
    ckpt_dir = out / "checkpoints"
    _prepare_run_dir(cfg, out, rank)
    resume_step = _checked_resume_point(cfg, ckpt_dir, rank)
    if resume_step is not None and resume_step > total_steps:
        raise CmedbertError(f"{out} already trained {resume_step} steps, more than the {total_steps} this config "
                            f"asks for: use another --out (a run can be extended, not shortened)")

    params = count_params(model)
    engine = eng.initialize(wrap_masked_lm(model), cfg, ds_config, total_steps, dist.device)
    engine_desc = eng.describe_engine(engine, cfg.engine.precision, world)
    log.info("engine: %s; global batch %d sequences = %d micro x %d accumulation x %d ranks; %d steps",
             engine_desc, cfg.batch.global_batch, cfg.batch.micro_batch, accum, world, total_steps)
    for ph in phases:
        log.info("phase %d: %s seq_len %d, steps %d-%d, %d tokens per step", ph.index, ph.packed.folder,
                 ph.seq_len, ph.start_step, ph.end_step, cfg.batch.global_batch * ph.seq_len)

    sink = None
    try:
        trainer = Trainer(cfg, engine, inputs, dist, out, stop, model.config, t_start=t_start)
        if resume_step is not None:
            trainer.resume(resume_step)
        sink = MetricsSink(cfg.metrics, out, rank, total_steps, trainer.state.step, run_config=to_dict(cfg))
        evaluator = Evaluator(sink, cfg.eval.every, extra=[context_check])
        trainer.callbacks = [MetricsLogger(sink, cfg.metrics.log_every), evaluator,
                             HfExporter(_export_steps(cfg, total_steps)), Checkpointer(cfg.checkpoint.every),
                             *extra_callbacks]
        result = trainer.fit()
        if result is not None:
            return result
        # the end: final eval and checkpoint (callbacks), model/ export, manifest
        _export_hf(engine, tokenizer, out / "model", rank)
        manifest = None
        if rank == 0:
            manifest = _write_run_manifest(cfg, out, trainer.state, params, engine_desc, evaluator.final, ds_config,
                                           inputs.tokenizer_hash, phases, trainer.resume_s, accum, world)
        barrier()
        if manifest is None:
            manifest = read_manifest(out, stage=STAGE)
        return manifest
    finally:
        if sink is not None:
            sink.close()
        eng.teardown(engine)
        trainer = None
        del engine
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


# ------------------------------------------------------------------ step statistics

@dataclass
class StepStats:
    """One optimizer step's statistics, summed over its micro-batches and over all ranks."""
    loss_sum: float = 0.0  # sum of the masked tokens' cross-entropies (nats)
    masked: float = 0.0  # masked (predicted) tokens
    correct: float = 0.0  # masked tokens predicted right
    tokens: float = 0.0  # non-pad tokens
    micro_batches: float = 0.0  # forward passes
    stop: float = 0.0  # ranks asked to stop (SIGTERM / SIGINT)

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    def all_reduced(self, device: Any, world_size: int) -> "StepStats":
        """These statistics summed over all ranks in ONE all_reduce of a tensor laid out in field
        order and decoded back by name. Fields may hold 0-d tensors on ``device`` (accumulated
        without a host sync). The reduction also makes every rank agree on stopping."""
        import torch
        import torch.distributed as tdist

        packed = torch.stack([torch.as_tensor(getattr(self, n), dtype=torch.float64).to(device)
                              for n in self.names()])
        if world_size > 1:
            tdist.all_reduce(packed)
        return StepStats(**dict(zip(self.names(), packed.cpu().tolist())))

    def __add__(self, other: "StepStats") -> "StepStats":
        return StepStats(**{n: getattr(self, n) + getattr(other, n) for n in self.names()})

    @property
    def loss(self) -> float:
        """Mean token loss: every masked token of the steps weighs the same."""
        return self.loss_sum / max(self.masked, 1.0)

    @property
    def accuracy(self) -> float:
        return self.correct / max(self.masked, 1.0)


@dataclass
class TrainState:
    """What a checkpoint's client state carries (besides the data position)."""
    step: int = 0
    tokens_seen: int = 0
    sequences_seen: int = 0


# ------------------------------------------------------------------ the trainer

class Trainer:
    """The training loop over a DeepSpeed engine: steps, evaluation, checkpoints. What happens
    between steps (logging, evaluation, exports, checkpoints) lives in :class:`Callback` s."""

    def __init__(self, cfg: PretrainConfig, engine: Any, inputs: RunInputs, dist: eng.DistInfo, out: Path,
                 stop: threading.Event, model_config: Any, callbacks: Sequence["Callback"] = (),
                 t_start: float | None = None):
        import torch

        self.cfg, self.engine, self.inputs, self.dist, self.out, self.stop = cfg, engine, inputs, dist, out, stop
        self.model_config, self.callbacks = model_config, list(callbacks)
        self.phases, self.total_steps, self.tokenizer = inputs.phases, inputs.total_steps, inputs.tokenizer
        self.accum = eng.grad_accumulation(cfg.batch.global_batch, cfg.batch.micro_batch, dist.world_size)
        self.special_list = sorted(set(inputs.specials.values()))
        self.batches = Batches(cfg, self.phases, dist.rank, dist.world_size, self.accum, self.special_list,
                               inputs.specials["mask_id"], inputs.specials["pad_id"], len(self.tokenizer))
        self.device = torch.device(dist.device)
        self.state = TrainState()
        self.stopping = False
        self.lr = cfg.optimizer.lr  # the lr the last step ran with
        self.t_start = time.perf_counter() if t_start is None else t_start
        self.resume_s = 0.0  # main() start to the first step: setup + resume latency

    @property
    def ckpt_dir(self) -> Path:
        return self.out / "checkpoints"

    def phase(self, step: int) -> Phase:
        return phase_at(self.phases, step)

    def resume(self, step: int) -> None:
        client = eng.load_checkpoint(self.engine, self.ckpt_dir, step)
        known = {k: client[k] for k in asdict(self.state) if k in client}
        self.state = TrainState(**{**asdict(self.state), **known})
        log.info("resumed from %s at step %d (%d tokens seen)", self.ckpt_dir / f"step_{step}", self.state.step,
                 self.state.tokens_seen)

    def _emit(self, event: str, *args: Any) -> None:
        for cb in self.callbacks:
            getattr(cb, event)(self, *args)

    def fit(self) -> dict[str, Any] | None:
        """The training steps; returns a status dict if stopped by a signal, else None."""
        self._emit("on_train_start")
        self.resume_s = time.perf_counter() - self.t_start
        self.engine.train()
        prefetch, first = Prefetcher(self.batches, self.total_steps), True
        try:
            while self.state.step < self.total_steps:
                step = self.state.step
                stats = self.train_step(prefetch, step)
                if first:
                    log.info("first step starts %.2fs after main() started (setup + resume latency)", self.resume_s)
                    first = False
                self.state = TrainState(step + 1, self.state.tokens_seen + int(stats.tokens),
                                        self.state.sequences_seen + self.cfg.batch.global_batch)
                self.stopping = stats.stop > 0
                self._emit("on_step_end", stats)
                if self.stopping:
                    done = self.state.step
                    log.info("stop signal: checkpoint step_%d written, exiting (re-run to resume)", done)
                    return {"status": "interrupted", "step": done, "tokens_seen": self.state.tokens_seen,
                            "checkpoint": str(self.ckpt_dir / f"step_{done}")}
            self._emit("on_train_end")
            return None
        finally:
            prefetch.close()

    def train_step(self, prefetch: Prefetcher, step: int) -> StepStats:
        """Forward/backward over the step's micro-batches and the optimizer step. The loss of
        every micro-batch is divided by the masked-token count of the whole global batch (all
        micro-batches, all ranks), known from the labels before any backward pass."""
        import torch
        from torch.profiler import record_function  # named ranges: a profiler trace shows where a step goes

        with record_function("cmedbert.data"):
            micro = [prefetch.get(step, m) for m in range(self.accum)]
            global_masked = self._global_masked(micro)
        self.lr = self.engine.get_lr()[0] if self.engine.get_lr() else self.cfg.optimizer.lr
        acc = torch.zeros(3, dtype=torch.float64, device=self.device)  # loss sum, correct, masked: no host sync
        for m, b in enumerate(micro):
            torch.manual_seed(_dropout_seed(self.cfg.seed, step, int(b["block"])))
            with record_function("cmedbert.forward"):
                loss_sum, n_correct, n_masked = self._forward(b)
            with record_function("cmedbert.backward"):
                eng.backward_global_mean(self.engine, loss_sum, global_masked)
            if m == len(micro) - 1:
                self._emit("on_gradients_ready")  # reduced gradients, before clipping and the update
            with record_function("cmedbert.optimizer"):
                self.engine.step()  # DeepSpeed steps the optimizer at the accumulation boundary only
            acc += torch.stack([loss_sum.detach().double(), n_correct.double(), n_masked.double()])
        mine = StepStats(loss_sum=acc[0], correct=acc[1], masked=acc[2], tokens=sum(int(b["n_tokens"]) for b in micro),
                         micro_batches=len(micro), stop=float(self.stop.is_set()))
        with record_function("cmedbert.stats"):  # a host sync: the step's statistics, all ranks agree on stopping
            return mine.all_reduced(self.device, self.dist.world_size)

    def _global_masked(self, micro: list[dict[str, np.ndarray]]) -> float:
        import torch
        import torch.distributed as tdist

        local = sum(int((b["labels"] != -100).sum()) for b in micro)
        if self.dist.world_size == 1:
            return float(local)
        t = torch.tensor(float(local), dtype=torch.float64, device=self.device)
        tdist.all_reduce(t)
        return float(t)

    def _forward(self, b: dict[str, np.ndarray]):
        import torch

        def upload(a: np.ndarray):
            t = torch.from_numpy(a)
            if self.device.type == "cuda":  # pinned: the copy runs asynchronously to the host
                return t.pin_memory().to(self.device, non_blocking=True)
            return t.to(self.device)

        attn = None if b["attention_mask"].all() else upload(b["attention_mask"])
        where = upload(np.flatnonzero(b["labels"].reshape(-1) != -100))
        return self.engine(upload(b["input_ids"]), attn, upload(b["labels"]), where)

    def evaluate(self, phase: Phase) -> dict[str, float] | None:
        """Loss and accuracy on the valid split under the fixed 15% mask (all ranks take part)."""
        import torch
        import torch.distributed as tdist

        if phase.valid is None or len(phase.valid) == 0:
            return None
        totals = torch.zeros(3, dtype=torch.float64, device=self.device)  # loss sum, correct, masked
        self.engine.eval()
        with torch.no_grad():
            for b in eval_batches(phase, self.cfg, self.dist.rank, self.dist.world_size, self.special_list,
                                  self.inputs.specials["mask_id"], self.inputs.specials["pad_id"],
                                  len(self.tokenizer)):
                loss_sum, n_correct, n_masked = self._forward(b)
                totals += torch.stack([loss_sum.double(), n_correct.double(), n_masked.double()]) * b["weight"]
        if self.dist.world_size > 1:
            tdist.all_reduce(totals)
        totals = totals.cpu()
        self.engine.train()
        masked = max(float(totals[2]), 1.0)
        return {"loss": float(totals[0]) / masked, "mlm_acc": float(totals[1]) / masked,
                "eval_masked_tokens": int(totals[2])}

    def save_checkpoint(self) -> None:
        done = self.state.step
        client = {**asdict(self.state), "position": self.batches.position(done) if done < self.total_steps else None}
        eng.save_checkpoint(self.engine, self.ckpt_dir, done, client, self.cfg.checkpoint.keep_last, self.dist.rank)

    def export_hf(self, dest: Path) -> None:
        _export_hf(self.engine, self.tokenizer, dest, self.dist.rank)

    def flops(self, stats: StepStats) -> float:
        """Training FLOPs of the last step (for MFU)."""
        seq_len = self.phase(self.state.step - 1).seq_len
        return flops_per_step(self.model_config, seq_len, self.cfg.batch.global_batch, stats.masked)


def flops_per_step(model_config, seq_len: int, global_batch: int, n_masked: float) -> float:
    from cmedbert.pretrain.model import flops_per_sequence

    return flops_per_sequence(model_config, seq_len, n_masked / global_batch) * global_batch


# ------------------------------------------------------------------ callbacks

class Callback:
    """Hooks the trainer calls on every rank (collective work such as evaluation, exports and
    checkpoints must run on all ranks; writing files is rank 0's job inside them)."""

    def on_train_start(self, trainer: Trainer) -> None:
        pass

    def on_gradients_ready(self, trainer: Trainer) -> None:
        """After the step's last backward pass (gradients reduced), before the optimizer update."""

    def on_step_end(self, trainer: Trainer, stats: StepStats) -> None:
        pass

    def on_train_end(self, trainer: Trainer) -> None:
        pass


class MetricsLogger(Callback):
    """A metrics.jsonl row (loss, accuracy, lr, grad norm, throughput, MFU, memory) every
    ``log_every`` steps and at the last step; the progress bar every step."""

    def __init__(self, sink: MetricsSink, log_every: int):
        self.sink, self.log_every = sink, log_every
        self.window, self.flops, self.t0 = StepStats(), 0.0, time.perf_counter()
        self.peak: float | None = None

    def on_train_start(self, trainer: Trainer) -> None:
        self.peak = peak_tflops(trainer.cfg.metrics, trainer.cfg.engine.precision, _device_name())
        self.window, self.flops, self.t0 = StepStats(), 0.0, time.perf_counter()

    def on_step_end(self, trainer: Trainer, stats: StepStats) -> None:
        self.window += stats
        self.flops += trainer.flops(stats)
        done = trainer.state.step
        if done % self.log_every == 0 or done == trainer.total_steps:
            dt = max(time.perf_counter() - self.t0, 1e-9)
            world = trainer.dist.world_size
            gn = trainer.engine.get_global_grad_norm()
            self.sink.write({"step": done, "tokens_seen": trainer.state.tokens_seen, "loss": self.window.loss,
                             "mlm_acc": self.window.accuracy, "tok_s": self.window.tokens / dt,
                             "mfu": self.flops / dt / (self.peak * 1e12 * world) if self.peak else None,
                             "lr": trainer.lr, "grad_norm": None if gn is None else float(gn),
                             "seq_len": trainer.phase(done - 1).seq_len, "mem_gb": memory_gb(trainer.dist.device),
                             "epoch": trainer.batches.position(done - 1)["epoch"], "time": time.time()})
            self.window, self.flops, self.t0 = StepStats(), 0.0, time.perf_counter()
        self.sink.progress(done)


class Evaluator(Callback):
    """Evaluation rows (``split: "valid"``) every ``every`` steps and at the end (kept in
    ``final`` for the manifest). Each of ``extra`` is called as ``f(trainer, phase)`` on every
    rank after the built-in loss/accuracy and returns more metrics for the same row."""

    def __init__(self, sink: MetricsSink, every: int,
                 extra: Sequence[Callable[[Trainer, Phase], dict[str, Any]]] = ()):
        self.sink, self.every, self.extra = sink, every, list(extra)
        self.final: dict[str, Any] | None = None

    def run(self, trainer: Trainer, phase: Phase) -> dict[str, Any] | None:
        ev = trainer.evaluate(phase)
        if ev is None:
            return None
        for f in self.extra:
            ev.update(f(trainer, phase))
        self.sink.write({"step": trainer.state.step, "tokens_seen": trainer.state.tokens_seen, "split": "valid", **ev})
        return ev

    def on_step_end(self, trainer: Trainer, stats: StepStats) -> None:
        done = trainer.state.step
        if self.every and done % self.every == 0 and done < trainer.total_steps:
            self.run(trainer, trainer.phase(done - 1))

    def on_train_end(self, trainer: Trainer) -> None:
        self.final = self.run(trainer, trainer.phase(trainer.total_steps - 1))


def context_check(trainer: Trainer, phase: Phase) -> dict[str, Any]:
    """Evaluator extra: [MASK]-only accuracy and loss in real and shuffled context against the
    most-frequent-token / unigram baselines (``pretrain/evaluate.py``), on the same fixed valid mask;
    logs a warning while the encoder is still on the unigram plateau. All ranks take part."""
    import torch
    import torch.distributed as tdist

    from cmedbert.pretrain import evaluate

    if phase.valid is None or len(phase.valid) == 0:
        return {}
    specials, special, vocab = trainer.inputs.specials, trainer.special_list, len(trainer.tokenizer)

    @torch.no_grad()
    def predict(input_ids, attention_mask, labels):
        loss_sum, n_correct, n_masked = trainer._forward(
            {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels})
        return float(n_correct), float(n_masked), float(loss_sum)

    def reduce(totals):
        t = torch.from_numpy(totals).to(trainer.device)
        if trainer.dist.world_size > 1:
            tdist.all_reduce(t)
        return t.cpu().numpy()

    batches = eval_batches(phase, trainer.cfg, trainer.dist.rank, trainer.dist.world_size, special,
                           specials["mask_id"], specials["pad_id"], vocab)
    trainer.engine.eval()
    try:
        ev = evaluate.context_eval(predict, batches, mask_id=specials["mask_id"], special_ids=special,
                                   top_token=evaluate.most_frequent_token(phase.train.ids, special),
                                   unigram_logp=evaluate.unigram_log_probs(phase.train.ids, special, vocab),
                                   seed=trainer.cfg.eval.seed, reduce=reduce)
    finally:
        trainer.engine.train()
    if ev["plateau"]:
        log.warning(evaluate.plateau_message(ev))
    return ev


class HfExporter(Callback):
    """Hugging Face exports ``hf/step_N`` at the chosen steps (step 0 = the initial model; the
    final model goes to ``model/``)."""

    def __init__(self, steps: set[int]):
        self.steps = steps

    def on_train_start(self, trainer: Trainer) -> None:
        if trainer.state.step == 0 and 0 in self.steps:
            trainer.export_hf(trainer.out / "hf" / "step_0")

    def on_step_end(self, trainer: Trainer, stats: StepStats) -> None:
        done = trainer.state.step
        if done in self.steps and done < trainer.total_steps:
            trainer.export_hf(trainer.out / "hf" / f"step_{done}")


class Checkpointer(Callback):
    """DeepSpeed checkpoints every ``every`` steps, when stopping on a signal, and at the end."""

    def __init__(self, every: int):
        self.every = every

    def on_step_end(self, trainer: Trainer, stats: StepStats) -> None:
        done = trainer.state.step
        if trainer.stopping or (self.every and done % self.every == 0):
            trainer.save_checkpoint()

    def on_train_end(self, trainer: Trainer) -> None:
        if eng.latest_step(trainer.ckpt_dir) != trainer.state.step:
            trainer.save_checkpoint()


# ------------------------------------------------------------------ helpers

def _dropout_seed(seed: int, step: int, block: int) -> int:
    """Dropout randomness as a function of (seed, step, micro-batch block): exact on resume and
    identical for 2 ranks x 1 micro-batch vs 1 rank x 2 accumulation steps."""
    return int(np.random.SeedSequence([seed, 7, step, block]).generate_state(1)[0])


def _device_name() -> str | None:
    import torch

    return torch.cuda.get_device_name() if torch.cuda.is_available() else None


def _load_tokenizer(folder: str):
    """(tokenizer, tokenizer hash) of a local tokenizer folder (a run pins the hash)."""
    from cmedbert.paths import resolve
    from cmedbert.tokenizer.base import load_tokenizer
    from cmedbert.tokenizer.hashing import tokenizer_hash

    path = resolve(folder, key="tokenizer")
    if not path.is_dir():
        raise ArtifactError(f"tokenizer folder not found: {folder}")
    return load_tokenizer(path), tokenizer_hash(path)


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
    """The fields that change the output (``cmedbert.config.output_fields``, the same rule as
    ``config_hash``) minus the ones a resumed run may change (flattened)."""
    flat: dict[str, Any] = {}

    def walk(d, prefix=""):
        for k, v in d.items():
            key = f"{prefix}{k}"
            if isinstance(v, dict):
                walk(v, key + ".")
            elif not any(key.startswith(p) for p in RESUMABLE_CHANGES):
                flat[key] = v

    walk(output_fields(cfg_dict, PretrainConfig))
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
            if diff and eng.latest_step(out / "checkpoints") is None:
                # nothing was trained with the pinned config (a run that failed or was killed before its
                # first checkpoint): the corrected config starts the run afresh
                log.info("%s: no checkpoint yet, re-pinning config.json (changed: %s)", out, ", ".join(diff[:5]))
                _pin_config(cfg, out)
            elif diff:
                err = (f"{out} holds a run with a different config ({', '.join(diff[:5])}): resume with the same "
                       f"config or use another --out")
        elif out.exists() and any(p.name != "metrics.jsonl" for p in out.iterdir()):
            err = f"{out} exists and is not a pretrain run folder (no config.json): use another --out"
        else:
            _pin_config(cfg, out)
    _raise_everywhere(err)


def _pin_config(cfg, out: Path) -> None:
    from cmedbert.artifact import atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    (out / "checkpoints").mkdir(exist_ok=True)
    atomic_write_text(out / "config.json", json.dumps(to_dict(cfg), indent=2, ensure_ascii=False) + "\n")


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
                if cfg.checkpoint.trust_checkpoint:
                    log.warning("checkpoint.trust_checkpoint=true: DeepSpeed unpickles %s without checking it",
                                ckpt_dir / f"step_{step}")
                else:
                    eng.check_checkpoint_safe(ckpt_dir / f"step_{step}")
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
    barrier()


def _write_run_manifest(cfg, out, state, params, engine_desc, final_eval, ds_config, tok_hash, phases,
                        resume_s, accum, world) -> dict[str, Any]:
    from cmedbert.artifact import describe_outputs

    model_files = sorted(str(p.relative_to(out)) for p in (out / "model").rglob("*") if p.is_file())
    inputs = [cfg.tokenizer] + [str(ph.packed.folder) for ph in phases]
    if cfg.init == "continual" and cfg.init_from and Path(cfg.init_from).is_dir():
        inputs.append(cfg.init_from)
    counts = {"steps": state.step, "tokens_seen": state.tokens_seen, "sequences_seen": state.sequences_seen,
              **params}
    extra = {"pretrain": {"engine": engine_desc, "world_size": world, "grad_accumulation": accum,
                          "tokens_per_step": {str(ph.index): cfg.batch.global_batch * ph.seq_len for ph in phases},
                          "tokenizer_hash": tok_hash, "final_eval": final_eval, "ds_config": ds_config,
                          "resume_s": resume_s, "init": cfg.init, "init_from": cfg.init_from}}
    if final_eval and "mask_acc" in final_eval:  # the context check, for compare's intrinsic table
        from cmedbert.pretrain.evaluate import KEYS

        extra["eval"] = {k: final_eval[k] for k in KEYS}
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


os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
