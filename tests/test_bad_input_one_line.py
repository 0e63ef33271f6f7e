"""Bad input through the real `cmedbert` main: one line `cmedbert STAGE: error: ...`, exit 2,
no traceback, nothing written, and before any expensive work."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest

from cmedbert.cli import main as cmedbert

REPO = Path(__file__).resolve().parents[1]


def one_line_error(capsys, argv: list[str], stage: str) -> str:
    rc = cmedbert(argv)
    out = capsys.readouterr()
    assert rc == 2, out.err
    assert out.err.startswith(f"cmedbert {stage}: error: ") and out.err.count("\n") == 1, out.err
    assert "Traceback" not in out.err + out.out
    return out.err


@pytest.fixture
def corpus_input(tmp_path) -> Path:
    f = tmp_path / "plain.txt"
    f.write_text("高血压患者应当低盐饮食，并按时服用降压药物，定期复查血压。\n" * 3, encoding="utf-8")
    return f


def corpus_args(f: Path) -> list[str]:
    return [f"sources=[{{name='p',type='plain_text',paths=['{f}']}}]", "workers=1", "progress=false"]


def test_out_pointing_at_a_file(tmp_path, capsys, corpus_input):
    target = tmp_path / "a-file"
    target.write_text("keep me")
    err = one_line_error(capsys, ["corpus", "build", *corpus_args(corpus_input), "--out", str(target)], "corpus")
    assert "is a file, not a folder" in err
    err = one_line_error(capsys, ["corpus", "build", *corpus_args(corpus_input), "--out", str(target / "sub")],
                         "corpus")
    assert "is a file" in err
    assert target.read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "plain.txt"]


def test_already_exists_names_the_real_flag(tmp_path, capsys, corpus_input):
    out = tmp_path / "out"
    out.mkdir()
    (out / "x").write_text("x")
    err = one_line_error(capsys, ["corpus", "build", *corpus_args(corpus_input), "--out", str(out)], "corpus")
    assert "--overwrite" in err and "overwrite=true" not in err
    assert cmedbert(["corpus", "build", *corpus_args(corpus_input), "--out", str(out), "--overwrite"]) == 0


def test_bogus_compression_is_refused_before_pass_1(tmp_path, capsys, corpus_input, monkeypatch):
    from cmedbert.corpus import passes

    monkeypatch.setattr(passes, "run_pass1", lambda *a: pytest.fail("pass 1 ran before the config was checked"))
    err = one_line_error(capsys, ["corpus", "build", *corpus_args(corpus_input), "output.compression=bogus",
                                  "--out", str(tmp_path / "out")], "corpus")
    assert "'output.compression': 'bogus' is not one of" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("text,expected", [
    (b"workers: 1\nprogress: false  # \xff\xfe latin-1 bytes\n", "not UTF-8"),
    (b"sources: &s\n  - name: p\n    paths: *s\n", "circular alias"),
    (b"a: &a [*a]\n", "circular alias"),
    (b"workers: [1, 2\nprogress: false\n", "invalid YAML"),
])
def test_unreadable_yaml_configs(tmp_path, capsys, text, expected):
    cfg = tmp_path / "c.yaml"
    cfg.write_bytes(text)
    err = one_line_error(capsys, ["corpus", "build", str(cfg), "--out", str(tmp_path / "out")], "corpus")
    assert expected in err and str(cfg) in err


def test_yaml_alias_bomb_is_refused_in_bounded_memory(tmp_path, capsys):
    """~300 bytes whose aliases expand to 9^9 strings: before the fix, copying the config
    (overrides are applied to a deep copy) took 1.4 GB before failing."""
    lines = ['a: &a ["x","x","x","x","x","x","x","x","x"]']
    for prev, name in zip("abcdefg", "bcdefgh"):
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    cfg = tmp_path / "bomb.yaml"
    cfg.write_text("\n".join(lines) + "\n")
    assert cfg.stat().st_size < 400
    tracemalloc.start()
    try:
        err = one_line_error(capsys, ["corpus", "build", str(cfg), "--out", str(tmp_path / "out")], "corpus")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "alias bomb" in err and peak < 20e6


@pytest.mark.parametrize("argv,stage,key", [
    (["corpus", "build", "cleaning.max_chars=-5"], "corpus", "cleaning.max_chars"),
    (["corpus", "build", "output.shard_mb=-1"], "corpus", "output.shard_mb"),
    (["tokenizer", "pack", "corpus=c", "tokenizer=t", "seq_len=-128"], "tokenizer", "seq_len"),
    (["tokenizer", "extend", "base=b", "corpus=c", "max_terms=-1"], "tokenizer", "max_terms"),
    (["tokenizer", "train", "corpus=c", "vocab_size=-8000"], "tokenizer", "vocab_size"),
    (["pretrain", "configs/pretrain/tiny.toml", "optimizer.lr=-0.001"], "pretrain", "optimizer.lr"),
    (["pretrain", "configs/pretrain/tiny.toml", "batch.micro_batch=-2"], "pretrain", "batch.micro_batch"),
    (["finetune", "configs/finetune/demo.toml", "models=['m']", "hp.lr=-1e-3"], "finetune", "hp.lr"),
    (["finetune", "configs/finetune/demo.toml", "models=['m']", "hp.batch_size=-16"], "finetune", "hp.batch_size"),
    (["launch", "configs/launch/4x8-torchrun.toml", "shutdown_timeout=-1"], "launch", "shutdown_timeout"),
    (["pretrain", "configs/pretrain/tiny.toml", "optimizer.lr=nan"], "pretrain", "optimizer.lr"),
])
def test_negative_sizes_and_learning_rates(tmp_path, capsys, monkeypatch, corpus_input, argv, stage, key):
    monkeypatch.chdir(REPO)
    if stage == "corpus":
        argv = argv[:2] + corpus_args(corpus_input) + argv[2:]
    if stage != "launch":
        argv = argv + ["--out", str(tmp_path / "out")]
    err = one_line_error(capsys, argv, stage)
    # the stage's own bound where it has one (e.g. "'optimizer.lr' must be > 0"), else the
    # generic one every stage gets from cmedbert.config ("config key 'hp.lr': must be >= 0")
    assert key.split(".")[-1] in err and any(w in err for w in ("must be", "need ", "finite")), err
    assert not (tmp_path / "out").exists()
