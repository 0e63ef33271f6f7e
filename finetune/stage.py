"""The finetune stage's declaration (see :mod:`cmedbert.stage`): checkpoints -> CBLUE results."""

from __future__ import annotations

from cmedbert.stage import Input, Stage

FINETUNE = Stage(
    name="finetune", command=("finetune", "run"),
    config="cmedbert.finetune.config:FinetuneConfig", run="cmedbert.finetune.sweep:main",
    inputs=(Input("models", ("pretrain",), external=True),),
    help="fine-tune checkpoints on CBLUE tasks",
)
