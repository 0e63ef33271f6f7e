"""``cmedbert compare CONFIG --out DIR``: scratch vs continual at the same token budget.

Plans every step of :mod:`cmedbert.experiment` with fully typed stage configs (a wrong key or type
fails before ``DIR`` exists), runs or reuses them, and writes the report:
``report.md`` (fine-tuning table mean ± std and task average, pairwise paired-bootstrap
comparisons in a table and in words, intrinsic checks of every encoder, which task data was
scored and whether it is the official CBLUE release, pretraining summary, vocab audit),
``comparisons.jsonl`` (one row per (a, b, task): ``a b task metric delta ci_low ci_high p
n_examples n_seeds``), ``loss.png`` (MLM loss against tokens seen, every run), ``scores.png``
(task scores; error bars only with several seeds), ``results.jsonl`` and ``runs.json`` (the
config hash of every step).
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cmedbert.artifact import atomic_write_text, read_jsonl, read_manifest
from cmedbert.report import context_curve, loss_curve, plot_context_curves, plot_loss_curves, plot_task_scores


def register(sub: argparse._SubParsersAction) -> None:
    from cmedbert.cliargs import add_config_args

    p = sub.add_parser("compare", help="scratch vs continual pretraining at equal tokens, fine-tuned on CBLUE; report",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(p)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from cmedbert import experiment
    from cmedbert.cliargs import split_config_args
    from cmedbert.errors import ConfigError

    path, overrides = split_config_args(args.args)
    if path is None:
        raise ConfigError("compare needs an experiment config file (see configs/experiments/)")
    cfg = experiment.load(path, overrides)
    plan = experiment.plan(cfg, args.out)  # every typed stage config: a bad key fails before --out exists
    try:
        report = main(cfg, args.out, plan)
    except experiment.StepInterrupted as exc:  # exit 0 like pretrain: a preempted job can requeue
        print(f"cmedbert compare: stopped: {exc}")
        return 0
    print(f"report: {report}")
    return 0


def main(cfg: Any, out: str | Path, plan: Any = None) -> Path:
    """Run (or reuse) every step of the experiment (:func:`cmedbert.experiment.main`), then write
    the report; returns the path of report.md. The experiment never imports this module."""
    from cmedbert import experiment

    out = Path(out).absolute()
    done = experiment.main(cfg, out, plan)
    return write_report(cfg, out, done.models, done.finetune.folder, budget=done.budget)


# ---------------------------------------------------------------------------- report

def pretrain_summary(models: dict[str, Path], metrics: dict[str, list[dict[str, Any]]] | None = None
                     ) -> list[dict[str, Any]]:
    """One row per arm from its run manifest and metrics.jsonl (``metrics``: the rows already read
    by ``run_metrics``, so the report reads every metrics.jsonl once)."""
    rows = []
    for arm, model_dir in models.items():
        run = model_dir.parent
        if not (run / "manifest.json").is_file():  # a collected checkpoint that is not a cmedbert run
            rows.append({"arm": arm, "stage": "collected", "init": f"collected ({model_dir})", "steps": None,
                         "tokens_seen": None, "first_loss": None, "last_loss": None, "valid_loss": None,
                         "valid_acc": None, "tok_s": None, "config_hash": None})
            continue
        manifest = json.loads((run / "manifest.json").read_text(encoding="utf-8"))
        if metrics is not None:
            logged = metrics.get(arm, [])
        else:
            logged = read_jsonl(run / "metrics.jsonl") if (run / "metrics.jsonl").is_file() else []
        train = [r for r in logged if r.get("split", "train") == "train" and "loss" in r]
        valid = [r for r in logged if r.get("split") == "valid"]
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


def _recorded_context_check(model_dir: Path) -> dict[str, Any] | None:
    """The [MASK]-only context check a pretraining run recorded (manifest ``eval`` or the last
    eval row of metrics.jsonl carrying ``mask_acc``), or None."""
    run = model_dir.parent
    if (run / "manifest.json").is_file():
        ev = json.loads((run / "manifest.json").read_text(encoding="utf-8")).get("eval")
        if isinstance(ev, dict) and "mask_acc" in ev:
            return ev
    if (run / "metrics.jsonl").is_file():
        rows = [r for r in read_jsonl(run / "metrics.jsonl") if r.get("split") == "valid" and "mask_acc" in r]
        if rows:
            return rows[-1]
    return None


def evaluate_context(model_dir: Path, packed_dir: Path, max_sequences: int = 512) -> dict[str, Any] | None:
    """Hook: the context check of a model folder on a packed held-out split, through
    ``cmedbert.pretrain.evaluate.evaluate_export`` where the pretrain stage provides it (None
    where it does not, or where the model cannot be scored on that data)."""
    try:
        from cmedbert.pretrain.evaluate import evaluate_export
    except ImportError:
        return None
    from cmedbert.errors import CmedbertError

    try:
        return evaluate_export(model_dir, packed_dir, max_sequences=max_sequences)
    except (CmedbertError, OSError, ValueError) as exc:
        import logging

        logging.getLogger("cmedbert.compare").warning("context check of %s on %s failed: %s", model_dir, packed_dir, exc)
        return None


def intrinsic_checks(cfg: Any, out: Path, models: dict[str, Path], summary: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per arm: held-out MLM accuracy (the run's own eval), and [MASK]-only accuracy in real
    and shuffled context against the most-frequent-token baseline, measured on the same medical
    held-out text for every arm (the packed medical split of the arm's vocab) where possible, else
    as the run recorded it."""
    vocab = {a.name: a.vocab for a in getattr(cfg, "arms", [])}
    rows = []
    for s in summary:
        arm = s["arm"]
        row: dict[str, Any] = {"arm": arm, "mlm_acc": s.get("valid_acc"), "source": None}
        packed = out / "packed" / vocab.get(arm, "")
        ev = evaluate_context(models[arm], packed) if arm in vocab and (packed / "manifest.json").is_file() else None
        if ev is not None:
            row["source"] = f"medical held-out text (packed/{vocab[arm]}, valid)"
        else:
            ev = _recorded_context_check(models[arm])
            row["source"] = "the run's own held-out split" if ev is not None else None
        for k in ("mask_acc", "mask_acc_shuffled", "baseline_most_frequent", "plateau"):
            row[k] = (ev or {}).get(k)
        rows.append(row)
    return rows


