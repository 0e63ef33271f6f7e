"""The deepspeed launcher path across two "nodes": `cmedbert launch` (launcher = "deepspeed") writes
the hostfile and .deepspeed_env and starts the real deepspeed runner, which reaches the nodes
through pdsh. pdsh/ssh are stand-ins here that run the per-node command on this machine with
%n = the node's index, so everything else is real: two deepspeed.launcher.launch processes
(node_rank 0 and 1), one rank each, gloo over 127.0.0.1, ZeRO-2, one checkpoint. The command pdsh
receives must be the one the dry run prints for each node."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

FAKE_PDSH = """#!/bin/bash
# stand-in for pdsh: run the command once per host of -w, on this machine, %n = host index
while [ $# -gt 0 ]; do
  case "$1" in -S) shift;; -f) shift 2;; -w) hosts="$2"; shift 2;; *) break;; esac
done
echo "$*" > "$FAKE/pdsh.cmd"
IFS=, read -ra H <<< "$hosts"
pids=()
for i in "${!H[@]}"; do
  bash -c "${*//%n/$i}" > "$FAKE/node$i.log" 2>&1 &
  pids+=($!)
done
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=$?; done
exit $rc
"""


@pytest.mark.slow
@pytest.mark.distributed
def test_deepspeed_launcher_two_nodes_via_pdsh(tiny_pretrain, tmp_path, write_launch, free_port):
    from cmedbert.config import load_config
    from cmedbert.launch.config import LaunchConfig
    from cmedbert.launch.hosts import Host
    from cmedbert.launch.plan import build_plan
    from cmedbert.launch.pretrain_link import config_hash_of

    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "pdsh").write_text(FAKE_PDSH)
    (fake / "ssh").write_text("#!/bin/sh\nexit 0\n")  # the runner's passwordless-ssh probe
    for f in ("pdsh", "ssh"):
        (fake / f).chmod(0o755)
    cfg_path = write_launch(launcher="deepspeed", run_name="ds2", pretrain_config=str(tiny_pretrain),
                            output_root=str(tmp_path / "runs"), nodes=["127.0.0.1", "localhost"], gpus_per_node=1,
                            master_port=free_port, python=sys.executable, workdir=str(tmp_path),
                            env={"OMP_NUM_THREADS": "1"})
    env = dict(os.environ, PATH=f"{fake}:{os.environ['PATH']}", FAKE=str(fake), OMP_NUM_THREADS="1")
    env.pop("CMEDBERT_CONFIG_HASH", None)
    done = subprocess.run([sys.executable, "-m", "cmedbert", "launch", str(cfg_path)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=170)
    logs = "".join((fake / f"node{i}.log").read_text() for i in (0, 1) if (fake / f"node{i}.log").exists())
    assert done.returncode == 0, done.stderr[-3000:] + logs[-3000:]

    run = tmp_path / "runs" / "ds2"
    assert sorted(p.name for p in (run / "checkpoints").glob("step_*")) == ["step_2"]
    assert "world size 2" in logs and "ZeRO stage 2" in logs
    assert (tmp_path / "runs" / "ds2.launch" / "hostfile").read_text() == "127.0.0.1 slots=1\nlocalhost slots=1\n"

    # what pdsh was asked to run is exactly the printed per-node command (%n = node rank)
    cfg = load_config(LaunchConfig, cfg_path)
    plan = build_plan(cfg, [Host("127.0.0.1"), Host("localhost")], workdir=str(tmp_path), launch_config=str(cfg_path),
                      config_hash=config_hash_of(str(tiny_pretrain), [], tmp_path))
    sent = (fake / "pdsh.cmd").read_text()
    assert shlex.join(plan.nodes[0].argv).replace("--node_rank=0", "--node_rank=%n") in sent
    for k, v in plan.nodes[1].env.items():
        assert f"export {k}={v};" in sent  # .deepspeed_env reached the nodes, hash included
    assert f"cd {tmp_path};" in sent
