"""``cmedbert demo --out DIR``: every stage on small built-in data, on CPU, in minutes.

The demo is the comparison experiment (:mod:`cmedbert.experiment`) fed with the data shipped in
``cmedbert/demo_data`` (written for this project): it builds the medical corpus, trains a tiny
general base vocab and model on general text, extends the vocab on the medical corpus (audit
before/after), pretrains a from-scratch and a continual tiny BERT through the DeepSpeed engine
(ZeRO-2, gloo, whole-word masking), fine-tunes both on a KUAKE-QIC-shaped and a CMeEE-shaped task
and writes ``DIR/report.md``. The configs it ran are written to ``DIR/demo-configs/``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any

DEMO_DATA = Path(__file__).resolve().parent / "demo_data"

# Sizes: "default" is the README demo (~1.5 min on 2 idle cores, measured); "tiny" is for the tests.
PRESETS: dict[str, dict[str, Any]] = {
    "default": {"base_tokens": 16 * 128 * 600, "arm_tokens": 16 * 128 * 800, "epochs": 15, "log_every": 10, "eval_every": 200},
    "tiny": {"base_tokens": 16 * 128 * 12, "arm_tokens": 16 * 128 * 16, "epochs": 1, "log_every": 2, "eval_every": 8},
}


def register(sub: argparse._SubParsersAction) -> None:
    from cmedbert.cliargs import add_config_args

    p = sub.add_parser("demo", help="run every stage on small built-in data on CPU (minutes)", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(p)
    p.add_argument("--preset", choices=sorted(PRESETS), default="default", help="demo size (tiny = for tests)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from cmedbert.cliargs import split_config_args
    from cmedbert.errors import ConfigError

    path, overrides = split_config_args(args.args)
    if path is not None:
        raise ConfigError(f"demo takes no config file ({path}); use key=value overrides of the experiment config")
    from cmedbert.experiment import StepInterrupted

    t0 = time.perf_counter()
    try:
        report = main(args.out, preset=args.preset, overrides=overrides)
    except StepInterrupted as exc:
        print(f"cmedbert demo: stopped: {exc}")
        return 0
    print(f"demo finished in {time.perf_counter() - t0:.0f} s; report: {report}")
    return 0


def medical_corpus_config() -> dict[str, Any]:
    d = DEMO_DATA
    return {
        "sources": [
            {"name": "dialogue", "type": "toyhom_csv", "paths": [str(d / "medical" / "dialogue.csv")]},
            {"name": "consult", "type": "meddialog", "paths": [str(d / "medical" / "consult.txt")]},
            {"name": "qa", "type": "instruction_jsonl", "paths": [str(d / "medical" / "qa.jsonl")]},
            {"name": "kg", "type": "kg_triples", "paths": [str(d / "kg" / "triples.json")]},
        ],
        "decontam": {"files": [str(d / "cblue" / "*" / "*_dev.json"), str(d / "cblue" / "*" / "*_test.json")]},
        "workers": 1,
        "progress": False,
    }


def experiment_config(preset: str, config_dir: Path) -> dict[str, Any]:
    """The demo experiment as plain data (a valid ``ExperimentConfig``); its medical corpus
    config is expected at ``config_dir/medical-corpus.json``."""
    p = PRESETS[preset]
    d = DEMO_DATA
    corpus_cfg = config_dir / "medical-corpus.json"
    tiny_model = {"preset": "tiny", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                  "intermediate_size": 256, "max_position_embeddings": 128}
    return {
        "medical_corpus": str(corpus_cfg),
        "general": {"corpus": str(d / "general"), "vocab_size": 2048, "train_tokens": p["base_tokens"]},
        "arms": [{"name": "scratch", "init": "scratch", "vocab": "extended"},
                 {"name": "continual", "init": "continual", "vocab": "extended"}],
        "train_tokens": p["arm_tokens"],
        "budget_fractions": [0.5],          # score against pretraining budget (budget.png), on the quick task
        "budget_tasks": ["KUAKE-QIC"],
        "kg_terms": [str(d / "kg" / f"{k}.txt") for k in ("disease", "symptom", "drug", "check")],
        "in_domain_vocab_size": 2048,
        "seq_len": 128,
        "corpus": {"workers": 1, "progress": False},
        "extend": {"min_char_count": 2},
        "pack": {"workers": 1, "valid_fraction": 0.05},
        "pretrain": {
            "model": tiny_model,
            "batch": {"global_batch": 16, "micro_batch": 16},
            "optimizer": {"lr": 2e-3, "warmup_ratio": 0.06, "schedule": "linear"},
            "engine": {"zero_stage": 2, "precision": "fp32"},
            "checkpoint": {"every": 0, "keep_last": 1},
            "eval": {"every": p["eval_every"], "max_sequences": 64},
            "metrics": {"log_every": p["log_every"], "wandb_mode": "disabled", "progress_bar": False},
        },
        "finetune": {
            "tasks": ["KUAKE-QIC", "CMeEE"],
            "seeds": [0],
            "data_dir": str(d / "cblue"),
            "hp": {"epochs": p["epochs"], "batch_size": 16, "lr": 1e-3, "patience": 0},
            "num_threads": 2,
        },
    }


def main(out: str | Path, preset: str = "default", overrides: list[str] | None = None) -> Path:
    """Run the demo into ``out``; returns the path of ``report.md``.

    The whole plan (every typed stage config) is built before any step runs: a bad override fails
    first, and leaves no output folder behind when it created none."""
    from cmedbert import compare, experiment
    from cmedbert.config import load_config

    out = Path(out).absolute()
    config_dir = out / "demo-configs"
    data = experiment_config(preset, config_dir)
    cfg = load_config(experiment.ExperimentConfig, None, overrides, base=data)  # bad overrides fail here
    created = not out.exists()
    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / "medical-corpus.json").write_text(json.dumps(medical_corpus_config(), ensure_ascii=False, indent=2),
                                                    encoding="utf-8")
    (config_dir / "experiment.json").write_text(json.dumps(data, ensure_ascii=False, indent=2), encoding="utf-8")
    try:
        plan = experiment.plan(cfg, out)  # reads medical-corpus.json: a bad stage key fails here
    except Exception:
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise
    return compare.main(cfg, out, plan)