def task_data_lines(rows: list[dict[str, Any]]) -> tuple[list[str], bool]:
    """Which task data every task was scored on, and whether it is all the official CBLUE files."""
    from cmedbert.finetune.provenance import benchmark_label

    per_task: dict[str, dict[str, Any]] = {}
    for r in rows:
        if r.get("split") == "dev":
            per_task.setdefault(r["task"], r.get("data") or {})
    lines = []
    for task, data in per_task.items():
        files = data.get("files") or {}
        dev = next((f"{n} sha256 {h[:12]}…" for n, h in files.items() if n.endswith("_dev.json")), "")
        if not data:
            lines.append(f"- {task}: provenance not recorded (fine-tuned by an older cmedbert); not labelled CBLUE.")
        else:
            lines.append(f"- {benchmark_label(task, bool(data.get('official')))}" + (f"; {dev}" if dev else "") + ".")
    official = bool(per_task) and all((d or {}).get("official") for d in per_task.values())
    return lines, official


def write_comparisons(path: Path, comparisons: list[Any]) -> None:
    atomic_write_text(path, "".join(json.dumps(c.row()) + "\n" for c in comparisons))


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


def budget_section(cfg: Any, out: Path, summary: list[dict[str, Any]], rows: list[dict[str, Any]], finetune_dir: Path,
                   budget: tuple[Path, dict[str, Any]] | None) -> list[str]:
    """budget.png and its report lines: each arm's score (95 % interval) at its budget points, the
    final model (fraction 1.0, from the main fine-tuning) and the untrained floor at 0 tokens."""
    if budget is None:
        return []
    import numpy as np

    from cmedbert.finetune.significance import run_stats_by_checkpoint, score_interval
    from cmedbert.finetune.results import read_rows
    from cmedbert.finetune.tasks import TASKS
    from cmedbert.report import plot_budget_curves

    folder, points = budget
    n_resamples = int(getattr(cfg, "bootstrap_resamples", 2000))
    final = {}
    for arm in getattr(cfg, "arms", []):
        s = next((r for r in summary if r["arm"] == arm.name and r["tokens_seen"] is not None), None)
        if s is None:  # a collected checkpoint: its budget is unknown
            continue
        base = 0
        if arm.init == "continual" and not cfg.general.init_from and (out / "general" / "base" / "manifest.json").is_file():
            base = int(read_manifest(out / "general" / "base").get("counts", {}).get("tokens_seen", 0))
        final[arm.name] = {"arm": arm.name, "fraction": 1.0, "tokens": int(s["tokens_seen"] or 0) + base}
    by_task: dict[str, tuple[str, dict[str, list]]] = {}
    lines = ["## Score against pretraining budget", "",
             "| arm | share of budget | pretraining tokens | task | score | 95 % interval | seeds |", "|---|---|---|---|---|---|---|"]
    from cmedbert.finetune.selection import select_rows

    sources = [(run_stats_by_checkpoint(select_rows(read_rows([folder / "results.jsonl"])), folder), points),
               (run_stats_by_checkpoint(rows, finetune_dir), final)]
    budget_tasks = {t for (_, t) in sources[0][0]}
    for runs, meta in sources:
        for (ckpt, task), per_seed in sorted(runs.items()):
            if ckpt not in meta or task not in budget_tasks:
                continue
            m = meta[ckpt]
            stats = np.stack([v[1] for _, v in sorted(per_seed.items())])
            mean, lo, hi = score_interval(TASKS[task].metric, stats, n_resamples=n_resamples)
            by_task.setdefault(task, (TASKS[task].metric, {}))[1].setdefault(m["arm"], []).append((m["tokens"], mean, lo, hi))
            lines.append(f"| {m['arm']} | {m['fraction']:.0%} | {m['tokens']:,} | {task} | {100 * mean:.2f} | "
                         f"[{100 * lo:.2f}, {100 * hi:.2f}] | {len(per_seed)} |")
    plot_budget_curves(by_task, out / "budget.png")
    return lines + ["", "![score against pretraining budget](budget.png)", ""]


