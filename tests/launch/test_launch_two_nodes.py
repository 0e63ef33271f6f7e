"""Two "nodes" on this machine: two `cmedbert launch --node-rank 0/1` invocations, each starting
torchrun (--nnodes=2, one process per node, static rendezvous over gloo on 127.0.0.1), running a
tiny pretrain through the DeepSpeed engine with ZeRO-2. Both must finish and exactly one
checkpoint must be written into the shared run folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cmedbert.launch.pretrain_link import config_hash_of

REPO = Path(__file__).resolve().parents[2]


def launch_env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", CMEDBERT_SHARED_DATA=os.environ.get("CMEDBERT_SHARED_DATA", ""))
    env.pop("CMEDBERT_CONFIG_HASH", None)
    return env


def two_node_config(tiny_pretrain, tmp_path, write_launch, port):
    return write_launch(launcher="torchrun", rendezvous="static", run_name="two-nodes",
                        pretrain_config=str(tiny_pretrain), output_root=str(tmp_path / "runs"),
                        nodes=["127.0.0.1", "localhost"], gpus_per_node=1, master_port=port,
                        python=sys.executable, workdir=str(tmp_path),
                        env={"OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"})


def run_nodes(tmp_path: Path, commands: list[list[str]], timeout: float = 150) -> tuple[list[int], list[str]]:
    """Start one `cmedbert launch` per node at the same time; (exit codes, logs)."""
    logs = [open(tmp_path / f"node{r}.log", "w") for r in range(len(commands))]
    procs = [subprocess.Popen(cmd, cwd=REPO, env=launch_env(), stdout=log, stderr=subprocess.STDOUT)
             for cmd, log in zip(commands, logs)]
    try:
        rcs = [p.wait(timeout=timeout) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        for f in logs:
            f.close()
    return rcs, [(tmp_path / f"node{r}.log").read_text() for r in range(len(commands))]


@pytest.mark.slow
@pytest.mark.distributed
def test_two_nodes_zero2_one_checkpoint(tiny_pretrain, tmp_path, write_launch, free_port):
    cfg = two_node_config(tiny_pretrain, tmp_path, write_launch, free_port)
    expected = config_hash_of(str(tiny_pretrain), [], tmp_path)
    cli = [sys.executable, "-m", "cmedbert", "launch", str(cfg), "--expect-config-hash", expected]
    rcs, out = run_nodes(tmp_path, [cli + ["--node-rank", str(r)] for r in (0, 1)])
    assert rcs == [0, 0], f"node 0:\n{out[0][-3000:]}\nnode 1:\n{out[1][-3000:]}"

    run = tmp_path / "runs" / "two-nodes"
    checkpoints = sorted(p.name for p in (run / "checkpoints").glob("step_*"))
    assert checkpoints == ["step_2"], checkpoints
    assert (run / "checkpoints" / "latest").read_text().strip() == "step_2"
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["config_hash"] == expected  # the hash launch checked is the one the run records
    # both nodes joined one world of two ranks through the DeepSpeed engine with ZeRO stage 2
    assert "ZeRO stage 2" in out[0] and "world size 2" in out[0]
    assert "world size 2" in out[0] + out[1]
    # node 0 wrote the launch files, node 1 did not touch them
    assert (tmp_path / "runs" / "two-nodes.launch" / "commands.txt").is_file()


@pytest.mark.slow
@pytest.mark.distributed
def test_nodes_with_different_configs_stop_before_training(tiny_pretrain, tmp_path, write_launch, free_port):
    """Node 1 is started with another pretrain config (here: an extra override). Each node's own
    check passes, but the ranks compare hashes through torchrun's store: both stop, no run."""
    cfg = two_node_config(tiny_pretrain, tmp_path, write_launch, free_port)
    cli = [sys.executable, "-m", "cmedbert", "launch", str(cfg)]
    rcs, out = run_nodes(tmp_path, [cli + ["--node-rank", "0"],
                                    cli + ['pretrain_overrides=["train.max_steps=3"]', "--node-rank", "1"]])
    assert rcs[0] != 0 and rcs[1] != 0, out
    for log in out:
        assert "the ranks do not agree on the pretrain config" in log, log[-2000:]
        assert "ranks 0@" in log and "ranks 1@" in log
    assert not (tmp_path / "runs" / "two-nodes" / "checkpoints").exists()
