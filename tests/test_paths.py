"""The one path rule (cmedbert.paths, docs/ARCHITECTURE.md "Paths"), rule by rule, on real stage configs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cmedbert.config import load_config
from cmedbert.errors import ConfigError
from cmedbert.paths import resolve, resolve_id_or_dir, shared_data_root

REPO = Path(__file__).resolve().parent.parent


def _pack(tmp_path: Path, body: str, overrides=()):
    from cmedbert.tokenizer.pack import PackConfig

    conf = tmp_path / "conf" / "pack.toml"
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text(body, encoding="utf-8")
    return load_config(PackConfig, conf, list(overrides))


def test_relative_path_in_a_config_file_is_relative_to_the_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = _pack(tmp_path, 'corpus = "data/corpus"\ntokenizer = "../tok"\nkg_terms = ["kg/a.txt"]\n')
    assert cfg.corpus == str(tmp_path / "conf" / "data" / "corpus")
    assert cfg.tokenizer == str(tmp_path / "tok")
    assert cfg.kg_terms == [str(tmp_path / "conf" / "kg" / "a.txt")]


def test_relative_path_on_the_command_line_is_relative_to_the_current_folder(tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    cfg = _pack(tmp_path, 'corpus = "data/corpus"\n', ["tokenizer=tok", "kg_terms=['kg/a.txt']"])
    assert resolve(cfg.tokenizer) == work / "tok"
    assert [resolve(p) for p in cfg.kg_terms] == [work / "kg" / "a.txt"]
    assert cfg.corpus == str(tmp_path / "conf" / "data" / "corpus")  # the file's value keeps its anchor


def test_relative_environment_data_root_is_relative_to_the_current_folder(tmp_path, monkeypatch):
    (tmp_path / "here").mkdir()
    monkeypatch.chdir(tmp_path / "here")
    monkeypatch.setenv("CMEDBERT_SHARED_DATA", "../shared")
    assert shared_data_root() == tmp_path / "here" / ".." / "shared"
    cfg = _pack(tmp_path, 'corpus = "c"\ntokenizer = "t"\nkg_terms = ["${data_root}/kg/a.txt"]\n')
    assert cfg.kg_terms == ["${data_root}/kg/a.txt"]  # the placeholder is kept in the config (portable hash)
    assert resolve(cfg.kg_terms[0]) == (tmp_path / "shared" / "kg" / "a.txt")


def test_nested_path_fields_are_anchored_too(tmp_path):
    from cmedbert.corpus.config import load as load_corpus
    from cmedbert.pretrain.config import PretrainConfig

    conf = tmp_path / "c" / "corpus.toml"
    conf.parent.mkdir()
    conf.write_text('[[sources]]\nname = "a"\ntype = "plain_text"\npaths = ["txt/*.txt", "${data_root}/x/*.txt"]\n'
                    '[decontam]\nfiles = ["dev.json"]\n', encoding="utf-8")
    cfg = load_corpus(conf)
    assert cfg.sources[0].paths == [str(tmp_path / "c" / "txt" / "*.txt"), "${data_root}/x/*.txt"]
    assert cfg.decontam.files == [str(tmp_path / "c" / "dev.json")]
    conf = tmp_path / "p" / "pretrain.toml"
    conf.parent.mkdir()
    conf.write_text('tokenizer = "tok"\n[train]\nmax_steps = 1\n[[data.phases]]\npath = "packed"\nfraction = 1.0\n',
                    encoding="utf-8")
    p = load_config(PretrainConfig, conf)
    assert (p.tokenizer, p.data.phases[0].path) == (str(tmp_path / "p" / "tok"), str(tmp_path / "p" / "packed"))


def test_hub_ids_stay_hub_ids_and_existing_folders_are_anchored(tmp_path, monkeypatch):
    from cmedbert.tokenizer.extend import ExtendConfig

    monkeypatch.chdir(tmp_path)
    conf = tmp_path / "conf" / "extend.toml"
    (tmp_path / "conf" / "vocab").mkdir(parents=True)
    conf.write_text('base = "bert-base-chinese"\ncorpus = "c"\n', encoding="utf-8")
    assert load_config(ExtendConfig, conf).base == "bert-base-chinese"
    conf.write_text('base = "vocab"\ncorpus = "c"\n', encoding="utf-8")
    assert load_config(ExtendConfig, conf).base == str(tmp_path / "conf" / "vocab")
    assert resolve_id_or_dir("bert-base-chinese") == "bert-base-chinese"
    assert resolve_id_or_dir("./x") == str(tmp_path / "x")


@pytest.mark.parametrize("old", ["$SHARED/kg/a.txt", "${SHARED}/kg/a.txt"])
def test_old_placeholder_is_one_clear_error_naming_key_and_replacement(tmp_path, old):
    with pytest.raises(ConfigError, match=r"config key 'kg_terms\[0\]'.*no longer supported; write \$\{data_root\}/kg/a.txt"):
        _pack(tmp_path, f'kg_terms = ["{old}"]\n')
    with pytest.raises(ConfigError, match=r"config key 'tokenizer'.*\$\{data_root\}/kg/a.txt"):
        _pack(tmp_path, "", [f"tokenizer={old}"])


def test_old_placeholder_on_the_cli_exits_2_with_one_line(tmp_path):
    res = subprocess.run([sys.executable, "-m", "cmedbert.cli", "tokenizer", "pack", "corpus=c", "tokenizer=t",
                          "kg_terms=['$SHARED/kg/a.txt']", "--out", str(tmp_path / "o")],
                         capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "no longer supported" in lines[0] and "${data_root}/kg/a.txt" in lines[0], res.stderr
    assert not (tmp_path / "o").exists()


def test_finetune_data_dir_defaults_to_the_data_root(tmp_path, monkeypatch):
    from cmedbert.finetune.config import FinetuneConfig

    monkeypatch.setenv("CMEDBERT_SHARED_DATA", str(tmp_path / "d"))
    cfg = load_config(FinetuneConfig, None, ["models=['m']"])
    assert cfg.data_root() == tmp_path / "d" / "cblue"


def test_shipped_configs_use_only_the_one_placeholder():
    for path in (REPO / "configs").rglob("*.to*ml"):
        text = path.read_text(encoding="utf-8")
        assert "$SHARED" not in text and "${SHARED}" not in text, path