@dataclass
class ReportData:
    """Everything the report sections read, gathered once by :func:`write_report`."""

    cfg: Any  # cmedbert.experiment.ExperimentConfig
    out: Path
    models: dict[str, Path]
    finetune_dir: Path
    budget: tuple[Path, dict[str, Any]] | None
    command: str
    rows: list[dict[str, Any]]  # results rows (of an lr grid: the chosen lr's)
    scores: dict[str, dict[str, list[float]]]  # checkpoint -> task -> [dev value per seed]
    table_md: str
    data_lines: list[str]
    official: bool
    summary: list[dict[str, Any]]  # pretrain_summary
    comparisons: list[Any]  # finetune.significance.Comparison
    intrinsic: list[dict[str, Any]]
    hashes: dict[str, str]
    ft_cfg: dict[str, Any]
    n_resamples: int
    plateau_ends: dict[str, tuple[int | None, int | None]] = field(default_factory=dict)  # run -> (end, last tokens)


def title_section(r: ReportData) -> list[str]:
    return ["# cmedbert comparison: scratch vs continual pretraining", "", f"Reproduce: `{r.command}`", ""]


def setup_section(r: ReportData) -> list[str]:
    cfg, ft_cfg = r.cfg, r.ft_cfg
    any_official = any("- CBLUE " in line for line in r.data_lines)
    bench = ("CBLUE" if r.official else "CBLUE-format (partly the official CBLUE files)" if any_official
             else "CBLUE-format (not the official CBLUE files)")
    return [
        "## Setup", "",
        f"- Pretraining budget per arm: {cfg.train_tokens:,} tokens (sequence positions), seq_len {cfg.seq_len}.",
        "- Arms: " + "; ".join(f"**{a.name}** (init={a.init}, vocab={a.vocab}"
                               + (f", corpus={a.corpus}" if getattr(a, "corpus", "medical") != "medical" else "")
                               + (f", {a.train_tokens:,} tokens" if getattr(a, "train_tokens", None) else "") + ")"
                               for a in cfg.arms) + ".",
        f"- Base: {cfg.general.init_from or 'a tiny general model pretrained here on ' + str(cfg.general.corpus)}.",
        f"- Fine-tuning: {bench} tasks {', '.join(ft_cfg['tasks'])}; seeds {ft_cfg['seeds']} (n={len(ft_cfg['seeds'])}); "
        f"epoch / learning rate selected on a validation split carved from train; the full dev split scored with "
        f"the official metrics.",
        "",
    ]


