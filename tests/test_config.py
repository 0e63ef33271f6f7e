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
