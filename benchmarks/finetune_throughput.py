"""Fine-tuning throughput on KUAKE-QIC: ours vs the way the CBLUE baseline runs it, in one run.

    .venv/bin/python benchmarks/finetune_throughput.py [epochs=3] [num_threads=1] [max_train=0] [hidden=64] [layers=2]

``num_threads`` (default 1, like benchmarks/pretrain_throughput.py): on a shared machine OpenMP
threads that spin while other processes hold the cores slow both sides down erratically.

Both sides train the SAME tiny BERT (random init, built here from the bert-base-chinese vocab:
nothing downloaded), the same [CLS]-linear classifier head, the same hyperparameters (batch 32,
lr 1e-3 AdamW, linear warmup 10% / decay, weight decay 0.01, clip 1.0, max_len 128) and seed,
on the full KUAKE-QIC train split (shared data), scored on the full dev split:

* ours: ``cmedbert.finetune.sweep.main`` (accelerate fit loop, dynamic padding, length-grouped
  batches); samples/s from its training log (evaluation time excluded);
* baseline: ``transformers.Trainer`` with every example padded to max_len (the CBLUE baseline
  code's ``padding='max_length'``), no evaluation during training; samples/s from the Trainer's
  own ``train_samples_per_second``.

Dev accuracy on the full dev split: the baseline's model after the last epoch; ours as the stage
reports it (the epoch chosen on its validation split, 10 % carved from train, so it trains on 90 %
of the records). Last line:
``speedup=… ours_samples_s=… baseline_samples_s=… ours_dev_acc=… baseline_dev_acc=…``.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_MODE", "disabled")

TASK = "KUAKE-QIC"


def _args(argv: list[str]) -> dict:
    opts = {"epochs": 3.0, "num_threads": 1, "max_train": 0, "hidden": 64, "layers": 2, "batch_size": 32,
            "lr": 1e-3, "max_len": 128, "seed": 42}
    for item in argv:
        key, _, value = item.partition("=")
        if key not in opts:
            sys.exit(f"unknown option {key!r} (known: {', '.join(opts)})")
        opts[key] = type(opts[key])(value)
    return opts


def build_tiny_model(vocab_dir: Path, out: Path, hidden: int, layers: int, seed: int) -> Path:
    import shutil

    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    shutil.copytree(vocab_dir, out)
    tok = AutoTokenizer.from_pretrained(str(out))
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=len(tok), hidden_size=hidden, num_hidden_layers=layers,
                     num_attention_heads=max(1, hidden // 32), intermediate_size=4 * hidden, max_position_embeddings=512)
    BertModel(cfg).save_pretrained(str(out))
    tok.save_pretrained(str(out))
    return out


def run_ours(ckpt: Path, data_root: Path, o: dict, work: Path) -> tuple[float, float, float]:
    """(training samples/s, dev accuracy after the last epoch, wall seconds)."""
    from cmedbert.config import load_config
    from cmedbert.finetune.config import FinetuneConfig
    from cmedbert.finetune.sweep import main

    overrides = [f"models={{tiny='{ckpt}'}}", f"tasks=['{TASK}']", f"seeds=[{o['seed']}]", f"data_dir='{data_root}'",
                 f"hp.epochs={o['epochs']}", f"hp.batch_size={o['batch_size']}", f"hp.lr={o['lr']}",
                 f"hp.max_len={o['max_len']}", "hp.patience=0", "hp.evals_per_epoch=1", "hp.warmup_ratio=0.1",
                 "hp.weight_decay=0.01", "hp.max_grad_norm=1.0", f"num_threads={o['num_threads']}", "device=cpu"]
    if o["max_train"]:
        overrides.append(f"max_train_samples={o['max_train']}")
    cfg = load_config(FinetuneConfig, None, overrides)
    t0 = time.time()
    main(cfg, work / "ours")
    wall = time.time() - t0
    run = work / "ours" / "tiny" / TASK / f"seed_{o['seed']}"
    log = [json.loads(x) for x in (run / "train_log.jsonl").read_text().splitlines()]
    speed = [r["train_samples_s"] for r in log if "train_samples_s" in r][-1]
    return speed, json.loads((run / "dev_scores.json").read_text())["value"], wall


def run_baseline(ckpt: Path, data_root: Path, o: dict, work: Path) -> tuple[float, float, float]:
    """transformers.Trainer, every example padded to max_len (CBLUE baseline style)."""
    import numpy as np
    import torch
    from transformers import AutoModel, AutoTokenizer, Trainer, TrainingArguments

    from cmedbert.finetune.cls import build_classifier
    from cmedbert.finetune.tasks import get_task, read_records

    spec = get_task(TASK)
    lab2id = {lab: i for i, lab in enumerate(spec.labels)}
    tok = AutoTokenizer.from_pretrained(str(ckpt))
    train = read_records(data_root / TASK / f"{TASK}_train.json")
    dev = read_records(data_root / TASK / f"{TASK}_dev.json")
    if o["max_train"]:
        train = train[: o["max_train"]]

    class Padded(torch.utils.data.Dataset):
        def __init__(self, records):
            enc = tok([r["query"] for r in records], padding="max_length", truncation=True, max_length=o["max_len"],
                      return_tensors="pt")
            self.enc, self.labels = enc, torch.tensor([lab2id[r["label"]] for r in records])

        def __len__(self):
            return len(self.labels)

        def __getitem__(self, i):
            return {**{k: v[i] for k, v in self.enc.items()}, "labels": self.labels[i]}

    class WithLoss(torch.nn.Module):  # our classifier (same head) in the Trainer's calling convention
        def __init__(self):
            super().__init__()
            self.clf = build_classifier(AutoModel.from_pretrained(str(ckpt)), len(spec.labels))

        def forward(self, input_ids, attention_mask, token_type_ids=None, labels=None):
            logits = self.clf(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
            loss = torch.nn.functional.cross_entropy(logits, labels) if labels is not None else None
            return {"loss": loss, "logits": logits}

    torch.manual_seed(o["seed"])
    model = WithLoss()
    args = TrainingArguments(output_dir=str(work / "baseline"), per_device_train_batch_size=o["batch_size"],
                             per_device_eval_batch_size=64, learning_rate=o["lr"], num_train_epochs=o["epochs"],
                             warmup_steps=0.1, weight_decay=0.01, max_grad_norm=1.0, lr_scheduler_type="linear",
                             eval_strategy="no", save_strategy="no", logging_strategy="no", report_to="none",
                             disable_tqdm=True, use_cpu=True, dataloader_num_workers=0, seed=o["seed"])
    trainer = Trainer(model=model, args=args, train_dataset=Padded(train))
    t0 = time.time()
    metrics = trainer.train().metrics
    pred = trainer.predict(Padded(dev))
    wall = time.time() - t0
    acc = float((np.argmax(pred.predictions, -1) == pred.label_ids).mean())
    return metrics["train_samples_per_second"], acc, wall


def main(argv: list[str]) -> None:
    import torch

    from cmedbert.shared_data import shared_data_root

    o = _args(argv)
    torch.set_num_threads(o["num_threads"])
    data_root = shared_data_root() / "cblue"
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="ft-throughput-") as tmp:
        work = Path(tmp)
        ckpt = build_tiny_model(shared_data_root() / "vocab" / "bert-base-chinese", work / "tiny", o["hidden"],
                                o["layers"], o["seed"])
        ours_s, ours_acc, ours_wall = run_ours(ckpt, data_root, o, work)
        torch.set_num_threads(o["num_threads"])
        base_s, base_acc, base_wall = run_baseline(ckpt, data_root, o, work)
    load_after = os.getloadavg()
    print(f"model: tiny BERT hidden {o['hidden']} layers {o['layers']}; {TASK} train "
          f"{o['max_train'] or 'all'} records x {o['epochs']} epochs, batch {o['batch_size']}, lr {o['lr']}, "
          f"max_len {o['max_len']}, {o['num_threads']} threads")
    print(f"ours:     {ours_s:.1f} training samples/s, dev acc {ours_acc:.4f} ({ours_wall:.0f} s incl. data, dev evals, test predictions)")
    print(f"baseline: {base_s:.1f} training samples/s, dev acc {base_acc:.4f} ({base_wall:.0f} s incl. dev prediction)")
    print(f"load average (1 min) before {load_before[0]:.1f}, after {load_after[0]:.1f}")
    print(f"speedup={ours_s / base_s:.2f} ours_samples_s={ours_s:.1f} baseline_samples_s={base_s:.1f} "
          f"ours_dev_acc={ours_acc:.4f} baseline_dev_acc={base_acc:.4f}")


if __name__ == "__main__":
    main(sys.argv[1:])