def task_data_section(r: ReportData) -> list[str]:
    return ["## Task data", "", *r.data_lines, ""]


def finetune_section(r: ReportData) -> list[str]:
    from cmedbert.finetune import results

    avg = results.cblue_averages(r.scores)
    best = max(avg, key=avg.get)
    return [
        f"## Fine-tuning ({'CBLUE, ' if r.official else ''}dev, official metric, %)", "", r.table_md,
        *(["One fine-tuning seed (n=1): no spread over seeds is shown."] if len(r.ft_cfg["seeds"]) == 1 else []),
        f"Highest {'CBLUE' if r.official else 'task'} average: **{best}** ({100 * avg[best]:.2f}); whether the "
        f"differences are real is answered by the comparisons below, not by the averages.",
        "", "![task scores](scores.png)", "",
    ]


def pairwise_section(r: ReportData) -> list[str]:
    from cmedbert.report import pairwise_table, significance_lines

    return ["## Pairwise comparisons (paired bootstrap)", "", *significance_lines(r.comparisons, r.n_resamples), "",
            pairwise_table(r.comparisons) if r.comparisons else "", "The same numbers: `comparisons.jsonl`.", ""]


def intrinsic_section(r: ReportData) -> list[str]:
    from cmedbert.report import intrinsic_table

    return ["## Intrinsic checks: does each encoder use context?", "",
            "Accuracy of predicting held-out [MASK]ed tokens in their real context and with the rest of the sequence "
            "shuffled, against always predicting the most frequent token. An encoder whose [MASK] accuracy is not "
            "clearly above the baseline learned the unigram, not the language.", "",
            *intrinsic_table(r.intrinsic), "", *plateau_lines(r.plateau_ends),
            "![held-out [MASK] accuracy against tokens seen](context.png)", ""]


def plateau_lines(ends: dict[str, tuple[int | None, int | None]]) -> list[str]:
    """Where each run's evaluations leave the unigram plateau for good (from its metrics.jsonl)."""
    if not ends:
        return []
    lines = ["During pretraining (each run's own valid split, evaluated every `eval.every` steps):", ""]
    for name, (end, last) in sorted(ends.items()):
        if last is None:
            continue
        lines.append(f"- {name}: " + (f"off the plateau from {end:,} tokens on (of {last:,})" if end is not None
                                      else f"never clearly off the plateau within {last:,} tokens"))
    return lines + [""]


def budget_report_section(r: ReportData) -> list[str]:
    return budget_section(r.cfg, r.out, r.summary, r.rows, r.finetune_dir, r.budget)


