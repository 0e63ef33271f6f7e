"""The stage contract (cmedbert.stage): one declaration per stage drives its CLI subcommand and
the experiment's steps; declared inputs refuse an artifact of the wrong stage."""

from __future__ import annotations

import dataclasses
import typing

import pytest

from cmedbert.artifact import write_manifest
from cmedbert.cli import build_parser
from cmedbert.cli import main as cli_main
from cmedbert.corpus.stage import BUILD
from cmedbert.errors import ArtifactError
from cmedbert.finetune.stage import FINETUNE
from cmedbert.pretrain.stage import PRETRAIN
from cmedbert.stage import resolve
from cmedbert.tokenizer.stage import AUDIT, EXTEND, PACK, TRAIN

DECLARED = [BUILD, AUDIT, EXTEND, TRAIN, PACK, PRETRAIN, FINETUNE]


@pytest.mark.parametrize("stage", DECLARED, ids=lambda s: " ".join(s.command))
def test_every_declaration_resolves_and_its_inputs_are_config_fields(stage):
    assert dataclasses.is_dataclass(stage.config_class) and callable(resolve(stage.run))
    for inp in stage.inputs:
        tp = stage.config_class
        for part in inp.key.split("."):
            hints = typing.get_type_hints(tp)
            assert part in hints, (stage.name, inp.key)
            tp = hints[part]


@pytest.mark.parametrize("stage", DECLARED, ids=lambda s: " ".join(s.command))
def test_the_cli_subcommand_is_built_from_the_declaration(stage, capsys):
    words = list(stage.command) if stage is not FINETUNE else ["finetune", "run"]
    with pytest.raises(SystemExit) as exc:
        cli_main([*words, "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert "config keys:" in text and "--out" in text
    for inp in stage.inputs:
        assert f"  {inp.key}: output of stage" in text


def test_declared_input_refuses_an_artifact_of_another_stage(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    write_manifest(corpus, stage="corpus", config={"x": 1})
    cfg = PACK.build_config({"corpus": str(corpus), "tokenizer": str(corpus)})
    with pytest.raises(ArtifactError, match="config key 'tokenizer'.*'corpus' artifact, expected 'tokenizer'"):
        PACK.check_inputs(cfg)
    rc = cli_main(["tokenizer", "pack", f"corpus={corpus}", f"tokenizer={corpus}", "--out", str(tmp_path / "p")])
    assert rc == 2 and not (tmp_path / "p").exists()


def test_typed_configs_name_the_key_with_its_prefix():
    from cmedbert.errors import ConfigError

    with pytest.raises(ConfigError, match="'pretrain.train.max_steps'"):
        PRETRAIN.build_config({"tokenizer": "t", "data": {"path": "p"}, "train": {"max_steps": "many"}}, "pretrain")


def test_parser_has_every_stage_subcommand():
    text = build_parser().format_help()
    for word in ("corpus", "tokenizer", "pretrain", "finetune", "compare", "publish", "demo", "launch"):
        assert word in text
