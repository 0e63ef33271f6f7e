"""KUAKE-QIC: a tiny BERT fine-tuned on the full train split vs the majority-class baseline on dev.

    .venv/bin/python benchmarks/finetune_qic.py [--hidden 64] [--layers 2] [key=value ...]

Builds a tiny randomly initialised BERT (bert-base-chinese vocabulary) in a temporary folder,
runs `finetune.sweep.main` on the full KUAKE-QIC train split with the official hyperparameters
(plus any overrides), and compares dev accuracy with the majority class of train predicted for
every dev record (measured in the same run). Last line: key=value headline figures.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "finetune"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()

    from cmedbert.config import load_config
    from cmedbert.paths import shared_data_root
    from cmedbert.finetune.config import FinetuneConfig
    from cmedbert.finetune.sweep import main as run
    from cmedbert.finetune.tasks import read_records
    from finetune_fixtures import make_tiny_checkpoint

    cblue = shared_data_root() / "cblue"
    train = read_records(cblue / "KUAKE-QIC" / "KUAKE-QIC_train.json")
    dev = read_records(cblue / "KUAKE-QIC" / "KUAKE-QIC_dev.json")
    majority = Counter(r["label"] for r in train).most_common(1)[0][0]
    majority_acc = sum(r["label"] == majority for r in dev) / len(dev)

    with tempfile.TemporaryDirectory() as tmp:
        ckpt = make_tiny_checkpoint(shared_data_root() / "vocab" / "bert-base-chinese", Path(tmp) / "tiny",
                                    hidden=args.hidden, layers=args.layers)
        cfg = load_config(FinetuneConfig, None, [f"models=['{ckpt}']", "tasks=['KUAKE-QIC']", "seeds=[1]"]
                          + args.overrides)
        t0 = time.time()
        res = run(cfg, Path(tmp) / "out")
        seconds = time.time() - t0
        acc = res["scores"][0]["value"]
        hp = cfg.task_hp("KUAKE-QIC")
    print(json.dumps({"hp": hp, "n_train": len(train), "n_dev": len(dev), "majority_label": majority}, ensure_ascii=False))
    print(f"qic_dev_acc={acc:.4f} majority_acc={majority_acc:.4f} margin={acc - majority_acc:.4f} "
          f"hidden={args.hidden} layers={args.layers} lr={hp['lr']} epochs={hp['epochs']} seconds={seconds:.0f}")


if __name__ == "__main__":
    main()
