"""Fixtures for the launch tests: a tiny pretrain setup (tokenizer + packed data + config, built
with the pretrain stage's own test helpers) and launch-config writing."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

PRETRAIN_TOML = """\
tokenizer = "{tok}"
[data]
path = "{packed}"
[model]
preset = "tiny"
hidden_size = 32
num_attention_heads = 2
intermediate_size = 64
max_position_embeddings = 64
[batch]
global_batch = 8
micro_batch = 2
[train]
max_steps = 2
[engine]
zero_stage = 2
precision = "fp32"
[checkpoint]
every = 0
[eval]
every = 0
max_sequences = 8
[metrics]
log_every = 1
progress_bar = false
"""


@pytest.fixture(autouse=True)
def private_tmp(tmp_path, monkeypatch):
    """Temporary folders (the default target of a dry run's launch files) inside the test's tmp_path."""
    import tempfile

    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


@pytest.fixture
def tiny_pretrain(tmp_path) -> Path:
    """tmp_path/pre.toml: a 2-step tiny MLM run on synthetic packed data (ZeRO-2, fp32)."""
    from cmedbert.pretrain.testing import tiny_setup

    tok, packed = tiny_setup(tmp_path / "inputs", seq_len=32, n_train=32, n_valid=8)
    cfg = tmp_path / "pre.toml"
    cfg.write_text(PRETRAIN_TOML.format(tok=tok, packed=packed), encoding="utf-8")
    return cfg


def _toml_value(v) -> str:
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + " }"
    return json.dumps(v)  # strings, numbers, booleans and lists of them are valid TOML this way


@pytest.fixture
def write_launch(tmp_path):
    """write_launch(name, **fields) -> path of a launch TOML in tmp_path."""
    def write(name: str = "launch.toml", **fields) -> Path:
        p = tmp_path / name
        p.write_text("".join(f"{k} = {_toml_value(v)}\n" for k, v in fields.items()), encoding="utf-8")
        return p
    return write


@pytest.fixture
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
