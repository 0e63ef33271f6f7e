"""The shared pieces of every task: loading a checkpoint, seeding, batching and one training loop
(AdamW, linear warmup/decay, gradient clipping, dev evaluation with early stopping, best weights
restored at the end).

The loop runs on :class:`accelerate.Accelerator`: the same code on CPU and GPU, the device chosen
automatically (``device="auto"``: CUDA when visible, else CPU), bf16 autocast on GPUs that have it
and fp16 with loss scaling on those that do not (``precision="auto"``; fp32 on CPU, which keeps a
fixed seed bit-for-bit reproducible), and data parallel over several processes when started by
``accelerate launch`` / torchrun (each rank takes its share of every batch). Batches are padded to
their longest example (dynamic padding) and, for training, grouped by length.
"""

from __future__ import annotations

import logging
import math
import random
import time
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from cmedbert.errors import CmedbertError
from cmedbert.training import param_groups

log = logging.getLogger("finetune")


def set_seed(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def load_backbone(ckpt: Path):
    """(tokenizer, encoder) from a Hugging Face checkpoint folder (a pretrain run's ``model/``
    works: its MLM head is dropped, the encoder weights are kept)."""
    ckpt = Path(ckpt)
    if not (ckpt / "config.json").is_file():
        raise CmedbertError(f"checkpoint {ckpt}: no config.json (expected a Hugging Face model folder, "
                            f"e.g. a pretrain run's RUN_DIR/model)")
    import transformers
    from transformers import AutoModel

    from cmedbert.tokenizer.base import load_tokenizer

    transformers.logging.set_verbosity_error()  # "weights not used: cls.predictions.*" is expected
    tok = load_tokenizer(ckpt)
    try:
        enc = AutoModel.from_pretrained(str(ckpt))
    except (OSError, ValueError) as exc:
        raise CmedbertError(f"checkpoint {ckpt}: cannot load: {exc}") from None
    # fp32 master weights: a checkpoint saved by a bf16/fp16 run loads in that dtype; training and
    # autocast want fp32 parameters (the heads added on top are fp32 too)
    enc = enc.float()
    if len(tok) < 100:
        raise CmedbertError(f"checkpoint {ckpt}: tokenizer has only {len(tok)} tokens (broken tokenizer files?)")
    return tok, enc


def pad_batch(seqs: Sequence[Sequence[int]], pad: int = 0):
    import torch

    n = max(len(s) for s in seqs)
    out = torch.full((len(seqs), n), pad, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.as_tensor(s, dtype=torch.long)
    return out


# --------------------------------------------------------------------------- where and how to run

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass(frozen=True)
class Execution:
    """Where the fit loop runs: ``device`` (auto | cpu | cuda) and ``precision`` (auto | fp32 |
    bf16 | fp16). Set for a whole job with :func:`execution`, so that the task runners (which
    only pass their batches around) need not thread it through."""

    device: str = "auto"
    precision: str = "auto"


_EXECUTION: ContextVar[Execution] = ContextVar("cmedbert_finetune_execution", default=Execution())


@contextmanager
def execution(device: str = "auto", precision: str = "auto") -> Iterator[Execution]:
    token = _EXECUTION.set(Execution(device, precision))
    try:
        yield _EXECUTION.get()
    finally:
        _EXECUTION.reset(token)


def resolve_device(device: str = "auto") -> str:
    """``auto`` -> ``cuda`` when a CUDA GPU is visible, else ``cpu``."""
    import torch

    if device not in DEVICES:
        raise CmedbertError(f"device={device!r}: expected one of {', '.join(DEVICES)} "
                            f"(a sweep gives each worker its own GPU through CUDA_VISIBLE_DEVICES)")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise CmedbertError("device=cuda but torch sees no CUDA GPU (torch.cuda.is_available() is False): "
                            "use device=auto or install a CUDA build of torch")
    return device


def resolve_precision(precision: str, device: str) -> str:
    """accelerate's mixed-precision name (``no`` | ``bf16`` | ``fp16``) for ``precision`` on ``device``."""
    import torch

    if precision not in PRECISIONS:
        raise CmedbertError(f"precision={precision!r}: expected one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        if device == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "no"  # fp32 on CPU: reproducible bit for bit, and CPU bf16 autocast is rarely faster
    if precision == "fp16" and device == "cpu":
        raise CmedbertError("precision=fp16 needs a CUDA GPU (on CPU use bf16 or fp32)")
    return "no" if precision == "fp32" else precision


def make_accelerator(device: str = "auto", precision: str = "auto"):
    """An :class:`accelerate.Accelerator` for one fit."""
    import os

    from accelerate import Accelerator, DistributedDataParallelKwargs
    from accelerate.state import AcceleratorState

    dev = resolve_device(device)
    mixed = resolve_precision(precision, dev)
    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        # accelerate keeps one device and precision per process; a single process (a sweep worker,
        # a test) fine-tunes job after job, possibly with other settings: start each fit afresh.
        AcceleratorState._reset_state(reset_partial_state=True)
    # encoders carry a pooler the heads do not use: DDP must not wait for its gradients
    ddp = DistributedDataParallelKwargs(find_unused_parameters=True)
    return Accelerator(cpu=dev == "cpu", mixed_precision=mixed, kwargs_handlers=[ddp])


def batch_order(n: int, batch_size: int, gen, lengths: Sequence[int] | None = None,
                group: int = 50) -> list[list[int]]:
    """One epoch's batches of example indices, deterministic given ``gen``.

    Without ``lengths``: a random permutation cut into batches. With ``lengths`` (length-grouped,
    like transformers' ``group_by_length``): the permutation is cut into mega-batches of
    ``group`` batches, each sorted by length (longest first) and cut into batches, and the batch
    order is shuffled again; batches then hold examples of similar length, so padding to the
    longest one wastes little, while every epoch still sees a new random grouping."""
    import torch

    perm = torch.randperm(n, generator=gen).tolist()
    if lengths is None:
        return [perm[i:i + batch_size] for i in range(0, n, batch_size)]
    mega = batch_size * max(1, group)
    batches: list[list[int]] = []
    for i in range(0, n, mega):
        chunk = sorted(perm[i:i + mega], key=lambda j: -lengths[j])  # stable: ties keep the random order
        batches += [chunk[k:k + batch_size] for k in range(0, len(chunk), batch_size)]
    return [batches[b] for b in torch.randperm(len(batches), generator=gen).tolist()]


def _adamw(groups: list[dict], lr: float):
    """AdamW, fused where torch has the kernel (CPU and CUDA since torch 2.8): one kernel over all
    tensors instead of a loop of small ops, which is most of a small model's step on CPU (measured:
    13 ms -> 3 ms per step for a 64-wide BERT with the 21k-token embedding)."""
    import torch

    try:
        return torch.optim.AdamW(groups, lr=lr, fused=True)
    except (RuntimeError, TypeError):  # older torch / unsupported device: the foreach implementation
        return torch.optim.AdamW(groups, lr=lr)


def _rank_share(batch: list[int], rank: int, world: int) -> list[int]:
    """This rank's part of a global batch (data parallel); never empty."""
    if world == 1:
        return batch
    mine = batch[rank::world]
    return mine or [batch[rank % len(batch)]]


def _loss_module(model):
    """``model.loss(batch)`` as a module's forward: accelerate's autocast and DDP's gradient
    hooks both act on ``forward``."""
    import torch

    class LossForward(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = model

        def forward(self, batch):
            return self.inner.loss(batch)

    return LossForward()


def fit(model, n_train: int, collate: Callable[[list[int]], dict[str, Any]], hp: dict, seed: int,
        evaluate: Callable[[], float], device: str | None = None, history: list | None = None,
        name: str = "", lengths: Sequence[int] | None = None) -> float:
    """Train ``model`` (which has ``loss(batch) -> scalar``) on ``n_train`` examples.

    ``collate(indices)`` builds a batch; ``lengths`` (tokens per example, optional) turns on
    length-grouped batches; ``evaluate()`` returns the metric on the validation split that selects
    (carved from train, never the reported dev split; higher is better).
    Evaluates ``evals_per_epoch`` times per epoch; stops after ``patience`` evaluations without
    improvement (counted only once the validation metric is above 0: span tasks score 0 for a while
    before the first correct span); restores the best weights. Returns the best validation metric.
    ``device`` (auto | cpu | cuda) overrides the job's :func:`execution` device.
    Each evaluation row in ``history`` carries the training throughput so far (samples/s,
    evaluation time excluded).
    """
    import torch
    from transformers import get_linear_schedule_with_warmup

    if n_train == 0:
        raise CmedbertError(f"{name}: no training examples")
    run = _EXECUTION.get()
    acc = make_accelerator(device or run.device, run.precision)
    bs = int(hp["batch_size"])
    steps_per_epoch = math.ceil(n_train / bs)
    total = max(1, math.ceil(float(hp["epochs"]) * steps_per_epoch))
    eval_every = max(1, math.ceil(steps_per_epoch / max(1, int(hp["evals_per_epoch"]))))
    model.to(acc.device)
    opt = _adamw(param_groups(model.named_parameters(), float(hp["weight_decay"])), float(hp["lr"]))
    # the scheduler is stepped here once per global step (not prepared: accelerate would step it
    # once per process)
    sched = get_linear_schedule_with_warmup(opt, int(float(hp["warmup_ratio"]) * total), total)
    wrapped, opt = acc.prepare(_loss_module(model), opt)
    if acc.num_processes > 1:
        log.info("%s: data parallel over %d processes (%s), rank %d", name, acc.num_processes,
                 acc.distributed_type, acc.process_index)
    gen = torch.Generator().manual_seed(seed)
    best, best_state, bad, step = -math.inf, None, 0, 0
    patience = int(hp["patience"])
    clip = float(hp["max_grad_norm"])
    history = history if history is not None else []
    t0 = time.time()
    train_seconds, train_samples = 0.0, 0
    losses: list[float] = []
    stop = False
    while step < total and not stop:
        for batch_idx in batch_order(n_train, bs, gen, lengths):
            if step >= total:
                break
            t_step = time.perf_counter()
            wrapped.train()
            part = _rank_share(batch_idx, acc.process_index, acc.num_processes)
            batch = {k: (v.to(acc.device) if hasattr(v, "to") else v) for k, v in collate(part).items()}
            loss = wrapped(batch)
            opt.zero_grad(set_to_none=True)
            acc.backward(loss)
            if clip > 0:
                acc.clip_grad_norm_(wrapped.parameters(), clip)
            opt.step()
            sched.step()
            step += 1
            losses.append(float(loss.detach()))
            train_seconds += time.perf_counter() - t_step
            train_samples += len(batch_idx)
            if step % eval_every == 0 or step == total:
                model.eval()
                with torch.no_grad(), acc.autocast():
                    score = float(evaluate())
                row = {"name": name, "step": step, "epoch": round(step / steps_per_epoch, 3),
                       "train_loss": sum(losses) / len(losses), "valid": score, "lr": sched.get_last_lr()[0],
                       "seconds": round(time.time() - t0, 2),
                       "train_samples_s": round(train_samples / max(train_seconds, 1e-9), 2)}
                history.append(row)
                log.info("%s step %d/%d loss %.4f valid %.4f", name, step, total, row["train_loss"], score)
                losses = []
                if score > best:
                    best, bad = score, 0
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                elif best > 0:  # patience runs only once the model scores at all (span tasks start at 0)
                    bad += 1
                    if patience > 0 and bad >= patience:
                        history.append({"name": name, "step": step, "early_stop": True})
                        stop = True
                        break
    if best_state is not None:
        model.load_state_dict(best_state)
    # drop accelerate's references to this job's model and optimizer (free_memory() would also run a
    # full gc.collect(), ~1 s per fit on CPU; the device cache is worth emptying only on a GPU)
    if acc.device.type == "cuda":
        acc.free_memory()
    else:
        acc._models, acc._optimizers, acc._schedulers, acc._dataloaders = [], [], [], []
    model.eval()
    return best
