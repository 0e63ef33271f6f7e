"""The comparison report from hand-made fine-tuning outputs: pairwise paired-bootstrap table and
comparisons.jsonl, words for what is significant, intrinsic checks per arm, honest task-data
labels, and a one-seed report (n=1, no error bars)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from cmedbert.artifact import write_manifest
from cmedbert.compare import write_report
from cmedbert.experiment import load
from cmedbert.finetune.predictions import FILE_NAME, write_predictions
from cmedbert.finetune.tasks import QIC_LABELS, get_task

KEYS = ["a", "b", "task", "metric", "delta", "ci_low", "ci_high", "p", "n_examples", "n_seeds"]


def _run_folder(root, arm, mask_acc=None):
    """A pretraining run folder as compare reads it: manifest, metrics.jsonl, model/."""
    run = root / "pretrain" / arm
    (run / "model").mkdir(parents=True)
    (run / "model" / "config.json").write_text("{}", encoding="utf-8")
    rows = [{"step": 1, "tokens_seen": 100, "loss": 7.0}, {"step": 2, "tokens_seen": 200, "loss": 6.0}]
    if mask_acc is not None:
        rows.append({"step": 2, "tokens_seen": 200, "split": "valid", "loss": 5.5, "mlm_acc": 0.3, "mask_acc": mask_acc,
                     "mask_acc_shuffled": 0.05, "baseline_most_frequent": 0.05, "plateau": mask_acc < 0.1})
    if arm == "untrained":  # as experiment.untrained_step writes it: no training, no metrics
        write_manifest(run, stage="untrained", config={"init": "scratch"}, counts={"steps": 0, "tokens_seen": 0})
        return run / "model"
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    write_manifest(run, stage="pretrain", config={"init": "scratch"}, counts={"steps": 2, "tokens_seen": 200})
    return run / "model"


def _finetune(out, arms_skill, seeds, official):
    """results.jsonl + predictions of every (arm, task, seed): arm skill = chance of a right answer."""
    ft = out / "finetune"
    rng = random.Random(0)
    gold_qic = [{"id": f"s{i}", "query": f"q{i}", "label": rng.choice(QIC_LABELS)} for i in range(300)]
    gold_ee = [{"text": f"{i}患者发热", "entities": [{"start_idx": len(str(i)) + 2, "end_idx": len(str(i)) + 3,
                                                   "type": "sym", "entity": "发热"}]} for i in range(80)]
    rows = []
    for arm, skill in arms_skill.items():
        for seed in seeds:
            r = random.Random(f"{arm}-{seed}")
            for task, gold in (("KUAKE-QIC", gold_qic), ("CMeEE", gold_ee)):
                spec = get_task(task)
                if task == "KUAKE-QIC":
                    pred = [dict(g, label=g["label"] if r.random() < skill else QIC_LABELS[(QIC_LABELS.index(g["label"]) + 1) % 11])
                            for g in gold]
                else:
                    pred = [dict(g, entities=g["entities"] if r.random() < skill else []) for g in gold]
                folder = ft / arm / task / f"seed_{seed}"
                folder.mkdir(parents=True)
                write_predictions(folder / FILE_NAME, spec, gold, pred)
                from cmedbert.finetune.metrics import score

                value = score(task, gold, pred)["value"]
                rows.append(dict(checkpoint=arm, task=task, seed=seed, split="dev", metric=spec.metric, value=value,
                                 config_hash="h", data={"files": {f"{task}_dev.json": "ab" * 32},
                                                        "official": official[task]},
                                 predictions=f"{arm}/{task}/seed_{seed}/{FILE_NAME}"))
    (ft / "results.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    write_manifest(ft, stage="finetune", config={"tasks": ["KUAKE-QIC", "CMeEE"], "seeds": seeds})
    return ft


def _experiment(tmp_path, arms):
    p = tmp_path / "e.toml"
    p.write_text('medical_corpus = "m"\nbootstrap_resamples = 2000\n[general]\ncorpus = "g"\n'
                 + "".join(f'[[arms]]\nname = "{a}"\ninit = "{"untrained" if a == "untrained" else "continual"}"\n' for a in arms),
                 encoding="utf-8")
    return load(p)


@pytest.mark.parametrize("seeds", [[1], [1, 2, 3]])
def test_report_compares_every_pair_with_a_paired_bootstrap(tmp_path, seeds):
    out = tmp_path / "out"
    arms = {"untrained": 0.3, "continual": 0.9, "same": 0.9}
    models = {"untrained": _run_folder(out, "untrained"), "continual": _run_folder(out, "continual", mask_acc=0.4),
              "same": _run_folder(out, "same", mask_acc=0.06)}
    ft = _finetune(out, arms, seeds, official={"KUAKE-QIC": True, "CMeEE": False})
    report = write_report(_experiment(tmp_path, list(arms)), out, models, ft, command="cmedbert compare e.toml").read_text()

    comps = [json.loads(x) for x in (out / "comparisons.jsonl").read_text().splitlines()]
    assert all(list(c) == KEYS for c in comps)
    assert len(comps) == 3 * 2  # 3 pairs x 2 tasks, b = the arm listed earlier
    by = {(c["a"], c["b"], c["task"]): c for c in comps}
    qic = by[("continual", "untrained", "KUAKE-QIC")]
    assert qic["ci_low"] > 0 and qic["p"] < 0.01 and qic["n_examples"] == 300 and qic["n_seeds"] == len(seeds)
    assert by[("continual", "untrained", "CMeEE")]["ci_low"] > 0
    assert by[("continual", "untrained", "CMeEE")]["n_examples"] == 80

    assert "Pairwise comparisons (paired bootstrap)" in report and "| continual | untrained | KUAKE-QIC | accuracy |" in report
    assert "KUAKE-QIC: **continual** is better than untrained" in report
    assert "differences are significant" in report
    assert "seed std are noise" not in report
    # intrinsic checks: recorded [MASK] accuracy, the baseline, the plateau flag; "not measured" for the untrained arm
    assert "## Intrinsic checks" in report and "| continual | the run's own held-out split | 0.300 | 0.400 | 0.050 | 0.050 | 8.0x | yes |" in report
    assert "| same | the run's own held-out split | 0.300 | 0.060 |" in report and "still on the unigram plateau" in report
    assert "| untrained | – | – | – | – | – | – | not measured |" in report
    # honest labels: one task is the official data, the other is not -> no "CBLUE" in front of the table
    assert "- CBLUE KUAKE-QIC; KUAKE-QIC_dev.json sha256 abababababab…." in report
    assert "- CMeEE (CBLUE-format data, not the official CBLUE files)" in report
    assert "CBLUE avg" not in report and "task avg" in report
    table = [line for line in report.splitlines() if line.startswith("| continual |")][0]
    if seeds == [1]:
        assert "n=1" in report and "±" not in table and "One fine-tuning seed (n=1)" in report
    else:
        assert "±" in table and "n=3" in report


def test_report_says_cblue_only_for_official_files(tmp_path):
    out = tmp_path / "out"
    models = {"untrained": _run_folder(out, "untrained"), "continual": _run_folder(out, "continual")}
    ft = _finetune(out, {"untrained": 0.5, "continual": 0.5}, [1], official={"KUAKE-QIC": True, "CMeEE": True})
    report = write_report(_experiment(tmp_path, list(models)), out, models, ft, command="x").read_text()
    assert "CBLUE avg" in report and "Fine-tuning: CBLUE tasks" in report


def test_results_without_predictions_are_a_clear_error(tmp_path):
    from cmedbert.errors import CmedbertError
    from cmedbert.finetune.significance import comparisons_from_results

    rows = [dict(checkpoint="a", task="KUAKE-QIC", seed=1, split="dev", metric="accuracy", value=0.5)]
    with pytest.raises(CmedbertError, match="names no predictions file"):
        comparisons_from_results(rows, tmp_path)


def test_shipped_cpu_dapt_config_has_the_four_arms(repo_root):
    cfg = load(repo_root / "configs" / "experiments" / "cpu-dapt.toml")
    assert [a.name for a in cfg.arms] == ["untrained", "general", "continual", "scratch"]
    arms = {a.name: a for a in cfg.arms}
    assert arms["general"].corpus == "general" and arms["general"].init == "continual" and arms["general"].vocab == "base"
    # same total compute: scratch gets the base's budget too
    assert arms["scratch"].train_tokens == cfg.general.train_tokens + cfg.train_tokens
    tasks = cfg.finetune["tasks"]
    assert {"KUAKE-QIC", "CMeEE"} <= set(tasks) and len(tasks) >= 3 and len(cfg.finetune["seeds"]) >= 3
    assert "max_eval_samples" not in cfg.finetune and cfg.bootstrap_resamples >= 2000
    for name in ("cpu-mini.toml", "cpu-dapt.toml"):
        assert "max_eval_samples" not in (repo_root / "configs" / "experiments" / name).read_text()


def test_a_general_arm_needs_the_base_vocab_and_a_general_corpus(tmp_path):
    from cmedbert.config import ConfigError

    p = tmp_path / "e.toml"
    p.write_text('medical_corpus = "m"\n[general]\ncorpus = "g"\n[[arms]]\nname = "g"\ninit = "continual"\n'
                 'vocab = "extended"\ncorpus = "general"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="vocab='base'"):
        load(p)
    p.write_text('medical_corpus = "m"\n[general]\ninit_from = "x"\n[[arms]]\nname = "g"\ninit = "continual"\n'
                 'vocab = "base"\ncorpus = "general"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="general.corpus"):
        load(p)


def test_budget_points_are_plotted_with_intervals(tmp_path):
    from cmedbert.experiment import budget_steps

    assert budget_steps([0.25, 0.5], 1000) == {0.25: 250, 0.5: 500}
    assert budget_steps([0.001], 10) == {0.001: 1}  # never step 0
    out = tmp_path / "out"
    models = {"untrained": _run_folder(out, "untrained"), "continual": _run_folder(out, "continual")}
    ft = _finetune(out, {"untrained": 0.3, "continual": 0.9}, [1, 2], official={"KUAKE-QIC": True, "CMeEE": True})
    budget_dir = _finetune(tmp_path / "b", {"continual@50%": 0.6}, [1, 2], official={"KUAKE-QIC": True, "CMeEE": True})
    points = {"continual@50%": {"arm": "continual", "fraction": 0.5, "step": 1, "tokens": 100}}
    report = write_report(_experiment(tmp_path, list(models)), out, models, ft, command="x",
                          budget=(budget_dir, points)).read_text()
    assert "## Score against pretraining budget" in report and (out / "budget.png").stat().st_size > 1000
    rows = [line for line in report.splitlines() if line.startswith("| continual | ") and "KUAKE-QIC" in line
            and "%" in line]
    assert [r.split(" | ")[1:3] for r in rows] == [["50%", "100"], ["100%", "200"]]  # tokens from the run
    assert any(line.startswith("| untrained | 100% | 0 | KUAKE-QIC |") for line in report.splitlines())


def test_a_general_arm_continues_the_base_on_the_general_corpus(tmp_path, monkeypatch):
    """Wiring of the control arm: same base model as continual, general text packed with the base vocab."""
    from cmedbert import experiment

    p = tmp_path / "e.toml"
    p.write_text('medical_corpus = "m"\ntrain_tokens = 1000\n[general]\ncorpus = "g"\n'
                 '[[arms]]\nname = "general"\ninit = "continual"\nvocab = "base"\ncorpus = "general"\n'
                 '[[arms]]\nname = "continual"\ninit = "continual"\nvocab = "extended"\n'
                 '[[arms]]\nname = "scratch"\ninit = "scratch"\nvocab = "in_domain"\ntrain_tokens = 2000\n', encoding="utf-8")
    cfg = load(p)
    monkeypatch.setattr(experiment, "plan_general_packed",
                        lambda cfg, out, tok, init: (tmp_path / f"general-packed-with-{tok.name}", []))
    toks = {v: tmp_path / f"tok-{v}" for v in ("base", "extended", "in_domain")}
    packed = {v: tmp_path / f"medical-{v}" for v in toks}
    _, steps = experiment.plan_arms(cfg, tmp_path / "out", "BASE", toks, packed)
    calls = [(s.name.removeprefix("pretrain "), s.cfg.init, Path(s.cfg.tokenizer).name, Path(s.cfg.data.path).name,
              s.cfg.init_from, s.cfg.train.train_tokens) for s in steps]
    assert calls == [("general", "continual", "tok-base", "general-packed-with-tok-base", "BASE", 1000),
                     ("continual", "continual", "tok-extended", "medical-extended", "BASE", 1000),
                     ("scratch", "scratch", "tok-in_domain", "medical-in_domain", None, 2000)]


def test_intrinsic_table_shows_the_ratio_to_the_baseline_and_the_plateau_verdict():
    from cmedbert.report import intrinsic_table

    rows = [{"arm": "continual", "source": "medical", "mlm_acc": 0.2, "mask_acc": 0.093, "mask_acc_shuffled": 0.023,
             "baseline_most_frequent": 0.027, "plateau": False},
            {"arm": "base", "mask_acc": 0.077, "mask_acc_shuffled": 0.031, "baseline_most_frequent": 0.053, "plateau": True},
            {"arm": "untrained"}]
    lines = intrinsic_table(rows)
    assert "| 3.4x | yes |" in lines[2]
    assert "| 1.5x | **no: still on the unigram plateau** |" in lines[3]
    assert lines[4].endswith("| – | not measured |")


def test_plateau_end_is_the_first_evaluation_from_which_the_run_stays_off_the_plateau():
    from cmedbert.compare import plateau_end, plateau_lines

    pts = [(100, 0.049, 0.049, 0.029),   # above the baseline from position alone: plateau
           (200, 0.080, 0.030, 0.029),   # off ...
           (300, 0.050, 0.048, 0.029),   # ... back on
           (400, 0.090, 0.025, 0.029), (500, 0.095, 0.024, 0.029)]
    assert plateau_end(pts) == 400
    assert plateau_end(pts[:1]) is None
    lines = plateau_lines({"scratch": (400, 500), "untrained": (None, None), "base": (None, 300)})
    assert "- scratch: off the plateau from 400 tokens on (of 500)" in lines
    assert "- base: never clearly off the plateau within 300 tokens" in lines
    assert not any("untrained" in line for line in lines)
