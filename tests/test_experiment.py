"""The experiment pipeline's step logic (reuse, staleness, interruption) and its report helpers."""

from __future__ import annotations

import json
from pathlib import Path
from dataclasses import dataclass

import pytest

from cmedbert.artifact import atomic_output, write_manifest
from cmedbert.errors import CmedbertError, ConfigError
from cmedbert.experiment import StepInterrupted, load, run_step
from cmedbert.report import loss_curve, plot_loss_curves, plot_task_scores


@dataclass
class StepCfg:
    value: int = 1
    source: str = ""


def _make(stage, inputs=()):
    calls = []

    def fn(cfg, folder):
        calls.append(cfg.value)
        with atomic_output(folder) as tmp:
            write_manifest(tmp, stage=stage, config=cfg, inputs=list(inputs))

    return fn, calls


def test_run_step_reuses_same_config_and_refuses_another(tmp_path):
    fn, calls = _make("corpus")
    run_step("x", tmp_path / "s", StepCfg(1), fn, stage="corpus")
    run_step("x", tmp_path / "s", StepCfg(1), fn, stage="corpus")
    assert calls == [1]
    with pytest.raises(CmedbertError, match="another config"):
        run_step("x", tmp_path / "s", StepCfg(2), fn, stage="corpus")


def test_run_step_refuses_a_step_whose_input_was_rebuilt(tmp_path):
    up, _ = _make("corpus")
    run_step("up", tmp_path / "up", StepCfg(1), up, stage="corpus")
    down, calls = _make("tokenizer", inputs=[tmp_path / "up"])
    run_step("down", tmp_path / "down", StepCfg(1, "up"), down, stage="tokenizer")
    # rebuild the input with another config: the downstream step is stale now
    import shutil

    shutil.rmtree(tmp_path / "up")
    run_step("up", tmp_path / "up", StepCfg(5), up, stage="corpus")
    with pytest.raises(CmedbertError, match="rebuilt since"):
        run_step("down", tmp_path / "down", StepCfg(1, "up"), down, stage="tokenizer")
    assert calls == [1]


def test_run_step_stops_the_pipeline_on_an_interrupted_step(tmp_path):
    with pytest.raises(StepInterrupted, match="step 7"):
        run_step("pretrain a", tmp_path / "r", StepCfg(), lambda c, f: {"status": "interrupted", "step": 7})


SCRATCH_ARM = '[[arms]]\nname = "s"\ninit = "scratch"\nvocab = "in_domain"\n'


@pytest.mark.parametrize("text, match", [
    ('[[arms]]\nname = "a"\ninit = "continual"\nvocab = "in_domain"\n[general]\ncorpus = "g"\n', "in-domain vocab"),
    ('[[arms]]\nname = "a"\ninit = "continual"\n', "general.corpus"),
    ('seq_len = 64\nshort_seq_len = 64\n' + SCRATCH_ARM, "short_seq_len"),
    ('short_seq_len = 32\nshort_seq_fraction = 1.0\n' + SCRATCH_ARM, "short_seq_fraction"),
])
def test_experiment_config_checks(tmp_path, text, match):
    p = tmp_path / "e.toml"
    p.write_text('medical_corpus = "m"\n' + text, encoding="utf-8")
    with pytest.raises(ConfigError, match=match):
        load(p)


def test_shipped_experiment_config_loads(repo_root):
    cfg = load(repo_root / "configs" / "experiments" / "cpu-mini.toml")
    assert {a.init for a in cfg.arms} == {"untrained", "scratch", "continual"}
    assert len(cfg.finetune["seeds"]) >= 3 and len(cfg.finetune["tasks"]) == 3
    assert cfg.path(cfg.medical_corpus).is_file() and cfg.path(cfg.general.corpus).is_file()