def pretrain_section(r: ReportData) -> list[str]:
    lines = ["## Pretraining", "",
             "| arm | init | steps | tokens seen | first loss | last loss | valid loss | valid MLM acc | tokens/s | config |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for s in r.summary:
        lines.append(f"| {s['arm']} | {s['init']} | {_f(s['steps'], '{}')} | {_f(s['tokens_seen'], '{:,}')} | "
                     f"{_f(s['first_loss'])} | {_f(s['last_loss'])} | {_f(s['valid_loss'])} | {_f(s['valid_acc'])} | "
                     f"{_f(s['tok_s'], '{:.0f}')} | {_f(s['config_hash'], '`{}`')} |")
    return lines + ["", "Losses of arms with different vocabularies are not directly comparable (different prediction "
                        "targets).", "", "![MLM loss against tokens seen](loss.png)", ""]


def vocab_section(r: ReportData) -> list[str]:
    return _audit_lines(r.out)


def steps_section(r: ReportData) -> list[str]:
    return ["## Steps and config hashes", "", "| step folder | config hash |", "|---|---|"] + [
        f"| {k} | `{v}` |" for k, v in r.hashes.items()]


# The report, in order: one function per section (a new section = a function and a line here).
SECTIONS = (title_section, setup_section, task_data_section, finetune_section, pairwise_section, intrinsic_section,
            budget_report_section, pretrain_section, vocab_section, steps_section)


def gather(cfg: Any, out: Path, models: dict[str, Path], finetune_dir: Path, command: str | None = None,
           budget: tuple[Path, dict[str, Any]] | None = None) -> ReportData:
    """Read the results and runs, write the report's companion files (results.jsonl, scores.csv,
    scores.png, loss.png, comparisons.jsonl, runs.json) and return what the sections need."""
    from cmedbert.finetune import results
    from cmedbert.finetune.selection import select_rows
    from cmedbert.finetune.significance import comparisons_from_results

    rows = select_rows(results.read_rows([finetune_dir / "results.jsonl"]))  # an lr_grid: the chosen lr's rows
    shutil.copyfile(finetune_dir / "results.jsonl", out / "results.jsonl")
    data_lines, official = task_data_lines(rows)
    table_md, table_csv = results.render(rows)
    if not official:  # "CBLUE" only names the official files
        table_md = table_md.replace("CBLUE avg", "task avg")
    atomic_write_text(out / "scores.csv", table_csv)
    scores = results.aggregate(rows)
    plot_task_scores(scores, out / "scores.png")
    metrics = run_metrics(out, models)
    plot_loss_curves(run_curves(metrics), out / "loss.png")
    curves = context_curves(metrics)
    plot_context_curves(curves, out / "context.png")
    summary = pretrain_summary(models, metrics)
    n_resamples = int(getattr(cfg, "bootstrap_resamples", 2000))
    comparisons = comparisons_from_results(rows, finetune_dir, arms=list(models), n_resamples=n_resamples,
                                           seed=int(getattr(cfg, "bootstrap_seed", 0)))
    write_comparisons(out / "comparisons.jsonl", comparisons)
    intrinsic = intrinsic_checks(cfg, out, models, summary)
    hashes = step_hashes(out)
    atomic_write_text(out / "runs.json", json.dumps(hashes, indent=2) + "\n")
    return ReportData(cfg=cfg, out=out, models=models, finetune_dir=finetune_dir, budget=budget,
                      command=command or "cmedbert " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
                      rows=rows, scores=scores, table_md=table_md, data_lines=data_lines, official=official,
                      summary=summary, comparisons=comparisons, intrinsic=intrinsic, hashes=hashes,
                      plateau_ends={name: (plateau_end(pts), pts[-1][0] if pts else None) for name, pts in curves.items()},
                      ft_cfg=read_manifest(finetune_dir, stage="finetune")["config"], n_resamples=n_resamples)


BASE_RUN = "base (general text)"


def run_metrics(out: Path, models: dict[str, Path]) -> dict[str, list[dict[str, Any]]]:
    """run -> rows of its metrics.jsonl, read once, for every arm and the general base trained here."""
    runs = {arm: model_dir.parent for arm, model_dir in models.items()}
    runs[BASE_RUN] = out / "general" / "base"
    return {name: read_jsonl(run / "metrics.jsonl") for name, run in runs.items() if (run / "metrics.jsonl").is_file()}


def run_curves(metrics: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """arm -> {"train": points, "valid": points} (the arms' runs, not the base)."""
    return {name: {"train": loss_curve(rows, "train"), "valid": loss_curve(rows, "valid")}
            for name, rows in metrics.items() if name != BASE_RUN}


def context_curves(metrics: dict[str, list[dict[str, Any]]]) -> dict[str, list[tuple[int, float, float, float]]]:
    """run -> context-check points of its evaluations (every arm and the general base)."""
    return {name: context_curve(rows) for name, rows in metrics.items()}


def plateau_end(points: list[tuple[int, float, float, float]]) -> int | None:
    """Tokens seen at the first evaluation from which on every evaluation is off the unigram plateau
    (clearly above the baseline and the shuffled context), or None if the run never stays off it."""
    try:
        from cmedbert.pretrain.evaluate import on_plateau
    except ImportError:
        return None
    end = None
    for tokens, acc, shuffled, baseline in points:
        if on_plateau(acc, baseline, shuffled):
            end = None
        elif end is None:
            end = tokens
    return end


def write_report(cfg: Any, out: Path, models: dict[str, Path], finetune_dir: Path, command: str | None = None,
                 budget: tuple[Path, dict[str, Any]] | None = None) -> Path:
    """report.md (the :data:`SECTIONS` in order) and its companion files in ``out``; returns report.md."""
    data = gather(cfg, out, models, finetune_dir, command, budget)
    report = out / "report.md"
    atomic_write_text(report, "\n".join(line for section in SECTIONS for line in section(data)) + "\n")
    return report
