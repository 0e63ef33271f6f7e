"""Config validation, the DeepSpeed config (plain data), step planning, the lr schedule, the CLI."""

import json
import subprocess
import sys

import pytest

from cmedbert.config import load_config
from cmedbert.errors import ConfigError
from cmedbert.pretrain.config import PretrainConfig, peak_tflops
from cmedbert.pretrain.engine import build_ds_config, grad_accumulation, lr_lambda
from cmedbert.pretrain.data import plan_steps


def cfg(**over):
    base = {"tokenizer": "tok", "data": {"path": "packed"}, "train": {"max_steps": 10}}
    return load_config(PretrainConfig, None, [f"{k}={json.dumps(v)}" for k, v in over.items()], base=base)


def test_build_ds_config_derives_accumulation_and_engine():
    c = cfg(**{"batch.global_batch": 64, "batch.micro_batch": 8, "engine.zero_stage": 3, "engine.precision": "bf16",
               "optimizer.grad_clip": 0.5})
    ds = build_ds_config(c, world_size=2)
    assert ds["train_batch_size"] == 64 and ds["train_micro_batch_size_per_gpu"] == 8
    assert ds["gradient_accumulation_steps"] == 4
    assert ds["zero_optimization"]["stage"] == 3
    assert ds["bf16"]["enabled"] and not ds["fp16"]["enabled"]
    assert ds["gradient_clipping"] == 0.5
    json.dumps(ds)  # plain data
    ds1 = build_ds_config(c, world_size=1)
    assert ds1["gradient_accumulation_steps"] == 8


def test_impossible_batch_is_a_clear_error():
    c = cfg(**{"batch.global_batch": 12, "batch.micro_batch": 4})
    with pytest.raises(ConfigError, match="not divisible by world size 2"):
        build_ds_config(c, world_size=2)
    assert grad_accumulation(12, 4, 3) == 1
    with pytest.raises(ConfigError, match="multiple"):
        cfg(**{"batch.global_batch": 10, "batch.micro_batch": 4})


def test_user_ds_config_is_deep_merged(tmp_path):
    p = tmp_path / "ds.json"
    p.write_text(json.dumps({"zero_optimization": {"overlap_comm": True}, "gradient_clipping": 2.0}))
    ds = build_ds_config(cfg(**{"engine.ds_config": str(p), "engine.zero_stage": 2}), world_size=1)
    assert ds["zero_optimization"] == {**ds["zero_optimization"], "stage": 2, "overlap_comm": True}
    assert ds["gradient_clipping"] == 2.0
    p.write_text(json.dumps({"train_batch_size": 999}))
    with pytest.raises(ConfigError, match="train_batch_size=999"):
        build_ds_config(cfg(**{"engine.ds_config": str(p)}), world_size=1)
    p.write_text("{oops")
    with pytest.raises(ConfigError, match="invalid JSON"):
        build_ds_config(cfg(**{"engine.ds_config": str(p)}), world_size=1)


def test_validation_errors_name_the_key():
    with pytest.raises(ConfigError, match="init_from"):
        cfg(init="continual")
    with pytest.raises(ConfigError, match="max_steps"):
        load_config(PretrainConfig, None, [], base={"tokenizer": "t", "data": {"path": "p"}})
    with pytest.raises(ConfigError, match="sum to 1"):
        load_config(PretrainConfig, None, [], base={"tokenizer": "t", "train": {"max_steps": 1},
                                                    "data": {"phases": [{"path": "a", "fraction": 0.5}]}})
    with pytest.raises(ConfigError, match="zero_stage"):
        cfg(**{"engine.zero_stage": 4})
    with pytest.raises(ConfigError, match="unknown config key"):
        cfg(**{"batch.size": 4})


def test_token_budget_gives_steps_over_phases():
    c = load_config(PretrainConfig, None, [], base={
        "tokenizer": "t", "batch": {"global_batch": 4, "micro_batch": 2},
        "data": {"phases": [{"path": "a", "fraction": 0.75}, {"path": "b", "fraction": 0.25}]},
        "train": {"train_tokens": 4 * (0.75 * 128 + 0.25 * 512) * 100}})
    assert plan_steps(c, [128, 512]) == 100
    c.train.max_steps = 30
    assert plan_steps(c, [128, 512]) == 30  # the smaller wins


def test_lr_schedule():
    c = cfg(**{"optimizer.warmup_steps": 10, "optimizer.schedule": "linear"})
    f = lr_lambda(c.optimizer, 110)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.5) and f(110) == pytest.approx(0.0)
    c = cfg(**{"optimizer.warmup_ratio": 0.1, "optimizer.schedule": "cosine", "optimizer.min_lr_ratio": 0.1})
    f = lr_lambda(c.optimizer, 100)
    assert f(4) == pytest.approx(0.5) and f(55) == pytest.approx(0.55) and f(100) == pytest.approx(0.1)


def test_peak_flops_table():
    c = cfg(**{"metrics.device": "H100"})
    assert peak_tflops(c.metrics, "bf16", None) == 989.0
    assert peak_tflops(cfg().metrics, "bf16", "NVIDIA A100-SXM4-80GB") == 312.0
    assert peak_tflops(cfg().metrics, "fp32", None) is None
    assert peak_tflops(cfg(**{"metrics.peak_tflops": 5.0}).metrics, "fp32", None) == 5.0


def test_cli_prints_resolved_config(repo_root):
    out = subprocess.run([sys.executable, "-m", "cmedbert.cli", "pretrain", str(repo_root / "configs/pretrain/tiny.toml"),
                          "batch.micro_batch=2", "--print-config", "--out", "x"], capture_output=True, text=True,
                         cwd=repo_root)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["batch"]["micro_batch"] == 2 and data["engine"]["zero_stage"] == 2
    bad = subprocess.run([sys.executable, "-m", "cmedbert.cli", "pretrain", str(repo_root / "configs/pretrain/tiny.toml"),
                          "batch.nope=2", "--out", "x"], capture_output=True, text=True, cwd=repo_root)
    assert bad.returncode == 2 and "batch.nope" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.parametrize("name", ["tiny.toml", "base_continual.toml"])
def test_shipped_configs_load(repo_root, name):
    c = load_config(PretrainConfig, repo_root / "configs" / "pretrain" / name)
    ds = build_ds_config(c, world_size=8 if name.startswith("base") else 1)
    assert ds["train_batch_size"] == c.batch.global_batch
