"""End to end: the same `cmedbert demo` entry point the README runs, on its tiniest preset."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from cmedbert.cli import main as cli_main

STAGE_FOLDERS = ["corpus", "tokenizer", "general/corpus", "general/tokenizer", "general/packed", "general/base",
                 "packed/extended", "pretrain/scratch", "pretrain/continual", "finetune"]


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "out"
    rc = cli_main(["demo", "--preset", "tiny", "--out", str(out)])
    assert rc == 0
    return out


@pytest.mark.slow
def test_every_stage_folder_has_a_manifest(demo_dir):
    for rel in STAGE_FOLDERS:
        m = json.loads((demo_dir / rel / "manifest.json").read_text(encoding="utf-8"))
        assert m["schema_version"] == 1 and m["inputs"] and m["versions"]["torch"], rel
    report = (demo_dir / "report.md").read_text(encoding="utf-8")
    assert "| scratch |" in report and "| continual |" in report and "KUAKE-QIC" in report and "CMeEE" in report
    assert (demo_dir / "loss.png").stat().st_size > 1000 and (demo_dir / "scores.png").stat().st_size > 1000


@pytest.mark.slow
def test_demo_report_uses_the_same_statistics(demo_dir):
    """The demo's report is the compare report: paired bootstrap per task, comparisons.jsonl, one
    seed said as n=1, and its built-in CBLUE-shaped tasks never called CBLUE."""
    report = (demo_dir / "report.md").read_text(encoding="utf-8")
    rows = [json.loads(l) for l in (demo_dir / "comparisons.jsonl").read_text().splitlines()]
    assert {(r["a"], r["b"], r["task"]) for r in rows} == {("continual", "scratch", t) for t in ("KUAKE-QIC", "CMeEE")}
    for r in rows:
        assert list(r) == ["a", "b", "task", "metric", "delta", "ci_low", "ci_high", "p", "n_examples", "n_seeds"]
        assert r["ci_low"] <= r["delta"] <= r["ci_high"] and 0 < r["p"] <= 1 and r["n_seeds"] == 1
    assert "Pairwise comparisons (paired bootstrap)" in report and "n=1" in report
    assert "seed std are noise" not in report
    assert "CBLUE-format data, not the official CBLUE files" in report and "CBLUE avg" not in report
    assert "## Intrinsic checks" in report
    # score against pretraining budget: the half-budget exports were fine-tuned and plotted
    assert "## Score against pretraining budget" in report and (demo_dir / "budget.png").stat().st_size > 1000
    for arm in ("scratch", "continual"):
        assert f"| {arm} | 50% |" in report and f"| {arm} | 100% |" in report
        assert any((demo_dir / "pretrain" / arm / "hf").glob("step_*/config.json"))
    seed_dir = demo_dir / "finetune" / "scratch" / "CMeEE" / "seed_0"
    assert (seed_dir / "dev_predictions.jsonl.gz").is_file()
    scores = json.loads((seed_dir / "dev_scores.json").read_text())
    assert scores["n_valid"] > 0 and scores["data"]["official"] is False


@pytest.mark.slow
def test_exported_checkpoint_reloads_with_the_same_logits(demo_dir):
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    for arm in ("scratch", "continual"):
        model_dir = demo_dir / "pretrain" / arm / "model"
        tok = AutoTokenizer.from_pretrained(model_dir)
        model = AutoModelForMaskedLM.from_pretrained(model_dir).eval()
        # The in-memory model at the end of training is the last DeepSpeed checkpoint: load its
        # fp32 weights through DeepSpeed's own converter and compare logits.
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        state = get_fp32_state_dict_from_zero_checkpoint(str(demo_dir / "pretrain" / arm / "checkpoints"))
        state = {k.removeprefix("hf."): v for k, v in state.items()}
        ref = AutoModelForMaskedLM.from_pretrained(model_dir).eval()
        ref.load_state_dict(state, strict=True)
        enc = tok(["患者有2型糖尿病，HbA1c 6.5%，服用二甲双胍0.5g。"], return_tensors="pt")
        with torch.no_grad():
            a = model(**enc).logits
            b = ref(**enc).logits
        assert a.shape[-1] >= len(tok)
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


@pytest.mark.slow
def test_pretraining_loss_went_down(demo_dir):
    for arm in ("scratch", "continual", "../general/base"):
        rows = [json.loads(l) for l in (demo_dir / "pretrain" / arm / "metrics.jsonl").read_text().splitlines()]
        train = [r["loss"] for r in rows if r.get("split", "train") == "train" and "loss" in r]
        assert len(train) >= 3 and train[-1] < train[0], (arm, train)


@pytest.mark.slow
def test_pretrain_log_names_engine_and_zero_stage(demo_dir):
    m = json.loads((demo_dir / "pretrain" / "continual" / "manifest.json").read_text())
    assert "DeepSpeed" in json.dumps(m) and "ZeRO stage 2" in json.dumps(m)


def test_demo_rerun_reuses_finished_steps(demo_dir, caplog):
    """Re-running into the same folder reuses every step (nothing is retrained)."""
    import logging

    before = (demo_dir / "pretrain" / "scratch" / "manifest.json").read_text()
    with caplog.at_level(logging.INFO, logger="cmedbert.experiment"):
        assert cli_main(["demo", "--preset", "tiny", "--out", str(demo_dir)]) == 0
    assert (demo_dir / "pretrain" / "scratch" / "manifest.json").read_text() == before
    assert sum("reusing" in r.message for r in caplog.records) >= 8


def test_bad_override_is_one_clear_error(tmp_path):
    out = tmp_path / "o"
    r = subprocess.run([sys.executable, "-m", "cmedbert", "demo", "--preset", "tiny", "--out", str(out), "nope=1"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    lines = [l for l in r.stderr.strip().splitlines() if l]
    assert lines[-1].startswith("cmedbert demo: error:") and "'nope'" in lines[-1]
    assert "Traceback" not in r.stderr
    assert not out.exists() or not any(out.iterdir())
