"""Helpers for the finetune tests: a tiny BERT checkpoint and small CBLUE-layout data folders."""

from __future__ import annotations

import json
import shutil
from pathlib import Path


def make_tiny_checkpoint(vocab_dir: Path, out: Path, hidden: int = 32, layers: int = 1, seed: int = 0) -> Path:
    """A tiny BertForMaskedLM + the bert-base-chinese tokenizer, saved as a HF folder."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

    shutil.copytree(vocab_dir, out)
    tok = AutoTokenizer.from_pretrained(str(out))
    assert len(tok) > 20000, len(tok)
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=len(tok), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
                     intermediate_size=2 * hidden, max_position_embeddings=512)
    BertForMaskedLM(cfg).save_pretrained(str(out))
    tok.save_pretrained(str(out))
    return out


def subset_task(src: Path, dst: Path, task: str, n: dict[str, int], jsonl: bool = False, extra: tuple = ()) -> None:
    """Copy the first n[split] records of each split file (official layout) into dst/task/."""
    from cmedbert.finetune.tasks import read_records

    (dst / task).mkdir(parents=True, exist_ok=True)
    for split, k in n.items():
        f = src / task / f"{task}_{split}.json"
        if not f.exists():
            continue
        recs = read_records(f)[:k]
        text = ("".join(json.dumps(r, ensure_ascii=False) + "\r\n" for r in recs) if jsonl
                else json.dumps(recs, ensure_ascii=False, indent=2))
        (dst / task / f.name).write_text(text, encoding="utf-8")
    for name in extra:
        shutil.copy(src / task / name, dst / task / name)
