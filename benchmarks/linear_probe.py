"""Linear probe: how much does a frozen encoder's representation already know about a task?

    python benchmarks/linear_probe.py NAME=MODEL_DIR [NAME=MODEL_DIR ...] [--tasks KUAKE-QIC KUAKE-QQR]
        [--data-dir ../shared/data/cblue] [--train 4000] [--seed 0]

For each model folder (a pretraining run's model/, an untrained export, any HF BERT folder) and task,
the encoder is frozen; each text (a query, or a query pair as [CLS] q1 [SEP] q2 [SEP]) becomes the
mean of its last-layer token vectors; a multinomial logistic regression (L2, full-batch L-BFGS) is
fitted on the first --train train records and scored on the whole dev file (accuracy). The same
features, weights and data for every model: differences are what pretraining put into the frozen
representation. A random-init encoder is the floor (random features still separate classes somewhat).

Prints a table, then the headline figures on the last line as key=value pairs
(probe_<name>_<task>=accuracy).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

TEXTS = {"KUAKE-QIC": ("query", None), "KUAKE-QQR": ("query1", "query2"), "CHIP-CTC": ("text", None)}


def load_split(data_dir: Path, task: str, split: str, limit: int | None) -> tuple[list[tuple[str, str | None]], list[str]]:
    path = data_dir / task / f"{task}_{split}.json"
    records = json.loads(path.read_text(encoding="utf-8"))[:limit]
    a, b = TEXTS[task]
    return [(r[a], r[b] if b else None) for r in records], [str(r["label"]) for r in records]


@torch.no_grad()
def features(model_dir: Path, texts: list[tuple[str, str | None]], max_len: int = 64, batch: int = 256) -> torch.Tensor:
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    enc = AutoModel.from_pretrained(str(model_dir)).eval()
    out = []
    for i in range(0, len(texts), batch):
        chunk = texts[i:i + batch]
        firsts, seconds = [t[0] for t in chunk], [t[1] for t in chunk]
        x = tok(firsts, seconds if seconds[0] is not None else None, truncation=True, max_length=max_len,
                padding=True, return_tensors="pt")
        h = enc(**x).last_hidden_state
        m = x["attention_mask"].unsqueeze(-1).float()
        out.append((h * m).sum(1) / m.sum(1))
    return torch.cat(out)


def fit_probe(x: torch.Tensor, y: torch.Tensor, n_classes: int, l2: float = 1e-3, seed: int = 0) -> torch.nn.Linear:
    torch.manual_seed(seed)
    mean, std = x.mean(0), x.std(0) + 1e-6
    probe = torch.nn.Linear(x.shape[1], n_classes)
    opt = torch.optim.LBFGS(probe.parameters(), max_iter=500, line_search_fn="strong_wolfe")
    xs = (x - mean) / std

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(probe(xs), y) + l2 * probe.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    probe.norm = (mean, std)  # type: ignore[attr-defined]
    return probe


def probe_accuracy(model_dir: Path, data_dir: Path, task: str, n_train: int, seed: int) -> float:
    train_x, train_y = load_split(data_dir, task, "train", n_train)
    dev_x, dev_y = load_split(data_dir, task, "dev", None)
    labels = sorted(set(train_y) | set(dev_y))
    index = {l: i for i, l in enumerate(labels)}
    probe = fit_probe(features(model_dir, train_x), torch.tensor([index[l] for l in train_y]), len(labels), seed=seed)
    mean, std = probe.norm  # type: ignore[attr-defined]
    pred = probe((features(model_dir, dev_x) - mean) / std).argmax(-1)
    return float((pred == torch.tensor([index[l] for l in dev_y])).float().mean())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+", help="NAME=MODEL_DIR")
    ap.add_argument("--tasks", nargs="+", default=list(TEXTS), choices=list(TEXTS))
    ap.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cblue"))
    ap.add_argument("--train", type=int, default=4000, help="train records the probe is fitted on")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    models = dict(m.split("=", 1) for m in args.models)
    results, t0 = {}, time.perf_counter()
    print(f"{'model':12s} " + " ".join(f"{t:>10s}" for t in args.tasks))
    for name, folder in models.items():
        accs = [probe_accuracy(Path(folder), Path(args.data_dir), t, args.train, args.seed) for t in args.tasks]
        results.update({f"probe_{name}_{t}": a for t, a in zip(args.tasks, accs)})
        print(f"{name:12s} " + " ".join(f"{a:10.4f}" for a in accs), flush=True)
    print(f"({time.perf_counter() - t0:.0f} s)")
    print(" ".join(f"{k}={v:.4f}" for k, v in results.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
