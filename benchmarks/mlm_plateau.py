"""Pipeline vs a plain PyTorch loop on the same packed data: does the pretraining pipeline itself
keep tiny encoders on the unigram plateau, or does the recipe?

    python benchmarks/mlm_plateau.py CONFIG.toml [key=value ...] --out DIR [--only pipeline|plain]

Both sides train the same ``BertForMaskedLM`` (same init: ``pretrain.model.build_model`` under the
config's seed), on the same batches (``pretrain.data.Batches``: same rows, same masks, same
dropout seeds), with the same AdamW param groups, learning-rate schedule (``engine.lr_lambda``) and
gradient clipping. The pipeline side is ``pretrain.train.main`` (DeepSpeed engine, masked-only MLM
head); the plain side is a bare loop over ``BertForMaskedLM(...).loss`` (full-vocab head, no
DeepSpeed). Every ``eval.every`` steps both are scored by ``pretrain.evaluate.context_eval`` on the
same fixed valid mask: [MASK]-only accuracy, the same with the context shuffled, and the
always-most-frequent-token baseline. If the pipeline had a bug the curves would part; if both sit
on the plateau, the recipe is to blame.

Prints one row per evaluation and, as the LAST line, ``key=value`` pairs: final [MASK] accuracy of
each side, the baseline, and the first token count at which each side left the plateau (mask_acc
>= 2x baseline; -1 if never).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np


def plateau_end(rows: list[dict]) -> int:
    """Tokens seen at the first evaluation with [MASK] accuracy >= 2x the baseline (-1: never)."""
    for r in rows:
        if r["mask_acc"] >= 2 * r["baseline_most_frequent"] and r["mask_acc"] > 0:
            return int(r["tokens_seen"])
    return -1


def run_pipeline(cfg, out: Path) -> list[dict]:
    from cmedbert.pretrain.train import main

    t0 = time.perf_counter()
    main(cfg, out)
    wall = time.perf_counter() - t0
    rows = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    valid = [r for r in rows if r.get("split") == "valid"]
    for r in valid:
        r["wall_s"] = wall
    return valid


def run_plain(cfg, out: Path) -> list[dict]:
    """The same training as ``main`` without DeepSpeed or the masked-only head."""
    import torch

    from cmedbert.pretrain import engine as eng
    from cmedbert.pretrain import evaluate
    from cmedbert.pretrain.data import Batches, build_phases, open_phases, plan_steps
    from cmedbert.pretrain.model import build_model
    from cmedbert.pretrain.train import _dropout_seed, _load_tokenizer, _special_ids
    from cmedbert.training import param_groups

    tok, tok_hash = _load_tokenizer(cfg.tokenizer)
    specials = _special_ids(tok)
    special = sorted(set(specials.values()))
    packed = open_phases(cfg, tok_hash, len(tok), specials)
    total = plan_steps(cfg, [p.seq_len for p in packed])
    phases = build_phases(cfg, packed, total)
    if len(phases) != 1 or cfg.batch.global_batch != cfg.batch.micro_batch:
        raise SystemExit("the plain loop takes one phase and global_batch == micro_batch")
    ph = phases[0]
    model = build_model(cfg, tok, cfg.tokenizer, ph.seq_len)
    o = cfg.optimizer
    opt = torch.optim.AdamW(param_groups(model.named_parameters(), o.weight_decay), lr=o.lr, betas=(o.beta1, o.beta2),
                            eps=o.eps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, eng.lr_lambda(o, total))
    batches = Batches(cfg, phases, 0, 1, 1, special, specials["mask_id"], specials["pad_id"], len(tok))
    top = evaluate.most_frequent_token(ph.train.ids, special)

    def score(step: int, tokens: int, loss: float) -> dict:
        model.eval()
        ev = evaluate.context_eval(
            evaluate.hf_predict(model),
            evaluate.fixed_eval_batches(ph.valid.ids, ph.valid.flags, micro_batch=cfg.batch.micro_batch,
                                        seed=cfg.eval.seed, special_ids=special, mask_id=specials["mask_id"],
                                        pad_id=specials["pad_id"], vocab_size=len(tok),
                                        max_sequences=cfg.eval.max_sequences),
            mask_id=specials["mask_id"], special_ids=special, top_token=top, seed=cfg.eval.seed,
            unigram_logp=evaluate.unigram_log_probs(ph.train.ids, special, len(tok)))
        model.train()
        return {"step": step, "tokens_seen": tokens, "train_loss": loss, **ev}

    rows, tokens, t0, losses = [], 0, time.perf_counter(), []
    model.train()
    for step in range(total):
        b = batches.micro_batch(step, 0)
        torch.manual_seed(_dropout_seed(cfg.seed, step, int(b["block"])))
        attn = torch.from_numpy(b["attention_mask"].astype(np.int64))
        loss = model(input_ids=torch.from_numpy(b["input_ids"]), attention_mask=attn,
                     labels=torch.from_numpy(b["labels"])).loss
        loss.backward()
        if o.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), o.grad_clip)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        tokens += int(b["n_tokens"])
        losses.append(float(loss.detach()))
        done = step + 1
        if (cfg.eval.every and done % cfg.eval.every == 0) or done == total:
            rows.append(score(done, tokens, float(np.mean(losses))))
            losses = []
    wall = time.perf_counter() - t0
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "plain.jsonl", "w", encoding="utf-8") as fh:
        for r in rows:
            r["wall_s"] = wall
            fh.write(json.dumps(r) + "\n")
    return rows


def main(argv: list[str] | None = None) -> None:
    from cmedbert.config import load_config
    from cmedbert.pretrain.config import PretrainConfig

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config")
    ap.add_argument("overrides", nargs="*", help="key=value overrides of the pretrain config")
    ap.add_argument("--out", required=True)
    ap.add_argument("--only", choices=["pipeline", "plain"], default=None)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    cfg = load_config(PretrainConfig, args.config, args.overrides)
    cfg.metrics.progress_bar = False
    out = Path(args.out)
    sides: dict[str, list[dict]] = {}
    if args.only in (None, "pipeline"):
        sides["pipeline"] = run_pipeline(cfg, out / "pipeline")
    if args.only in (None, "plain"):
        sides["plain"] = run_plain(cfg, out / "plain")

    print(f"{'side':9} {'step':>6} {'tokens':>10} {'mask_acc':>8} {'shuffled':>8} {'baseline':>8} "
          f"{'mask_loss':>9} {'shuffled':>8} {'unigram':>7}")
    for side, rows in sides.items():
        for r in rows:
            print(f"{side:9} {r['step']:6d} {r['tokens_seen']:10d} {r['mask_acc']:8.3f} {r['mask_acc_shuffled']:8.3f} "
                  f"{r['baseline_most_frequent']:8.3f} {r['mask_loss']:9.3f} {r['mask_loss_shuffled']:8.3f} "
                  f"{r['baseline_unigram_loss']:7.3f}")
    kv = {}
    for side, rows in sides.items():
        last = rows[-1]
        kv.update({f"{side}_mask_acc": f"{last['mask_acc']:.4f}", f"{side}_shuffled": f"{last['mask_acc_shuffled']:.4f}",
                   f"{side}_plateau_end_tokens": plateau_end(rows), f"{side}_wall_s": f"{last['wall_s']:.0f}"})
        kv["baseline"] = f"{last['baseline_most_frequent']:.4f}"
        kv["tokens"] = last["tokens_seen"]
    print(" ".join(f"{k}={v}" for k, v in kv.items()))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
