"""The pretrain stage's declaration (see :mod:`cmedbert.stage`): tokenizer + packed data -> run folder."""

from __future__ import annotations

from cmedbert.stage import Input, Stage

PRETRAIN = Stage(
    name="pretrain", command=("pretrain",),
    config="cmedbert.pretrain.config:PretrainConfig", run="cmedbert.pretrain.train:main",
    inputs=(Input("tokenizer", ("tokenizer",), external=True), Input("data.path", ("packed",)),
            Input("data.phases", ("packed",)),
            Input("init_from", ("pretrain",), external=True)),
    help="MLM pretraining through DeepSpeed (scratch or continual), resumable",
)
