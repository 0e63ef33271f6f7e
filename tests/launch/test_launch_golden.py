"""Golden files for what launch generates from the worked examples (configs/launch/4x8-*.toml):
the hostfile, .deepspeed_env, sbatch script and every node's command + environment.

The plan is pure (no clock, no random ports, no environment), so the files must match byte for
byte. After an intended change: UPDATE_GOLDEN=1 pytest tests/launch/test_launch_golden.py
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from cmedbert.config import load_config
from cmedbert.launch.config import LaunchConfig
from cmedbert.launch.hosts import resolve_nodes
from cmedbert.launch.plan import build_plan, render_dry_run

GOLDEN = Path(__file__).parent / "golden"
HASH = "0123456789abcdef"  # a fixed pretrain config hash: the goldens test launch, not pretrain


def plan_for(repo_root: Path, name: str, node_rank=None):
    path = repo_root / "configs" / "launch" / f"{name}.toml"
    cfg = load_config(LaunchConfig, path)
    hosts = resolve_nodes(nodes=cfg.nodes, hostfile=None, nnodes=cfg.nnodes, launcher=cfg.launcher, environ={})
    return build_plan(cfg, hosts, config_hash=HASH, workdir=cfg.workdir, node_rank=node_rank,
                      launch_config=f"configs/launch/{name}.toml", environ={"WANDB_PROJECT": "cmedbert"})


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.write_text(text, encoding="utf-8")
    assert path.is_file(), f"missing golden file {path} (run with UPDATE_GOLDEN=1)"
    assert text == path.read_text(encoding="utf-8"), f"{name} differs from its golden file"


@pytest.mark.parametrize("name", ["4x8-deepspeed", "4x8-torchrun", "4x8-slurm"])
def test_per_node_commands_match_golden(repo_root, name):
    check_golden(f"{name}.commands.txt", render_dry_run(plan_for(repo_root, name)))


def test_deepspeed_hostfile_and_env_file_match_golden(repo_root):
    plan = plan_for(repo_root, "4x8-deepspeed")
    check_golden("4x8-deepspeed.hostfile", plan.files["hostfile"])
    check_golden("4x8-deepspeed.deepspeed_env", plan.files[".deepspeed_env"])


def test_sbatch_script_matches_golden(repo_root):
    check_golden("4x8-slurm.sbatch", plan_for(repo_root, "4x8-slurm").files["job.sbatch"])


def test_torchrun_nodes_differ_only_in_node_rank(repo_root):
    plan = plan_for(repo_root, "4x8-torchrun")
    assert [n.host for n in plan.nodes] == ["gpu-node01", "gpu-node02", "gpu-node03", "gpu-node04"]
    for rank, node in enumerate(plan.nodes):
        assert f"--node_rank={rank}" in node.argv
        assert [a for a in node.argv if not a.startswith("--node_rank")] == \
               [a for a in plan.nodes[0].argv if not a.startswith("--node_rank")]
        assert node.env["CMEDBERT_CONFIG_HASH"] == HASH and node.env["WANDB_PROJECT"] == "cmedbert"
    assert plan.world_size == 32


def test_deepspeed_world_info_is_what_the_deepspeed_runner_encodes(repo_root):
    from deepspeed.launcher.runner import encode_world_info

    plan = plan_for(repo_root, "4x8-deepspeed")
    expected = encode_world_info({h: list(range(8)) for h in plan.hosts})
    assert all(f"--world_info={expected}" in n.argv for n in plan.nodes)


def test_deepspeed_runner_parses_the_generated_hostfile(repo_root):
    from deepspeed.launcher.runner import _parse_hostfile

    text = plan_for(repo_root, "4x8-deepspeed").files["hostfile"]
    assert dict(_parse_hostfile(text.splitlines())) == {f"gpu-node0{i}": 8 for i in range(1, 5)}


@pytest.mark.parametrize("name", ["4x8-deepspeed", "4x8-torchrun", "4x8-slurm"])
def test_worked_example_dry_run_from_the_repo(repo_root, name, tmp_path, monkeypatch, capsys):
    """`cmedbert launch configs/launch/4x8-*.toml --dry-run` works as documented: it reads the real
    pretrain config, checks the batch split for 32 ranks and prints four nodes."""
    from cmedbert.cli import main as cmedbert

    monkeypatch.chdir(repo_root)
    cluster = tmp_path / "cluster"  # the examples' /shared/cmedbert, whatever this machine has there
    assert cmedbert(["launch", f"configs/launch/{name}.toml", f"workdir={cluster}", "--dry-run",
                     "--write-to", str(tmp_path / "plan")]) == 0
    out = capsys.readouterr().out
    assert "4 node(s) x 8 processes = world size 32" in out and "x world 32 x grad accum" in out
    assert [line.split(":")[0] for line in out.splitlines() if line.startswith("== node")] == \
           [f"== node {r}" for r in range(4)]
    if name == "4x8-torchrun":
        assert all(f"--node_rank={r} " in out for r in range(4))


@pytest.mark.parametrize("leftover", [False, True])
def test_dry_run_writes_nothing_at_the_cluster_path_and_is_repeatable(repo_root, tmp_path, monkeypatch, capsys,
                                                                       private_tmp, leftover):
    """A dry run without --write-to writes its launch files to a new temporary folder (printed), not
    to WORKDIR/runs/NAME.launch; so the next dry run sees the same machine and prints the same plan.
    With ``leftover``: the folder state an older dry run left at the cluster path (a WORKDIR holding
    only runs/NAME.launch) must not make the dry run read the pretrain config from there."""
    from cmedbert.cli import main as cmedbert

    monkeypatch.chdir(repo_root)
    cluster = tmp_path / "root" / "shared" / "cmedbert"
    if leftover:
        old = cluster / "runs" / "cmed-base-4x8.launch"
        old.mkdir(parents=True)
        (old / "commands.txt").write_text("from an earlier dry run\n")
    before = sorted(str(p) for p in (tmp_path / "root").rglob("*"))
    outs = []
    for _ in range(2):
        assert cmedbert(["launch", "configs/launch/4x8-slurm.toml", f"workdir={cluster}", "--dry-run"]) == 0
        out = capsys.readouterr().out
        folder = Path(re.search(r"dry run: launch files written to (\S+)", out).group(1))
        assert folder.parent == private_tmp and (folder / "job.sbatch").is_file()
        outs.append(out.replace(str(folder), "TMP"))
    assert outs[0] == outs[1]
    assert sorted(str(p) for p in (tmp_path / "root").rglob("*")) == before  # nothing written there
    assert f"# run folder: {cluster}/runs/cmed-base-4x8" in outs[0]
