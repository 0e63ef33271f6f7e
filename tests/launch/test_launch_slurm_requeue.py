"""The generated sbatch script, run by bash with stand-ins for srun / scontrol / scancel (no SLURM
here) around the real torchrun + trainer on one node:

1. SIGUSR1 to the batch shell (what `--signal=B:USR1@300` does before the time limit) is forwarded
   as SIGTERM to the tasks; torchrun passes it to the trainer, which writes a checkpoint and exits;
   the script then asks `scontrol requeue` and exits 0.
2. The requeued job (same script, SLURM_RESTART_COUNT=1) resumes the run folder from
   checkpoints/latest and finishes.
Also: an allocation with the wrong node count stops the job before srun.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cmedbert.cli import main as cmedbert

FAKE_SRUN = """#!/bin/bash
# one-node stand-in for srun: run the task here, its output into --output (%n = node 0)
out=/dev/stdout
while [ $# -gt 0 ]; do
  case "$1" in --output=*) out="${1#--output=}";; -*) ;; *) break;; esac
  shift
done
echo $$ > "$FAKE/srun.pid"
exec "$@" > "${out//%n/0}" 2>&1
"""
FAKE_SCONTROL = """#!/bin/bash
echo "$*" >> "$FAKE/scontrol.log"
if [ "$1 $2" = "show hostnames" ]; then echo 127.0.0.1; fi
"""
FAKE_SCANCEL = """#!/bin/bash
echo "$*" >> "$FAKE/scancel.log"
kill -TERM "$(cat "$FAKE/srun.pid")"
"""


def fake_slurm(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    fake = tmp_path / "fake-slurm"
    fake.mkdir()
    for name, text in (("srun", FAKE_SRUN), ("scontrol", FAKE_SCONTROL), ("scancel", FAKE_SCANCEL)):
        (fake / name).write_text(text)
        (fake / name).chmod(0o755)
    env = dict(os.environ, PATH=f"{fake}:{os.environ['PATH']}", FAKE=str(fake), SLURM_JOB_ID="777",
               SLURM_NNODES="1", SLURM_JOB_NODELIST="127.0.0.1", SLURM_RESTART_COUNT="0")
    env.pop("CMEDBERT_CONFIG_HASH", None)
    return fake, env


def make_script(tiny_pretrain, tmp_path, write_launch, port: int, max_steps: int) -> Path:
    cfg = write_launch(launcher="slurm", run_name="sl", pretrain_config=str(tiny_pretrain),
                       pretrain_overrides=[f"train.max_steps={max_steps}"], output_root=str(tmp_path / "runs"),
                       nnodes=1, gpus_per_node=1, master_port=port, python=sys.executable, workdir=str(tmp_path),
                       shutdown_timeout=60, env={"OMP_NUM_THREADS": "1"},
                       slurm={"signal_lead_seconds": 120, "max_requeues": 3})
    assert cmedbert(["launch", str(cfg), "--dry-run", "--write-to", str(tmp_path / "runs" / "sl.launch")]) == 0
    return tmp_path / "runs" / "sl.launch" / "job.sbatch"


def wait_for_first_step(metrics: Path, proc: subprocess.Popen, timeout: float = 150) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            pytest.fail(f"job script exited early with {proc.returncode}")
        if metrics.is_file() and any('"step"' in line for line in metrics.read_text().splitlines()):
            return
        time.sleep(0.05)
    pytest.fail("the trainer did not log a step in time")


@pytest.mark.slow
@pytest.mark.distributed
def test_usr1_checkpoints_requeues_and_the_requeued_job_resumes(tiny_pretrain, tmp_path, write_launch, free_port,
                                                                capsys):
    script = make_script(tiny_pretrain, tmp_path, write_launch, free_port, max_steps=150)
    capsys.readouterr()
    fake, env = fake_slurm(tmp_path)
    run = tmp_path / "runs" / "sl"

    # job start 1: interrupted by the time-limit signal
    with open(tmp_path / "job-r0.out", "w") as log:
        proc = subprocess.Popen(["bash", str(script)], env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for_first_step(run / "metrics.jsonl", proc)
            proc.send_signal(signal.SIGUSR1)
            rc = proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
    out = (tmp_path / "job-r0.out").read_text()
    node_log = (tmp_path / "runs" / "sl.jobs" / "777.r0" / "node-0.log").read_text()
    assert rc == 0, out + node_log[-3000:]
    assert "got SIGUSR1" in out and "requeueing job 777" in out
    assert (fake / "scancel.log").read_text().split() == ["--signal=TERM", "777"]
    assert "requeue 777" in (fake / "scontrol.log").read_text()
    first = (run / "checkpoints" / "latest").read_text().strip()
    step = int(first.removeprefix("step_"))
    assert 1 <= step < 150, first  # the SIGTERM checkpoint, written mid-run
    assert not (run / "manifest.json").exists()  # the run is not finished

    # job start 2: SLURM requeued it; the same script resumes and finishes
    env["SLURM_RESTART_COUNT"] = "1"
    done = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=150)
    node_log = (tmp_path / "runs" / "sl.jobs" / "777.r1" / "node-0.log").read_text()
    assert done.returncode == 0, done.stdout + done.stderr + node_log[-3000:]
    assert f"resumed from {run / 'checkpoints' / first}" in node_log
    assert (run / "checkpoints" / "latest").read_text().strip() == "step_150"
    assert json.loads((run / "manifest.json").read_text())["stage"] == "pretrain"
    assert (fake / "scontrol.log").read_text().count("requeue") == 1  # no second requeue
    assert (tmp_path / "runs" / "sl.jobs" / "777.r1" / "nodes.txt").read_text().strip() == "127.0.0.1"


def test_allocation_with_wrong_node_count_stops_before_srun(tiny_pretrain, tmp_path, write_launch, free_port):
    script = make_script(tiny_pretrain, tmp_path, write_launch, free_port, max_steps=2)
    fake, env = fake_slurm(tmp_path)
    env.update(SLURM_NNODES="2", SLURM_JOB_NODELIST="127.0.0.[1-2]")
    done = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert "planned for 1 nodes but the allocation has 2 (SLURM_JOB_NODELIST=127.0.0.[1-2])" in done.stderr
    assert not (fake / "srun.pid").exists() and not (tmp_path / "runs" / "sl").exists()
