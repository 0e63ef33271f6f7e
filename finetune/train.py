"""The shared pieces of every task: loading a checkpoint, seeding, batching and one training loop
(AdamW, linear warmup/decay, gradient clipping, dev evaluation with early stopping, best weights
restored at the end)."""

from __future__ import annotations

import logging
import math
import random
import time
from pathlib import Path
from typing import Any, Callable, Sequence

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


def fit(model, n_train: int, collate: Callable[[list[int]], dict[str, Any]], hp: dict, seed: int,
        evaluate: Callable[[], float], device: str = "cpu", history: list | None = None,
        name: str = "") -> float:
    """Train ``model`` (which has ``loss(batch) -> scalar``) on ``n_train`` examples.

    ``collate(indices)`` builds a batch; ``evaluate()`` returns the metric on the validation split
    that selects (carved from train, never the reported dev split; higher is better).
    Evaluates ``evals_per_epoch`` times per epoch; stops after ``patience`` evaluations without
    improvement (counted only once the validation metric is above 0: span tasks score 0 for a while
    before the first correct span); restores the best weights. Returns the best validation metric.
    """
    import torch
    from transformers import get_linear_schedule_with_warmup

    if n_train == 0:
        raise CmedbertError(f"{name}: no training examples")
    bs = int(hp["batch_size"])
    steps_per_epoch = math.ceil(n_train / bs)
    total = max(1, math.ceil(float(hp["epochs"]) * steps_per_epoch))
    eval_every = max(1, math.ceil(steps_per_epoch / max(1, int(hp["evals_per_epoch"]))))
    opt = torch.optim.AdamW(param_groups(model.named_parameters(), float(hp["weight_decay"])), lr=float(hp["lr"]))
    sched = get_linear_schedule_with_warmup(opt, int(float(hp["warmup_ratio"]) * total), total)
    gen = torch.Generator().manual_seed(seed)
    model.to(device)
    best, best_state, bad, step = -math.inf, None, 0, 0
    patience = int(hp["patience"])
    history = history if history is not None else []
    t0 = time.time()
    losses: list[float] = []
    stop = False
    while step < total and not stop:
        order = torch.randperm(n_train, generator=gen).tolist()
        for i in range(0, n_train, bs):
            if step >= total:
                break
            model.train()
            batch = {k: (v.to(device) if hasattr(v, "to") else v) for k, v in collate(order[i:i + bs]).items()}
            loss = model.loss(batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if float(hp["max_grad_norm"]) > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), float(hp["max_grad_norm"]))
            opt.step()
            sched.step()
            step += 1
            losses.append(float(loss.detach()))
            if step % eval_every == 0 or step == total:
                model.eval()
                with torch.no_grad():
                    score = float(evaluate())
                row = {"name": name, "step": step, "epoch": round(step / steps_per_epoch, 3),
                       "train_loss": sum(losses) / len(losses), "valid": score, "lr": sched.get_last_lr()[0],
                       "seconds": round(time.time() - t0, 2)}
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
    model.eval()
    return best
