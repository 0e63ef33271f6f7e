"""benchmarks/step_profile.py on CPU with a tiny model: the trainer's named ranges show up in the
profile (the GPU per-step overhead investigation depends on them) and the last line carries the
per-step figures."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_step_profile_reports_the_trainer_ranges(repo_root, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, str(repo_root / "benchmarks" / "step_profile.py"), "--model", "tiny",
                           "--batch", "4", "--seq-len", "32", "--vocab", "200", "--skip", "2", "--steps", "3",
                           "--threads", "1", "--out", str(tmp_path / "work")],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    fields = dict(kv.split("=", 1) for kv in done.stdout.strip().splitlines()[-1].split())
    assert fields["device"] == "cpu" and fields["device_busy_ms"] == "NA"
    for part in ("step", "forward", "backward", "optimizer", "data", "stats"):
        assert float(fields[f"{part}_ms"]) >= 0.0, part  # "NA" (a missing range) fails here
    assert float(fields["forward_ms"]) > 0 and float(fields["backward_ms"]) > 0
    assert float(fields["forward_ms"]) + float(fields["backward_ms"]) <= float(fields["step_ms"]) * 1.05
    assert (tmp_path / "work" / "trace.json").stat().st_size > 0
