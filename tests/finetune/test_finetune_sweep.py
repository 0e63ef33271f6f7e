"""The sweep runner: concurrent workers give the rows of a one-by-one run, a killed sweep resumes
with only the missing jobs, a failing job does not take the others down; the fit loop's device
choice and reproducibility."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cmedbert.config import load_config
from cmedbert.errors import CmedbertError
from cmedbert.finetune.config import FinetuneConfig
from cmedbert.finetune.sweep import RESULTS, SweepFailed, append_rows, main, plan_jobs, read_rows
from finetune_fixtures import make_tiny_checkpoint, subset_task

TASKS = ("KUAKE-QIC", "KUAKE-QQR")
QUICK = ["hp.epochs=2", "hp.batch_size=8", "hp.max_len=32", "hp.patience=0", "hp.lr=1e-3", "num_threads=1",
         "device=cpu"]


@pytest.fixture(scope="module")
def sweep_inputs(shared_data, tmp_path_factory):
    """Two tiny checkpoints (different random weights) and two small task folders."""
    root = tmp_path_factory.mktemp("sweep")
    ckpts = [make_tiny_checkpoint(shared_data / "vocab" / "bert-base-chinese", root / f"ck{i}", hidden=16, seed=i)
             for i in range(2)]
    data = root / "cblue"
    for task in TASKS:
        subset_task(shared_data / "cblue", data, task, {"train": 48, "dev": 16, "test": 8})
    return ckpts, data


def _overrides(sweep_inputs, *extra: str) -> list[str]:
    ckpts, data = sweep_inputs
    return [f"models={{a='{ckpts[0]}', b='{ckpts[1]}'}}", f"tasks={list(TASKS)}", "seeds=[1, 2]",
            f"data_dir='{data}'", *QUICK, *extra]


def _cfg(sweep_inputs, *extra: str) -> FinetuneConfig:
    return load_config(FinetuneConfig, None, _overrides(sweep_inputs, *extra))


def _rows(out: Path) -> list[str]:
    return sorted(json.dumps(r, sort_keys=True) for r in read_rows(out / RESULTS))


def _predictions(out: Path) -> dict[str, str]:
    files = sorted([*out.rglob("*_dev_pred.json"), *out.rglob("*_test.json")])
    return {str(p.relative_to(out)): p.read_text(encoding="utf-8") for p in files}


def test_two_cpu_workers_give_exactly_the_rows_of_running_jobs_one_by_one(sweep_inputs, tmp_path):
    cfg = _cfg(sweep_inputs)
    jobs = plan_jobs(cfg)
    assert len(jobs) == 8  # 2 checkpoints x 2 tasks x 2 seeds
    one_by_one = tmp_path / "one_by_one"
    for job in jobs:  # as SLURM array tasks run them: one job per invocation
        summary = main(cfg, one_by_one, job_index=job.index)
        assert summary["ran"] == [job.index]
    assert summary["complete"] and (one_by_one / "manifest.json").is_file()

    pooled = tmp_path / "pooled"
    summary = main(_cfg(sweep_inputs, "workers=2"), pooled)
    assert sorted(summary["ran"]) == list(range(8)) and summary["complete"]
    assert len(_rows(pooled)) == 8 * 1  # accuracy only (classification tasks)
    assert _rows(pooled) == _rows(one_by_one)
    assert _predictions(pooled) == _predictions(one_by_one)  # dev and test predictions, bit for bit
    assert len(_predictions(pooled)) == 16


def _primary_done(out: Path) -> int:
    path = out / RESULTS
    return len(read_rows(path)) if path.is_file() else 0


def test_a_sweep_killed_half_way_completes_only_the_missing_jobs(sweep_inputs, tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "cmedbert", "finetune", *_overrides(sweep_inputs, "workers=2", "hp.epochs=4"),
           "--out", str(out)]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 300
        while _primary_done(out) < 2:
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
            assert time.time() < deadline, "no job finished in time"
            time.sleep(0.1)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the sweep and its workers, no chance to clean up
        proc.wait()
    before = {(r["checkpoint"], r["task"], r["seed"]) for r in read_rows(out / RESULTS)}
    assert 2 <= len(before) < 8, before
    assert not (out / "manifest.json").exists()

    cfg = _cfg(sweep_inputs, "hp.epochs=4")
    jobs = plan_jobs(cfg)
    summary = main(cfg, out)
    ran = {(jobs[i].checkpoint, jobs[i].task, jobs[i].seed) for i in summary["ran"]}
    assert ran == {(j.checkpoint, j.task, j.seed) for j in jobs} - before  # only the missing ones
    assert len(summary["skipped"]) == len(before)
    keys = [(r["checkpoint"], r["task"], r["seed"]) for r in read_rows(out / RESULTS)]
    assert sorted(keys) == sorted(set(keys)) and len(keys) == 8  # every job once
    assert summary["complete"] and (out / "manifest.json").is_file()
    assert not list(out.rglob(".seed_*.tmp-*"))  # the killed jobs' half-built folders are gone
    assert main(cfg, out)["ran"] == []  # a complete sweep: nothing left to run


def test_a_failing_job_is_named_and_the_others_are_kept(sweep_inputs, tmp_path):
    ckpts, _ = sweep_inputs
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((ckpts[0] / "config.json").read_text())  # no weights, no tokenizer
    cfg = load_config(FinetuneConfig, None, [f"models={{good='{ckpts[0]}', bad='{broken}'}}", "tasks=['KUAKE-QIC']",
                                             "seeds=[1]", f"data_dir='{sweep_inputs[1]}'", *QUICK, "workers=2"])
    out = tmp_path / "out"
    with pytest.raises(SweepFailed, match=r"1 of 2 fine-tuning jobs failed: job 1 \(bad KUAKE-QIC seed 1\)") as err:
        main(cfg, out)
    assert err.value.summary["ran"] == [0]
    assert [r["checkpoint"] for r in read_rows(out / RESULTS)] == ["good"]
    assert not (out / "manifest.json").exists()
    # repaired, the same command runs only the failed job
    shutil.rmtree(broken)
    shutil.copytree(ckpts[1], broken)
    summary = main(cfg, out)
    assert summary["ran"] == [1] and summary["skipped"] == [0] and summary["complete"]


def test_the_cli_exits_non_zero_naming_the_failed_job(sweep_inputs, tmp_path, capsys):
    from cmedbert.cli import main as cli_main

    cfg = [f"models={{bad='{tmp_path}'}}", "tasks=['KUAKE-QIC']", "seeds=[1]", f"data_dir='{sweep_inputs[1]}'", *QUICK]
    (tmp_path / "config.json").write_text("{}")
    rc = cli_main(["finetune", *cfg, "--out", str(tmp_path / "out")])
    assert rc != 0
    assert "job 0 (bad KUAKE-QIC seed 1)" in capsys.readouterr().err


def test_an_output_folder_of_another_sweep_is_refused(sweep_inputs, tmp_path):
    out = tmp_path / "out"
    main(_cfg(sweep_inputs, "seeds=[1]", "tasks=['KUAKE-QIC']", "models=['" + str(sweep_inputs[0][0]) + "']"), out)
    with pytest.raises(CmedbertError, match="holds another fine-tuning sweep"):
        main(_cfg(sweep_inputs, "seeds=[1]", "tasks=['KUAKE-QIC']", "models=['" + str(sweep_inputs[0][0]) + "']",
                  "hp.lr=5e-4"), out)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(CmedbertError, match="not a fine-tuning sweep folder"):
        main(_cfg(sweep_inputs), other)


def test_rows_are_appended_whole_and_a_torn_line_is_skipped(tmp_path):
    path = tmp_path / "results.jsonl"
    append_rows(path, [{"a": 1}, {"a": 2}])
    with open(path, "a") as fh:
        fh.write('{"a": 3, "torn')  # a writer killed mid-line
    assert read_rows(path) == [{"a": 1}, {"a": 2}]
    append_rows(path, [{"a": 4}])
    assert [r["a"] for r in read_rows(path)] == [1, 2, 4]


# ------------------------------------------------------------------------- device, precision, batching

def test_device_defaults_to_auto_and_auto_picks_cpu_without_a_gpu(monkeypatch):
    import torch

    from cmedbert.finetune.train import make_accelerator, resolve_device, resolve_precision

    assert FinetuneConfig(models=["x"]).device == "auto"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu"
    assert make_accelerator("auto").device.type == "cpu"
    assert resolve_precision("auto", "cpu") == "no"  # fp32 on CPU
    with pytest.raises(CmedbertError, match="no CUDA GPU"):
        resolve_device("cuda")
    with pytest.raises(CmedbertError, match="fp16 needs a CUDA GPU"):
        resolve_precision("fp16", "cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert resolve_device("auto") == "cuda"
    assert resolve_precision("auto", "cuda") == "fp16"  # e.g. a V100 or T4: fp16 with loss scaling
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert resolve_precision("auto", "cuda") == "bf16"


def test_this_machine_runs_on_cpu_and_says_so(sweep_inputs, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible here")
    cfg = _cfg(sweep_inputs, "seeds=[1]", "tasks=['KUAKE-QIC']", "device=auto")
    main(cfg, tmp_path / "out")
    scores = json.loads(next((tmp_path / "out").rglob("dev_scores.json")).read_text())
    assert scores["device"] == "cpu" and scores["compute_dtype"] == "fp32"


def test_a_fixed_seed_reproduces_bit_for_bit_on_cpu_and_bf16_autocast_runs(sweep_inputs, tmp_path):
    base = ["seeds=[3]", "tasks=['KUAKE-QQR']", "models=['" + str(sweep_inputs[0][0]) + "']"]
    for name in ("a", "b"):
        main(_cfg(sweep_inputs, *base), tmp_path / name)
    assert _rows(tmp_path / "a") == _rows(tmp_path / "b")
    assert _predictions(tmp_path / "a") == _predictions(tmp_path / "b")
    logs = [(tmp_path / n / "ck0" / "KUAKE-QQR" / "seed_3" / "train_log.jsonl").read_text() for n in "ab"]
    losses = [[json.loads(line)["train_loss"] for line in text.splitlines()] for text in logs]
    assert losses[0] == losses[1]

    main(_cfg(sweep_inputs, *base, "precision=bf16"), tmp_path / "bf16")
    scores = json.loads(next((tmp_path / "bf16").rglob("dev_scores.json")).read_text())
    assert scores["compute_dtype"] == "bf16" and 0.0 <= scores["value"] <= 1.0


def test_length_grouped_batches_are_deterministic_cover_every_example_and_pad_less():
    import random

    import torch

    from cmedbert.finetune.train import batch_order

    rng = random.Random(0)
    lengths = [rng.randint(5, 120) for _ in range(1000)]
    a = batch_order(1000, 16, torch.Generator().manual_seed(7), lengths)
    b = batch_order(1000, 16, torch.Generator().manual_seed(7), lengths)
    c = batch_order(1000, 16, torch.Generator().manual_seed(8), lengths)
    assert a == b and a != c
    assert sorted(i for batch in a for i in batch) == list(range(1000))
    assert len(a) == 63  # ceil(1000 / 16): the steps per epoch the schedule assumes
    plain = batch_order(1000, 16, torch.Generator().manual_seed(7))

    def padded(batches):
        return sum(len(bt) * max(lengths[i] for i in bt) for bt in batches)

    assert padded(a) < 0.7 * padded(plain)


@pytest.mark.slow
def test_one_run_data_parallel_over_two_gloo_processes(sweep_inputs, tmp_path):
    """torchrun --nproc_per_node 2 on CPU: accelerate's MULTI_CPU (gloo) DDP, rank 0 writes."""
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
           "-m", "cmedbert", "finetune", *_overrides(sweep_inputs, "seeds=[1]", "tasks=['KUAKE-QIC']",
                                                     "models=['" + str(sweep_inputs[0][0]) + "']"), "--out", str(out)]
    done = subprocess.run(cmd, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr.count("data parallel over 2 processes") == 2  # both ranks in one DDP run
    rows = read_rows(out / RESULTS)
    assert len(rows) == 1 and rows[0]["checkpoint"] == "ck0"  # written once, by rank 0
    assert (out / "manifest.json").is_file() and not list(out.rglob(".seed_*.tmp-*"))
