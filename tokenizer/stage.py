"""The tokenizer stages' declarations (see :mod:`cmedbert.stage`): audit, extend, train, pack."""

from __future__ import annotations

from cmedbert.stage import Input, Stage

CORPUS = Input("corpus", ("corpus",))

AUDIT = Stage(
    name="tokenizer-audit", command=("tokenizer", "audit"),
    config="cmedbert.tokenizer.audit:AuditConfig", run="cmedbert.tokenizer.audit:main",
    inputs=(Input("tokenizer", ("tokenizer",), external=True), CORPUS),
    help="[UNK] rate, fertility and KG coverage of a vocab on a corpus",
)
EXTEND = Stage(
    name="tokenizer", command=("tokenizer", "extend"),
    config="cmedbert.tokenizer.extend:ExtendConfig", run="cmedbert.tokenizer.extend:main",
    inputs=(Input("base", ("tokenizer",), external=True), CORPUS),
    help="add in-domain characters, Latin pieces and (term mode) KG terms to a base vocab",
)
TRAIN = Stage(
    name="tokenizer", command=("tokenizer", "train"),
    config="cmedbert.tokenizer.train:TrainConfig", run="cmedbert.tokenizer.train:main",
    inputs=(CORPUS,),
    help="train an in-domain WordPiece vocab from scratch",
)
PACK = Stage(
    name="packed", command=("tokenizer", "pack"),
    config="cmedbert.tokenizer.pack:PackConfig", run="cmedbert.tokenizer.pack:main",
    inputs=(CORPUS, Input("tokenizer", ("tokenizer",), external=True)),
    help="corpus + tokenizer -> packed token/flag shards for pretraining",
)

COMMANDS = {s.command[-1]: s for s in (AUDIT, EXTEND, TRAIN, PACK)}
