"""benchmarks/gpu_smoke.sh on its CPU path (SMOKE_DEVICE=cpu): every step the GPU check runs
(demo corpus, vocab, packing, bf16 ZeRO-2 pretraining, a second precision, metrics read back,
fine-tuning on the chosen device, the last key=value line) with tiny sizes. The GPU path itself
(base preset, fp16, MFU) needs a CUDA machine."""

from __future__ import annotations

import os
import subprocess

import pytest


@pytest.mark.slow
def test_gpu_smoke_script_cpu_path_ends_with_ok(repo_root, tmp_path):
    env = dict(os.environ, SMOKE_DEVICE="cpu", SMOKE_STEPS="4", OMP_NUM_THREADS="1")
    done = subprocess.run(["bash", str(repo_root / "benchmarks" / "gpu_smoke.sh"), str(tmp_path / "work")],
                          env=env, capture_output=True, text=True, timeout=1200)
    last = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    assert done.returncode == 0, done.stderr[-4000:]
    fields = dict(kv.split("=", 1) for kv in last.split())
    assert fields["ok"] == "1" and fields["device"] == "cpu"
    assert float(fields["bf16_tok_s"]) > 0 and float(fields["fp32_tok_s"]) > 0
    assert float(fields["finetune_samples_s"]) > 0


def test_gpu_smoke_script_fails_with_ok_0_without_a_gpu(repo_root, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible here")
    done = subprocess.run(["bash", str(repo_root / "benchmarks" / "gpu_smoke.sh"), str(tmp_path / "work")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert done.stdout.strip().splitlines()[-1].startswith("ok=0 ")
    assert "no CUDA GPU" in done.stderr
