"""`cmedbert launch` as users run it: dry runs, and bad input that must stop before anything
starts (clear one-line error, exit 2, no launch files, no process)."""

from __future__ import annotations

import os
import re
import socket
import sys
from pathlib import Path

import pytest

from cmedbert.launch import run as launch_run
from cmedbert.cli import main as cmedbert


@pytest.fixture
def no_start(monkeypatch):
    """Fail the test if launch tries to start anything."""
    started = []
    monkeypatch.setattr(launch_run, "run_command", lambda cmd: started.append(cmd) or 0)
    monkeypatch.setattr(launch_run, "submit_slurm", lambda plan: started.append(plan) or 0)
    return started


def base_fields(pre: Path, tmp_path: Path, **extra):
    fields = dict(launcher="torchrun", run_name="r1", pretrain_config=str(pre), output_root=str(tmp_path / "runs"),
                  nodes=["127.0.0.1", "localhost"], gpus_per_node=2, python=sys.executable)
    fields.update(extra)
    return fields


def error_of(capsys, argv) -> str:
    rc = cmedbert(argv)
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.startswith("cmedbert launch: error: ") and err.count("\n") == 1, err
    return err


def test_dry_run_prints_each_node_and_writes_launch_files(tiny_pretrain, tmp_path, write_launch, capsys, no_start,
                                                          private_tmp):
    cfg = write_launch(**base_fields(tiny_pretrain, tmp_path, env={"OMP_NUM_THREADS": "1"}))
    assert cmedbert(["launch", str(cfg), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "world size 4" in out and "batch: global 8 = micro 2 x world 4 x grad accum 1" in out
    assert "--node_rank=0" in out and "--node_rank=1" in out and "export OMP_NUM_THREADS=1" in out
    assert "packed data:" in out and "tokenizer:" in out and "run folder is new" in out
    # the launch files go to a new temporary folder the dry run names, never to the run's launch folder
    folder = Path(re.search(r"dry run: launch files written to (\S+)", out).group(1))
    assert folder.parent == private_tmp
    assert (folder / "commands.txt").read_text(encoding="utf-8") == out
    assert (folder / "manifest.json").is_file() and (folder / "launch.json").is_file()
    assert not (tmp_path / "runs").exists() and no_start == []


def test_dry_run_of_deepspeed_writes_hostfile_to_given_dir(tiny_pretrain, tmp_path, write_launch, capsys, no_start,
                                                           monkeypatch):
    cfg = write_launch(**base_fields(tiny_pretrain, tmp_path, launcher="deepspeed", pass_env=["CMEDBERT_TEST_*"]))
    target = tmp_path / "plan"
    monkeypatch.setenv("CMEDBERT_TEST_API_KEY", "s3cret")
    assert cmedbert(["launch", str(cfg), "--dry-run", "--write-to", str(target)]) == 0
    out = capsys.readouterr().out
    assert (target / "hostfile").read_text() == "127.0.0.1 slots=2\nlocalhost slots=2\n"
    assert f"--hostfile={target}/hostfile" in out
    # the secret reaches the nodes but is never printed
    assert "CMEDBERT_TEST_API_KEY=s3cret" in (target / ".deepspeed_env").read_text()
    assert "s3cret" not in out and "CMEDBERT_TEST_API_KEY='***'" in out
    assert "s3cret" not in (target / "launch.json").read_text()


def test_unknown_launcher(tiny_pretrain, tmp_path, write_launch, capsys, no_start):
    cfg = write_launch(**base_fields(tiny_pretrain, tmp_path, launcher="mpirun"))
    err = error_of(capsys, ["launch", str(cfg)])
    assert "'launcher': 'mpirun' is not one of ['deepspeed', 'torchrun', 'slurm']" in err and str(cfg) in err
    assert not (tmp_path / "runs").exists() and no_start == []


def test_malformed_hostfile_line(tiny_pretrain, tmp_path, write_launch, capsys, no_start):
    hostfile = tmp_path / "hosts"
    hostfile.write_text("node01 slots=8\nnode02 slots=8\nnode03 8\n", encoding="utf-8")
    fields = base_fields(tiny_pretrain, tmp_path, launcher="deepspeed", hostfile=str(hostfile))
    del fields["nodes"]
    err = error_of(capsys, ["launch", str(write_launch(**fields))])
    assert f"hostfile {hostfile} line 3: 'node03 8' is not 'HOST slots=N'" in err
    assert not (tmp_path / "runs").exists() and no_start == []


def test_node_count_that_does_not_match_the_allocation(tiny_pretrain, tmp_path, write_launch, capsys,
                                                       monkeypatch, no_start):
    monkeypatch.setenv("SLURM_NNODES", "2")
    monkeypatch.setenv("SLURM_JOB_NODELIST", "gpu[01-02]")
    fields = base_fields(tiny_pretrain, tmp_path, nnodes=4)
    del fields["nodes"]
    err = error_of(capsys, ["launch", str(write_launch(**fields)), "--node-rank", "0"])
    assert "nnodes = 4 but the SLURM allocation has 2 node(s): gpu01, gpu02" in err
    assert not (tmp_path / "runs").exists() and no_start == []


def test_global_batch_not_divisible_by_world_size(tiny_pretrain, tmp_path, write_launch, capsys, no_start):
    cfg = write_launch(**base_fields(tiny_pretrain, tmp_path, gpus_per_node=3))
    err = error_of(capsys, ["launch", str(cfg), "--dry-run"])
    assert "global batch 8 sequences" in err and "micro batch 2 x world size 6 = 12" in err
    assert not (tmp_path / "runs").exists() and no_start == []


def test_port_in_use_on_the_master(tiny_pretrain, tmp_path, write_launch, capsys, no_start):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        cfg = write_launch(**base_fields(tiny_pretrain, tmp_path, master_port=port))
        err = error_of(capsys, ["launch", str(cfg), "--node-rank", "0"])
    assert f"port {port} on this machine (master_addr 127.0.0.1) is in use" in err
    assert not (tmp_path / "runs").exists() and no_start == []


def test_missing_data_stops_a_real_launch_and_warns_in_a_dry_run(tiny_pretrain, tmp_path, write_launch, capsys,
                                                                   no_start):
    fields = base_fields(tiny_pretrain, tmp_path, pretrain_overrides=[f"data.path={tmp_path / 'nope'}"])
    cfg = write_launch(**fields)
    err = error_of(capsys, ["launch", str(cfg), "--node-rank", "1"])
    assert f"packed data {tmp_path / 'nope'} not found" in err
    assert cmedbert(["launch", str(cfg), "--dry-run"]) == 0
    assert "WARNING (a real launch stops here): packed data" in capsys.readouterr().out
    assert no_start == []


def test_config_hash_mismatch_on_a_node(tiny_pretrain, tmp_path, write_launch, capsys, no_start):
    cfg = write_launch(**base_fields(tiny_pretrain, tmp_path))
    err = error_of(capsys, ["launch", str(cfg), "--node-rank", "1", "--expect-config-hash", "ffffffffffffffff"])
    assert "hashes to" in err and "but ffffffffffffffff was expected" in err
    assert no_start == []


def test_worker_refuses_a_rank_whose_config_differs(tiny_pretrain, monkeypatch, capsys):
    from cmedbert.launch.worker import main as worker

    monkeypatch.setenv("CMEDBERT_CONFIG_HASH", "ffffffffffffffff")
    monkeypatch.setenv("RANK", "3")
    rc = worker(["--local_rank=0", "pretrain", str(tiny_pretrain), "--out", str(tiny_pretrain.parent / "run")])
    err = capsys.readouterr().err
    assert rc == 2 and "rank 3 on" in err and "the launch planned ffffffffffffffff" in err
    assert not (tiny_pretrain.parent / "run").exists()


def test_node_rank_out_of_range_and_not_for_deepspeed(tiny_pretrain, tmp_path, write_launch, capsys, no_start):
    cfg = write_launch(**base_fields(tiny_pretrain, tmp_path))
    assert "--node-rank 2 is out of range: 2 node(s)" in error_of(capsys, ["launch", str(cfg), "--node-rank", "2"])
    cfg = write_launch(**base_fields(tiny_pretrain, tmp_path, launcher="deepspeed"))
    assert "--node-rank is for torchrun" in error_of(capsys, ["launch", str(cfg), "--node-rank", "1"])
    assert no_start == []


def test_slurm_requires_nnodes_and_a_checkpoint_window(tiny_pretrain, tmp_path, write_launch, capsys, no_start):
    fields = base_fields(tiny_pretrain, tmp_path, launcher="slurm")
    del fields["nodes"]
    assert "'nnodes' is required" in error_of(capsys, ["launch", str(write_launch(**fields))])
    cfg = write_launch(**fields, nnodes=2, shutdown_timeout=600)
    assert "shutdown_timeout=600s must be shorter than slurm.signal_lead_seconds=300s" in \
        error_of(capsys, ["launch", str(cfg)])
    assert no_start == []


def test_real_slurm_launch_submits_the_script(tiny_pretrain, tmp_path, write_launch, capsys, monkeypatch):
    """Without --dry-run, launcher=slurm runs sbatch on the generated script (a stand-in sbatch here)."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "sbatch").write_text(f"#!/bin/sh\necho \"$@\" > {tmp_path}/sbatch.args\necho 4242\n")
    (bindir / "sbatch").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    fields = base_fields(tiny_pretrain, tmp_path, launcher="slurm", nnodes=2)
    del fields["nodes"]
    assert cmedbert(["launch", str(write_launch(**fields))]) == 0
    assert "submitted SLURM job 4242" in capsys.readouterr().out
    script = tmp_path / "runs" / "r1.launch" / "job.sbatch"
    assert (tmp_path / "sbatch.args").read_text().split() == ["--parsable", str(script)]
    assert (tmp_path / "runs" / "r1.jobs").is_dir()  # sbatch --output needs it before the job starts


def test_launch_files_never_replace_a_folder_that_is_not_a_launch_folder(tiny_pretrain, tmp_path, write_launch,
                                                                          capsys, no_start):
    cfg = write_launch(**base_fields(tiny_pretrain, tmp_path))
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    err = error_of(capsys, ["launch", str(cfg), "--dry-run", "--write-to", str(precious)])
    assert "not empty and not a launch folder" in err
    assert (precious / "notes.txt").read_text() == "keep me"
    # an earlier launch folder is replaced
    target = tmp_path / "plan"
    assert cmedbert(["launch", str(cfg), "--dry-run", "--write-to", str(target)]) == 0
    assert cmedbert(["launch", str(cfg), "gpus_per_node=1", "--dry-run", "--write-to", str(target)]) == 0
    assert "world size 2" in (target / "commands.txt").read_text()
