"""``cmedbert compare CONFIG --out DIR``: scratch vs continual at the same token budget.

Runs (or reuses) the whole experiment of :mod:`cmedbert.experiment` and writes the report:
``report.md`` (fine-tuning table mean ± std and CBLUE average, pretraining summary, vocab
audit), ``loss.png`` (MLM loss against tokens seen, every run), ``scores.png`` (task scores with
error bars), ``results.jsonl`` and ``runs.json`` (the config hash of every step).
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
from pathlib import Path
from typing import Any

from cmedbert.artifact import atomic_write_text, read_jsonl, read_manifest
from cmedbert.report import loss_curve, plot_loss_curves, plot_task_scores


def register(sub: argparse._SubParsersAction) -> None:
    from cmedbert.cli import add_config_args

    p = sub.add_parser("compare", help="scratch vs continual pretraining at equal tokens, fine-tuned on CBLUE; report",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(p)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from cmedbert import experiment
    from cmedbert.cli import split_config_args
    from cmedbert.errors import ConfigError

    path, overrides = split_config_args(args.args)
    if path is None:
        raise ConfigError("compare needs an experiment config file (see configs/experiments/)")
    cfg = experiment.load(path, overrides)
    try:
        report = experiment.main(cfg, args.out)
    except experiment.StepInterrupted as exc:  # exit 0 like pretrain: a preempted job can requeue
        print(f"cmedbert compare: stopped: {exc}")
        return 0
    print(f"report: {report}")
    return 0


# ---------------------------------------------------------------------------- report

def pretrain_summary(models: dict[str, Path]) -> list[dict[str, Any]]:
    """One row per arm from its run manifest and metrics.jsonl."""
    rows = []
    for arm, model_dir in models.items():
        run = model_dir.parent
        if not (run / "manifest.json").is_file():  # a collected checkpoint that is not a cmedbert run
            rows.append({"arm": arm, "stage": "collected", "init": f"collected ({model_dir})", "steps": None,
                         "tokens_seen": None, "first_loss": None, "last_loss": None, "valid_loss": None,
                         "valid_acc": None, "tok_s": None, "config_hash": None})
            continue
        manifest = json.loads((run / "manifest.json").read_text(encoding="utf-8"))
        metrics = read_jsonl(run / "metrics.jsonl") if (run / "metrics.jsonl").is_file() else []
        train = [r for r in metrics if r.get("split", "train") == "train" and "loss" in r]
        valid = [r for r in metrics if r.get("split") == "valid"]
        counts = manifest.get("counts", {})
        rows.append({
            "arm": arm, "stage": manifest.get("stage"),
            "init": "untrained" if manifest.get("stage") == "untrained" else manifest["config"].get("init"),
            "steps": counts.get("steps", 0), "tokens_seen": counts.get("tokens_seen", 0),
            "first_loss": train[0]["loss"] if train else None, "last_loss": train[-1]["loss"] if train else None,
            "valid_loss": valid[-1].get("loss") if valid else None, "valid_acc": valid[-1].get("mlm_acc") if valid else None,
            "tok_s": (sum(r.get("tok_s", 0) for r in train) / len(train)) if train else None,
            "config_hash": manifest.get("config_hash"),
        })
    return rows


def _f(v: Any, fmt: str = "{:.3f}") -> str:
    return "–" if v is None else fmt.format(v)


def _audit_lines(out: Path) -> list[str]:
    audit_path = out / "tokenizer" / "audit.json"
    if not audit_path.is_file():
        return []
    audit = json.loads(audit_path.read_text(encoding="utf-8"))
    before, after = audit.get("before", {}), audit.get("after", {})
    keys = [k for k in before if isinstance(before[k], (int, float)) and isinstance(after.get(k), (int, float))]
    if not keys:
        return []
    lines = ["## Vocabulary: base vs extended (audit on the medical corpus)", "",
             "| metric | base | extended |", "|---|---|---|"]
    for k in keys:
        fmt = "{:,}" if isinstance(before[k], int) else "{:.4f}"
        lines.append(f"| {k} | {_f(before[k], fmt)} | {_f(after[k], fmt)} |")
    ext = out / "tokenizer" / "extension.json"
    if ext.is_file():
        tokens = json.loads(ext.read_text(encoding="utf-8")).get("tokens", [])
        by_origin: dict[str, int] = {}
        for t in tokens:
            by_origin[t.get("origin", "?")] = by_origin.get(t.get("origin", "?"), 0) + 1
        lines += ["", "Added tokens by origin: " + ", ".join(f"{k} {v}" for k, v in sorted(by_origin.items()))]
    return lines + [""]


def step_hashes(out: Path) -> dict[str, str]:
    """Config hash of every step folder (anything with a manifest) under ``out``."""
    hashes = {}
    for m in sorted(out.rglob("manifest.json")):
        folder = m.parent
        rel = folder.relative_to(out)
        if any(part.startswith(".") or part in ("checkpoints", "hf", "model") for part in rel.parts):
            continue
        try:
            hashes[str(rel)] = read_manifest(folder)["config_hash"]
        except Exception:  # a stage-specific manifest (e.g. inside a fine-tuning seed folder)
            continue
    return hashes


def write_report(cfg: Any, out: Path, models: dict[str, Path], finetune_dir: Path, command: str | None = None) -> Path:
    from cmedbert.finetune.table import aggregate, read_results, render

    rows = read_results([finetune_dir / "results.jsonl"])
    shutil.copyfile(finetune_dir / "results.jsonl", out / "results.jsonl")
    table_md, table_csv = render(rows)
    atomic_write_text(out / "scores.csv", table_csv)
    scores = aggregate(rows)
    plot_task_scores(scores, out / "scores.png")

    curves = {}
    for arm, model_dir in models.items():
        mpath = model_dir.parent / "metrics.jsonl"
        if mpath.is_file():
            metrics = read_jsonl(mpath)
            curves[arm] = {"train": loss_curve(metrics, "train"), "valid": loss_curve(metrics, "valid")}
    plot_loss_curves(curves, out / "loss.png")
    summary = pretrain_summary(models)
    hashes = step_hashes(out)
    atomic_write_text(out / "runs.json", json.dumps(hashes, indent=2) + "\n")

    ft_manifest = read_manifest(finetune_dir, stage="finetune")
    ft_cfg = ft_manifest["config"]
    command = command or "cmedbert " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    avg = {ck: sum(sum(v) / len(v) for v in per.values()) / len(per) for ck, per in scores.items()}
    best = max(avg, key=avg.get)
    lines = [
        "# cmedbert comparison: scratch vs continual pretraining", "",
        f"Reproduce: `{command}`", "",
        "## Setup", "",
        f"- Pretraining budget per arm: {cfg.train_tokens:,} tokens (sequence positions), seq_len {cfg.seq_len}.",
        f"- Arms: " + "; ".join(f"**{a.name}** (init={a.init}, vocab={a.vocab})" for a in cfg.arms) + ".",
        f"- Base: {cfg.general.init_from or 'a tiny general model pretrained here on ' + str(cfg.general.corpus)}.",
        f"- Fine-tuning: tasks {', '.join(ft_cfg['tasks'])}; seeds {ft_cfg['seeds']}; dev scores with the official metrics.",
        "",
        "## Fine-tuning (dev, official metric, %)", "", table_md,
        f"Highest CBLUE average: **{best}** ({100 * avg[best]:.2f}). Differences smaller than the seed std are noise.",
        "", "![task scores](scores.png)", "",
        "## Pretraining", "",
        "| arm | init | steps | tokens seen | first loss | last loss | valid loss | valid MLM acc | tokens/s | config |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in summary:
        lines.append(f"| {r['arm']} | {r['init']} | {_f(r['steps'], '{}')} | {_f(r['tokens_seen'], '{:,}')} | {_f(r['first_loss'])} | "
                     f"{_f(r['last_loss'])} | {_f(r['valid_loss'])} | {_f(r['valid_acc'])} | {_f(r['tok_s'], '{:.0f}')} | "
                     f"{_f(r['config_hash'], '`{}`')} |")
    lines += ["", "Losses of arms with different vocabularies are not directly comparable (different prediction targets).",
              "", "![MLM loss against tokens seen](loss.png)", ""]
    lines += _audit_lines(out)
    lines += ["## Steps and config hashes", "", "| step folder | config hash |", "|---|---|"]
    lines += [f"| {k} | `{v}` |" for k, v in hashes.items()]
    report = out / "report.md"
    atomic_write_text(report, "\n".join(lines) + "\n")
    return report