def test_report_plots_and_curves(tmp_path):
    rows = [{"step": 1, "tokens_seen": 10, "loss": 5.0}, {"step": 2, "tokens_seen": 20, "loss": 4.0},
            {"step": 2, "tokens_seen": 20, "split": "valid", "loss": 4.5}, {"step": 3, "tokens_seen": 30, "loss": float("nan")}]
    assert loss_curve(rows) == [(10, 5.0), (20, 4.0)] and loss_curve(rows, "valid") == [(20, 4.5)]
    plot_loss_curves({"a": {"train": loss_curve(rows), "valid": loss_curve(rows, "valid")}}, tmp_path / "l.png")
    plot_task_scores({"a": {"KUAKE-QIC": [0.5, 0.6]}, "b": {"KUAKE-QIC": [0.4]}}, tmp_path / "s.png")
    assert (tmp_path / "l.png").read_bytes()[:4] == b"\x89PNG" and (tmp_path / "s.png").stat().st_size > 1000


def test_a_collected_arm_is_used_as_is_and_summarized(tmp_path):
    from cmedbert.experiment import plan_arms
    from cmedbert.compare import pretrain_summary

    model = tmp_path / "elsewhere" / "my-model"
    model.mkdir(parents=True)
    (model / "config.json").write_text("{}", encoding="utf-8")
    p = tmp_path / "e.toml"
    p.write_text(f'medical_corpus = "m"\n[[arms]]\nname = "mine"\ninit = "continual"\nmodel = "{model}"\n',
                 encoding="utf-8")
    cfg = load(p)
    assert not cfg._needs_base()  # nothing to pretrain: no base needed
    models, steps = plan_arms(cfg, tmp_path / "out", None, {}, {})
    assert models == {"mine": model} and steps == []
    (row,) = pretrain_summary(models)
    assert row["stage"] == "collected" and row["steps"] is None
    p.write_text(f'medical_corpus = "m"\n[[arms]]\nname = "x"\ninit = "scratch"\nmodel = "{tmp_path}"\n', encoding="utf-8")
    with pytest.raises(CmedbertError, match="not a model folder"):
        plan_arms(load(p), tmp_path / "out", None, {}, {})


# ---------------------------------------------------------------------------- typed plan before any step

