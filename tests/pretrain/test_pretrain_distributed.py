"""Multi-process and process-level behaviour: 2 ranks under torchrun (ZeRO-2) equal 1 rank with
accumulation 2; SIGKILL + resume is exact; SIGTERM checkpoints and exits 0."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from cmedbert.config import load_config
from cmedbert.pretrain.config import PretrainConfig
from cmedbert.pretrain.testing import child_process_env, free_port, tiny_run_config, tiny_setup
from cmedbert.pretrain.train import main

torch.set_num_threads(1)
pytestmark = [pytest.mark.slow, pytest.mark.distributed]




def _losses(run_dir):
    rows = [json.loads(l) for l in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in rows if "split" not in r]


def _weights(run_dir):
    return load_file(str(Path(run_dir) / "model" / "model.safetensors"))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_setup(tmp_path_factory.mktemp("dist"), n_train=48)


def _cli(cfg_path, out, *pre):
    return [*pre, "-m", "cmedbert.cli", "pretrain", str(cfg_path), "--out", str(out)]


def test_two_ranks_zero2_equal_one_rank_accumulation2(tiny, tmp_path, repo_root):
    tok, packed = tiny
    cfg = tiny_run_config(tok, packed, max_steps=5, engine={"zero_stage": 2, "precision": "fp32"})
    p = tmp_path / "cfg.json"
    p.write_text(json.dumps(cfg))
    two = subprocess.run(_cli(p, tmp_path / "two", sys.executable, "-m", "torch.distributed.run", "--nproc_per_node",
                              "2", "--master_port", str(free_port())), env=child_process_env(), cwd=repo_root, capture_output=True,
                         text=True, timeout=240)
    assert two.returncode == 0, two.stderr[-3000:]
    assert "ZeRO stage 2, fp32, world size 2" in two.stderr
    assert "2 micro x 1 accumulation x 2 ranks" in two.stderr
    one = main(load_config(PretrainConfig, None, [], base=cfg), tmp_path / "one")
    assert one["pretrain"]["grad_accumulation"] == 2
    l2, l1 = _losses(tmp_path / "two"), _losses(tmp_path / "one")
    assert [s for s, _ in l2] == [1, 2, 3, 4, 5]
    for (s2, a), (s1, b) in zip(l2, l1):
        assert a == pytest.approx(b, rel=1e-5, abs=1e-6), (s2, a, b)
    w2, w1 = _weights(tmp_path / "two"), _weights(tmp_path / "one")
    for k in w1:
        assert torch.allclose(w1[k], w2[k], atol=1e-5), k


def test_sigkill_then_resume_is_exact(tiny, tmp_path, repo_root):
    tok, packed = tiny
    cfg = tiny_run_config(tok, packed, max_steps=120, checkpoint={"every": 3, "keep_last": 2})
    ref = main(load_config(PretrainConfig, None, [], base=cfg), tmp_path / "ref")
    p = tmp_path / "cfg.json"
    p.write_text(json.dumps(cfg))
    run = tmp_path / "killed"
    log = open(tmp_path / "killed.log", "w")
    proc = subprocess.Popen(_cli(p, run, sys.executable), env=child_process_env(), cwd=repo_root, stdout=log, stderr=log)
    latest = run / "checkpoints" / "latest"
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
        if latest.is_file() and latest.read_text().strip() not in ("", "step_3"):
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    log.close()
    assert not (run / "manifest.json").exists(), "the run finished before it could be killed"
    assert latest.is_file(), (tmp_path / "killed.log").read_text()[-3000:]
    k = int(latest.read_text().strip()[5:])
    assert 6 <= k < 120
    resumed = main(load_config(PretrainConfig, None, [], base=cfg), run)
    assert resumed["counts"]["steps"] == 120 and resumed["counts"]["tokens_seen"] == ref["counts"]["tokens_seen"]
    assert _losses(run) == _losses(tmp_path / "ref")  # the whole curve, bit for bit
    w, wr = _weights(run), _weights(tmp_path / "ref")
    assert all(torch.equal(w[n], wr[n]) for n in wr)


def test_sigterm_writes_checkpoint_and_exits_0(tiny, tmp_path, repo_root):
    tok, packed = tiny
    cfg = tiny_run_config(tok, packed, max_steps=100000, checkpoint={"every": 0})
    p = tmp_path / "cfg.json"
    p.write_text(json.dumps(cfg))
    run = tmp_path / "run"
    proc = subprocess.Popen(_cli(p, run, sys.executable), env=child_process_env(), cwd=repo_root, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    metrics = run / "metrics.jsonl"
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
        if metrics.is_file() and metrics.stat().st_size > 0:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]
    assert "interrupted at step" in out
    step = int((run / "checkpoints" / "latest").read_text().strip()[5:])
    assert step >= 1 and (run / "checkpoints" / f"step_{step}" / "cmedbert_checkpoint.json").is_file()
    assert _losses(run)[-1][0] == step
    assert not (run / "manifest.json").exists()
    # re-running resumes from that checkpoint (here extended by two steps only)
    cfg["train"]["max_steps"] = step + 2
    m = main(load_config(PretrainConfig, None, [], base=cfg), run)
    assert m["counts"]["steps"] == step + 2
    assert [s for s, _ in _losses(run)][-3:] == [step, step + 1, step + 2]


def test_impossible_batch_for_two_ranks_fails_before_any_step(tiny, tmp_path, repo_root):
    tok, packed = tiny
    cfg = tiny_run_config(tok, packed, batch={"global_batch": 4, "micro_batch": 4})  # 4 % (2 x 4) != 0
    p = tmp_path / "cfg.json"
    p.write_text(json.dumps(cfg))
    out = subprocess.run(_cli(p, tmp_path / "run", sys.executable, "-m", "torch.distributed.run", "--nproc_per_node",
                              "2", "--master_port", str(free_port())), env=child_process_env(), cwd=repo_root, capture_output=True,
                         text=True, timeout=240)
    assert out.returncode != 0
    err = out.stderr
    assert err.count("cmedbert pretrain: error: batch.global_batch=4 sequences is not divisible by world size 2") == 2
    # each rank printed one line; the only traceback is torchrun's own report of the failed children
    assert "Traceback" not in err or err.index("Traceback") > err.rindex("cmedbert pretrain: error:")
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_deepspeed_launcher_two_ranks(tiny, tmp_path, repo_root):
    tok, packed = tiny
    cfg = tiny_run_config(tok, packed, max_steps=2, engine={"zero_stage": 1, "precision": "fp32"})
    p = tmp_path / "cfg.json"
    p.write_text(json.dumps(cfg))
    launcher = Path(sys.executable).parent / "deepspeed"
    out = subprocess.run([str(launcher), "--num_gpus", "2", "--master_port", str(free_port()), "--module", "cmedbert.cli",
                          "pretrain", str(p), "--out", str(tmp_path / "run")], env=child_process_env(), cwd=repo_root,
                         capture_output=True, text=True, timeout=400)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "ZeRO stage 1, fp32, world size 2" in out.stdout + out.stderr
    m = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert m["counts"]["steps"] == 2 and m["pretrain"]["world_size"] == 2
