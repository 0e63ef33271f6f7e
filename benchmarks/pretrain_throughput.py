"""Pretraining throughput: our trainer vs the usual Hugging Face recipe, plus resume latency.

Both run with ``--threads`` CPU threads (default 1: on a shared machine, OpenMP threads that
spin while other processes hold the cores slow everything down and blur the comparison).

Same model (BertForMaskedLM, SDPA, hidden 128 x 2 layers, bert-base-chinese vocab of 21,128),
same batch (32 sequences), same shared medical text, same CPU, one process:

* ours: packed 128-token sequences (no padding), whole-word masking from jieba word starts,
  MLM decoder only at the masked positions, DeepSpeed engine (fp32; ZeRO stage 0 by default, as
  one process has nothing to partition: ``--zero-stage 2`` measures the ZeRO-2 code path);
* baseline: HF ``Trainer`` + ``DataCollatorForLanguageModeling(whole_word_mask=True)`` on
  line-by-line examples (truncated and padded to 128 tokens), collated by one DataLoader worker
  (as ours prepares the next batch on one background thread).

Reported: non-pad tokens per second (median over the steps after warm-up) for both, their ratio, and the
time from ``main()`` start to the first resumed step at an early and a late checkpoint.

    .venv/bin/python benchmarks/pretrain_throughput.py [--steps 40] [--lines 4000]

Last line: ``speedup=… ours_tok_s=… baseline_tok_s=… resume_s_early=… resume_s_late=…``
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402

from cmedbert.paths import shared_data_root  # noqa: E402

SEQ_LEN, BATCH, WARMUP = 128, 32, 5
MODEL = {"preset": "tiny", "hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2,
         "intermediate_size": 512, "max_position_embeddings": 512}


def read_lines(root: Path, n_lines: int) -> list[str]:
    """Medical text from the shared data: the infectious-disease textbook, then dialogue lines."""
    lines = []
    for path, enc in ((root / "corpus/medicalgpt/fever.txt", "utf-8"),
                      (root / "corpus/toyhom-dialogue/内科.txt", "gb18030")):
        if not path.is_file():
            sys.exit(f"missing shared data file {path} (set CMEDBERT_SHARED_DATA)")
        lines += [l.strip() for l in path.read_text(encoding=enc, errors="replace").splitlines() if len(l.strip()) > 4]
    return lines[:n_lines]


def build_tokenizer(root: Path, dest: Path) -> Path:
    from cmedbert.pretrain.testing import make_tokenizer

    vocab = (root / "vocab/bert-base-chinese/vocab.txt").read_text(encoding="utf-8").splitlines()
    return make_tokenizer(dest, vocab, specials_first=False)


def pack(lines: list[str], tok, dest: Path, tok_dir: Path) -> Path:
    """Pack lines into 128-token sequences with jieba word starts (what the tokenizer stage's packer makes)."""
    import jieba

    from cmedbert.pretrain.testing import write_packed
    from cmedbert.tokenizer.packed import WORD_START

    jieba.setLogLevel(logging.WARNING)
    ids_stream, flags_stream = [], []
    enc = tok(lines, add_special_tokens=False, return_offsets_mapping=True)
    for line, ids, offs in zip(lines, enc["input_ids"], enc["offset_mapping"]):
        starts, pos = set(), 0
        for w in jieba.cut(line):
            starts.add(pos)
            pos += len(w)
        ids_stream.append(tok.cls_token_id if not ids_stream else tok.sep_token_id)
        flags_stream.append(WORD_START)
        for i, (a, _) in zip(ids, offs):
            ids_stream.append(i)
            flags_stream.append(WORD_START if a in starts else 0)
    n = len(ids_stream) // SEQ_LEN
    ids = np.array(ids_stream[: n * SEQ_LEN]).reshape(n, SEQ_LEN)
    flags = np.array(flags_stream[: n * SEQ_LEN], dtype=np.uint8).reshape(n, SEQ_LEN)
    n_valid = max(1, n // 20)
    return write_packed(dest, tok_dir, {"train": (ids[n_valid:], flags[n_valid:]), "valid": (ids[:n_valid], flags[:n_valid])},
                        pad_id=tok.pad_token_id, cls_id=tok.cls_token_id, sep_id=tok.sep_token_id,
                        mask_id=tok.mask_token_id)


def run_ours(tok_dir: Path, packed: Path, work: Path, steps: int, zero_stage: int) -> tuple[float, dict]:
    from cmedbert.config import load_config
    from cmedbert.pretrain.config import PretrainConfig
    from cmedbert.pretrain.train import main

    cfg = {"tokenizer": str(tok_dir), "data": {"path": str(packed)}, "model": MODEL,
           "batch": {"global_batch": BATCH, "micro_batch": BATCH}, "train": {"max_steps": steps},
           "optimizer": {"lr": 5e-4, "warmup_steps": 2}, "engine": {"zero_stage": zero_stage, "precision": "fp32"},
           "checkpoint": {"every": 10, "keep_last": 100}, "eval": {"every": 0, "max_sequences": 32},
           "metrics": {"log_every": 1, "progress_bar": False}}
    main(load_config(PretrainConfig, None, [], base=cfg), work / "ours")
    rows = [json.loads(l) for l in (work / "ours" / "metrics.jsonl").read_text().splitlines()]
    # one row per step (log_every=1): tokens/s of that step; the median resists bursts of load
    # from other processes on a shared machine
    return float(np.median([r["tok_s"] for r in rows if "split" not in r and r["step"] > WARMUP])), cfg


def run_baseline(lines: list[str], tok_dir: Path, work: Path, steps: int) -> float:
    import torch
    from transformers import (AutoTokenizer, BertConfig, BertForMaskedLM, DataCollatorForLanguageModeling, Trainer,
                              TrainerCallback, TrainingArguments)

    from cmedbert.pretrain.config import ModelConfig

    tok = AutoTokenizer.from_pretrained(str(tok_dir))
    shape = ModelConfig(**MODEL).shape()
    config = BertConfig(vocab_size=len(tok), pad_token_id=tok.pad_token_id, max_position_embeddings=512, **shape)
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    model = BertForMaskedLM(config)
    # the recipe: one example per line, truncated and padded to 128; the whole-word collator
    # finds word boundaries from the offsets (a run of CJK chars counts as one word)
    enc = tok(lines, truncation=True, max_length=SEQ_LEN, padding="max_length", return_offsets_mapping=True)
    dataset = [{"input_ids": i, "attention_mask": a, "offset_mapping": o}
               for i, a, o in zip(enc["input_ids"], enc["attention_mask"], enc["offset_mapping"])]
    collator = DataCollatorForLanguageModeling(tok, mlm=True, mlm_probability=0.15, whole_word_mask=True)
    counts: list[int] = []  # non-pad tokens of each batch the model sees

    def count_tokens(module, args, kwargs):
        counts.append(int(kwargs["attention_mask"].sum()))

    model.register_forward_pre_hook(count_tokens, with_kwargs=True)

    stamps: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            stamps.append(time.perf_counter())

    args = TrainingArguments(output_dir=str(work / "hf_baseline"), per_device_train_batch_size=BATCH, max_steps=steps,
                             learning_rate=5e-4, warmup_steps=2, logging_strategy="no", save_strategy="no",
                             report_to=[], use_cpu=True, dataloader_num_workers=1, disable_tqdm=True, seed=0,
                             remove_unused_columns=False)
    Trainer(model=model, args=args, train_dataset=dataset, data_collator=collator, callbacks=[Clock()]).train()
    # batch k (0-based) is step k+1, which runs between stamps[k-1] and stamps[k];
    # per-step tokens/s, median over the steps after warm-up (as for ours)
    per_step = [counts[k] / (stamps[k] - stamps[k - 1]) for k in range(WARMUP, len(stamps))]
    return float(np.median(per_step))


def resume_latency(work: Path, cfg: dict, step: int) -> float:
    """Copy the run, point latest at step_N, drop the final outputs, and resume it for one step
    in a fresh ``cmedbert pretrain`` process. Seconds from launching the process to the first
    resumed step's metrics row: interpreter start, imports, process group, model, checkpoint
    check + load and that one step (so a conservative figure)."""
    dest = work / f"resume_{step}"
    shutil.copytree(work / "ours", dest)
    (dest / "manifest.json").unlink()
    shutil.rmtree(dest / "model")
    (dest / "checkpoints" / "latest").write_text(f"step_{step}\n")
    cfg = json.loads(json.dumps(cfg))
    cfg["train"]["max_steps"] = step + 1
    cfg_path = work / f"resume_{step}.json"
    cfg_path.write_text(json.dumps(cfg))
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                            "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = "1"
    t0 = time.time()
    subprocess.run([sys.executable, "-m", "cmedbert.cli", "pretrain", str(cfg_path), "--out", str(dest)], env=env,
                   check=True, capture_output=True)
    rows = [json.loads(l) for l in (dest / "metrics.jsonl").read_text().splitlines()]
    first = next(r for r in rows if r["step"] == step + 1 and "split" not in r)
    return first["time"] - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=30, help="optimizer steps per trainer")
    ap.add_argument("--lines", type=int, default=6000, help="lines of shared medical text")
    ap.add_argument("--keep", type=Path, default=None, help="keep the work folder here")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads for both trainers")
    ap.add_argument("--zero-stage", type=int, default=0, help="DeepSpeed ZeRO stage for our trainer")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    root = shared_data_root()
    work = Path(tempfile.mkdtemp(prefix="pt_bench_")) if args.keep is None else args.keep
    work.mkdir(parents=True, exist_ok=True)
    try:
        from transformers import AutoTokenizer

        lines = read_lines(root, args.lines)
        tok_dir = build_tokenizer(root, work / "tokenizer")
        tok = AutoTokenizer.from_pretrained(str(tok_dir))
        packed = pack(lines, tok, work / "packed", tok_dir)
        t = time.perf_counter()
        ours, cfg = run_ours(tok_dir, packed, work, args.steps, args.zero_stage)
        print(f"ours (ZeRO stage {args.zero_stage}, {args.threads} thread(s)): {ours:.0f} non-pad tok/s ({time.perf_counter() - t:.1f}s incl. setup)", flush=True)
        t = time.perf_counter()
        base = run_baseline(lines, tok_dir, work, args.steps)
        print(f"baseline (HF Trainer, line-by-line, whole-word collator): {base:.0f} non-pad tok/s "
              f"({time.perf_counter() - t:.1f}s incl. setup)", flush=True)
        early, late = resume_latency(work, cfg, 10), resume_latency(work, cfg, (args.steps // 10) * 10)
        print(f"resume latency (process launch to first resumed step done): step 10 {early:.2f}s, step {(args.steps // 10) * 10} "
              f"{late:.2f}s", flush=True)
        print(f"speedup={ours / base:.2f} ours_tok_s={ours:.0f} baseline_tok_s={base:.0f} "
              f"resume_s_early={early:.2f} resume_s_late={late:.2f}")
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
