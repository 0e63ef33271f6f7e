"""Plan variants beyond the worked examples (pure functions, no processes)."""

from __future__ import annotations

import subprocess

import pytest

from cmedbert.config import load_config
from cmedbert.errors import CmedbertError, ConfigError
from cmedbert.launch.config import LaunchConfig
from cmedbert.launch.hosts import Host
from cmedbert.launch.plan import build_plan, render_dry_run

HOSTS = [Host("n1"), Host("n2")]


def cfg(**over) -> LaunchConfig:
    base = dict(launcher="torchrun", run_name="r", pretrain_config="p.toml", workdir="/w", gpus_per_node=4)
    base.update(over)
    return load_config(LaunchConfig, None, [f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}".replace("'", '"')
                                            for k, v in base.items()])


def plan(c: LaunchConfig, hosts=HOSTS, **kw):
    return build_plan(c, hosts, config_hash="h" * 16, workdir="/w", launch_config="l.toml", **kw)


def test_torchrun_c10d_has_no_node_rank():
    p = plan(cfg(rendezvous="c10d", master_port=1234))
    argv = p.nodes[1].argv
    assert "--rdzv_backend=c10d" in argv and "--rdzv_endpoint=n1:1234" in argv and "--rdzv_id=r" in argv
    assert not any(a.startswith(("--node_rank", "--master_addr")) for a in argv)
    assert p.nodes[0].argv == p.nodes[1].argv


def test_deepspeed_without_ssh_runs_a_runner_per_node():
    p = plan(cfg(launcher="deepspeed", **{"deepspeed.no_ssh": True}), node_rank=1)
    assert "--node_rank=1" in p.nodes[1].argv and "--log_level=info" in p.nodes[1].argv
    assert p.local.argv[p.local.argv.index("--no_ssh") + 1] == "--node_rank=1"
    assert "--node-rank 1 --expect-config-hash" in p.nodes[1].started_by


def test_deepspeed_single_node_skips_the_ssh_probe():
    p = plan(cfg(launcher="deepspeed"), hosts=[Host("localhost")])
    assert "--no_ssh_check" in p.local.argv
    assert p.local.env["DS_ENV_FILE"] == "/w/runs/r.launch/.deepspeed_env"


def test_sbatch_without_requeue_and_with_extras_is_valid_bash():
    c = cfg(launcher="slurm", nnodes=3, **{"slurm.requeue": False, "slurm.extra_sbatch": ["--exclusive"],
                                           "slurm.setup": ["module load cuda"]})
    script = plan(c, hosts=[Host(f"x{i}") for i in range(3)]).files["job.sbatch"]
    assert "#SBATCH --no-requeue" in script and "#SBATCH --signal" not in script and "#SBATCH --exclusive" in script
    assert "\nmodule load cuda\n" in script and "NNODES=3" in script
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0


def test_env_rules_and_secret_masking():
    with pytest.raises(ConfigError, match="env.RANK': set by the launcher"):
        cfg(**{"env.RANK": "0"})
    with pytest.raises(CmedbertError, match="pass_env': WANDB_API_KEY is not set"):
        plan(cfg(pass_env=["WANDB_API_KEY"]), environ={})
    p = plan(cfg(pass_env=["WANDB_*", "HF_TOKEN"]), environ={"WANDB_API_KEY": "abc", "WANDB_MODE": "offline",
                                                              "HF_TOKEN": "t0k", "OTHER": "x"})
    assert p.env == {"WANDB_API_KEY": "abc", "WANDB_MODE": "offline", "HF_TOKEN": "t0k", "CMEDBERT_CONFIG_HASH": "h" * 16}
    text = render_dry_run(p)
    assert "abc" not in text and "t0k" not in text and "WANDB_MODE=offline" in text


@pytest.mark.parametrize("over, msg", [
    ({"run_name": "a b"}, "run_name"),
    ({"gpus_per_node": 0}, "gpus_per_node"),
    ({"master_port": 70000}, "not a TCP port"),
    ({"nodes": ["a", "a"]}, "listed twice"),
    ({"slurm.time": "forever"}, "not a SLURM time"),
    ({"pretrain_overrides": ["nokey"]}, "not key=value"),
])
def test_bad_launch_config_values(over, msg):
    with pytest.raises(ConfigError, match=msg):
        cfg(**over)
