from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

import pytest

from cmedbert.config import apply_overrides, config_hash, deep_merge, load_config, parse_override
from cmedbert.errors import ConfigError


@dataclass
class Inner:
    rate: float = field(default=0.15, metadata={"help": "mask rate (fraction of tokens)"})
    kinds: list[str] = field(default_factory=lambda: ["a"])


@dataclass
class Outer:
    name: str = field(metadata={"help": "run name"})
    steps: int = 10
    mode: Literal["scratch", "continual"] = "scratch"
    init_from: Optional[str] = None
    inner: Inner = field(default_factory=Inner)


def test_file_then_overrides(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text('name = "x"\nsteps = 3\n[inner]\nrate = 0.3\n', encoding="utf-8")
    cfg = load_config(Outer, p, ["steps=7", "inner.kinds=['b','c']", "mode=continual"])
    assert cfg.name == "x" and cfg.steps == 7 and cfg.inner.rate == 0.3
    assert cfg.inner.kinds == ["b", "c"] and cfg.mode == "continual"


def test_yaml_file(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("name: y\ninner:\n  rate: 0.2\n", encoding="utf-8")
    assert load_config(Outer, p).inner.rate == 0.2


def test_missing_key_named():
    with pytest.raises(ConfigError, match="missing config key 'name'"):
        load_config(Outer, None, [])


def test_unknown_override_key_named():
    with pytest.raises(ConfigError, match="unknown config key 'inner.rat'"):
        load_config(Outer, None, ["name=x", "inner.rat=0.2"])


def test_bad_types_and_literals():
    with pytest.raises(ConfigError, match="'steps'.*integer"):
        load_config(Outer, None, ["name=x", "steps=abc"])
    with pytest.raises(ConfigError, match="'mode'"):
        load_config(Outer, None, ["name=x", "mode=both"])


def test_missing_file_named(tmp_path):
    with pytest.raises(ConfigError, match="nope.toml"):
        load_config(Outer, tmp_path / "nope.toml")


def test_override_parsing():
    assert parse_override("a.b=1") == (["a", "b"], 1)
    assert parse_override("a=hello world") == (["a"], "hello world")
    assert parse_override("a=true") == (["a"], True)
    assert apply_overrides({"a": {"b": 1}}, ["a.c=2"]) == {"a": {"b": 1, "c": 2}}


def test_config_hash_stable_and_sensitive():
    a = load_config(Outer, None, ["name=x"])
    b = load_config(Outer, None, ["name=x"])
    c = load_config(Outer, None, ["name=x", "steps=11"])
    assert config_hash(a) == config_hash(b) != config_hash(c)


def test_deep_merge_later_layers_win_nested_and_copies():
    inner = {"b": 1, "c": [1]}
    merged = deep_merge({"a": inner}, {"a": {"c": [3]}}, None, {"d": 4})
    assert merged == {"a": {"b": 1, "c": [3]}, "d": 4}
    merged["a"]["b"] = 9
    assert inner == {"b": 1, "c": [1]}  # the inputs are never changed


# ---------------------------------------------------------------- one config hash (affects_output)

def _pretrain_cfg(*overrides):
    from cmedbert.pretrain.config import PretrainConfig

    return load_config(PretrainConfig, None, ["tokenizer=tok", "data.path=packed", "train.max_steps=10", *overrides])


@pytest.mark.parametrize("change", ["metrics.progress_bar=false", "metrics.wandb_mode=offline", "metrics.log_every=3",
                                    "checkpoint.keep_last=9"])
def test_config_hash_ignores_fields_that_do_not_change_the_output(change):
    assert config_hash(_pretrain_cfg(change)) == config_hash(_pretrain_cfg())


@pytest.mark.parametrize("change", ["optimizer.lr=1e-3", "masking.mlm_probability=0.3", "seed=1", "train.max_steps=11"])
def test_config_hash_changes_with_fields_that_change_the_output(change):
    assert config_hash(_pretrain_cfg(change)) != config_hash(_pretrain_cfg())


def test_config_hash_of_plain_data_with_its_class_equals_the_dataclass_hash():
    from cmedbert.config import to_dict
    from cmedbert.pretrain.config import PretrainConfig

    cfg = _pretrain_cfg("metrics.progress_bar=false")
    assert config_hash(to_dict(cfg), PretrainConfig) == config_hash(cfg)
    assert config_hash(to_dict(cfg)) != config_hash(cfg)  # without the class: everything counts


def test_corpus_and_pack_worker_counts_keep_the_hash(tmp_path):
    from cmedbert.corpus.config import CorpusConfig
    from cmedbert.tokenizer.pack import PackConfig

    src = ['sources=[{name="a", type="plain_text", paths=["x.txt"]}]']
    base = config_hash(load_config(CorpusConfig, None, src + ["workers=1", "progress=false"]))
    assert config_hash(load_config(CorpusConfig, None, src + ["workers=8", "progress=true"])) == base
    assert config_hash(load_config(CorpusConfig, None, src + ["workers=1", "dedup.threshold=0.5"])) != base
    pack = ["corpus=c", "tokenizer=t"]
    assert config_hash(load_config(PackConfig, None, pack + ["workers=1"])) == \
        config_hash(load_config(PackConfig, None, pack + ["workers=4"]))


def test_manifest_hash_and_step_reuse_follow_the_same_rule(tmp_path):
    from cmedbert.artifact import atomic_output, read_manifest, write_manifest
    from cmedbert.experiment import run_step

    calls = []

    def fn(cfg, folder):
        calls.append(cfg.metrics.progress_bar)
        with atomic_output(folder) as tmp:
            write_manifest(tmp, stage="pretrain", config=cfg)

    run_step("p", tmp_path / "run", _pretrain_cfg(), fn, stage="pretrain")
    assert read_manifest(tmp_path / "run")["config_hash"] == config_hash(_pretrain_cfg())
    run_step("p", tmp_path / "run", _pretrain_cfg("metrics.progress_bar=false"), fn, stage="pretrain")
    assert calls == [True]  # reused: only a display field changed