@pytest.mark.parametrize("override,key", [
    ("pretrain.no_such_key=1", "'pretrain.no_such_key'"),
    ("finetune.hp.epochs=abc", "'finetune.hp.epochs'"),
    ("finetune.epochs=abc", "'finetune.epochs'"),
    ("pack.seq_len=long", "'pack.seq_len'"),
    ("corpus.dedup.threshold=x", "'corpus.dedup.threshold'"),
    ("general.pretrain.optimizer.lr=fast", "'pretrain.optimizer.lr'"),
])
def test_compare_refuses_a_bad_stage_key_before_any_output(override, key, repo_root, tmp_path, capsys):
    from cmedbert.cli import main as cli_main

    out = tmp_path / "X"
    rc = cli_main(["compare", str(repo_root / "configs" / "experiments" / "cpu-mini.toml"), override, "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert err[0].startswith("cmedbert compare: error:") and key in err[0]
    assert not out.exists()


def test_plan_types_every_step_before_running(repo_root, tmp_path):
    from cmedbert.experiment import plan
    from cmedbert.finetune.config import FinetuneConfig
    from cmedbert.pretrain.config import PretrainConfig
    from cmedbert.tokenizer.pack import PackConfig

    cfg = load(repo_root / "configs" / "experiments" / "cpu-mini.toml", ["finetune.hp.epochs=2"])
    p = plan(cfg, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    names = [s.name for s in p.steps]
    assert names[:4] == ["general corpus", "general tokenizer", "general pack", "pretrain base"]
    assert names[-1] == "finetune" and {"pretrain scratch-indomain", "untrained untrained"} <= set(names)
    assert all(not isinstance(s.cfg, dict) for s in p.steps)
    by_name = p.configs()
    assert isinstance(by_name["medical/extended pack"], PackConfig)
    arm = by_name["pretrain continual-extended"]
    assert isinstance(arm, PretrainConfig) and arm.init == "continual"
    assert arm.init_from == str(tmp_path / "out" / "general" / "base" / "model")
    assert arm.data.path == str(tmp_path / "out" / "packed" / "extended")
    ft = by_name["finetune"]
    assert isinstance(ft, FinetuneConfig) and ft.hp.epochs == 2.0
    assert ft.model_dirs()["untrained"] == tmp_path / "out" / "pretrain" / "untrained" / "model"
    # every input field names the folder of a planned step of a stage it accepts (or something external)
    produced = {s.folder: s.stage.name for s in p.steps}
    for s in p.steps:
        for inp in s.stage.inputs:
            for path in inp.paths(s.cfg):
                by = produced.get(Path(path)) or produced.get(Path(path).parent)  # RUN/model -> RUN
                assert by in inp.stages or (inp.external and by in (None, "untrained")), (s.name, inp.key, path, by)


def test_demo_refuses_a_bad_stage_key_and_leaves_no_folder(tmp_path, capsys):
    from cmedbert.cli import main as cli_main

    out = tmp_path / "demo"
    rc = cli_main(["demo", "--preset", "tiny", "finetune.hp.lr=fast", "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "'finetune.hp.lr'" in err[0]
    assert not out.exists()


def test_cpu_dapt_plan_warms_runs_from_scratch_up_on_short_sequences(repo_root, tmp_path):
    """short_seq_len: the base and the scratch arm read a seq_len-32 pack first, then seq_len 128;
    continual runs (already past the unigram plateau) read seq_len 128 only; every pretrained arm
    has the same total compute; each pack is planned once, the short ones only where a run from scratch reads them."""
    from cmedbert.experiment import plan
    from cmedbert.pretrain.data import plan_steps

    cfg = load(repo_root / "configs" / "experiments" / "cpu-dapt.toml")
    assert [a.name for a in cfg.arms] == ["untrained", "general", "continual", "scratch"]
    p = plan(cfg, tmp_path / "out")
    by_name = p.configs()
    out = tmp_path / "out"
    packs = {n: c.seq_len for n, c in by_name.items() if n.endswith(" pack")}
    assert packs == {"general pack": 128, "general (seq_len 32) pack": 32, "medical/base pack": 128,
                     "medical/extended pack": 128, "medical/in_domain pack": 128,
                     "medical/in_domain (seq_len 32) pack": 32}
    for run, packed in (("pretrain base", out / "general" / "packed"), ("pretrain scratch", out / "packed" / "in_domain")):
        phases = by_name[run].data.phases
        assert [(ph.path, ph.fraction) for ph in phases] == [(str(packed) + "-32", 0.8), (str(packed), 0.2)]
    for run, packed in (("pretrain continual", out / "packed" / "extended"), ("pretrain general", out / "general" / "packed")):
        assert by_name[run].data.path == str(packed) and not by_name[run].data.phases

    def tokens(run: str) -> int:
        c = by_name[run]
        lens = [32, 128] if c.data.phases else [128]
        fr = [ph.fraction for ph in c.data.phases] or [1.0]
        return plan_steps(c, lens) * c.batch.global_batch * sum(f * L for f, L in zip(fr, lens))

    base = tokens("pretrain base")
    assert abs(tokens("pretrain scratch") - (base + tokens("pretrain continual"))) / tokens("pretrain scratch") < 0.01
    assert tokens("pretrain general") == tokens("pretrain continual")


def test_tokens_at_step_counts_each_phase_at_its_own_length():
    from cmedbert.experiment import tokens_at_step

    manifest = {"counts": {"steps": 100, "tokens_seen": 75 * 4096 + 25 * 16384},
                "config": {"data": {"path": None, "phases": [{"path": "p32", "fraction": 0.75},
                                                             {"path": "p128", "fraction": 0.25}]}},
                "pretrain": {"tokens_per_step": {"0": 4096, "1": 16384}}}
    assert tokens_at_step(manifest, 50) == 50 * 4096
    assert tokens_at_step(manifest, 80) == 75 * 4096 + 5 * 16384
    assert tokens_at_step(manifest, 100) == manifest["counts"]["tokens_seen"]
    single = {"counts": {"steps": 10, "tokens_seen": 1000}, "config": {"data": {"path": "p", "phases": []}},
              "pretrain": {"tokens_per_step": {"0": 100}}}
    assert tokens_at_step(single, 4) == 400
