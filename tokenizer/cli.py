"""`cmedbert tokenizer audit|extend|train|pack [CONFIG] [key=value ...] --out DIR`.

    cmedbert tokenizer audit --tokenizer ../shared/data/vocab/bert-base-chinese --corpus CORPUS --out AUDIT
    cmedbert tokenizer extend configs/tokenizer/extend_medical.toml corpus=CORPUS --out TOK
    cmedbert tokenizer train configs/tokenizer/train_general.toml corpus=CORPUS --out TOK
    cmedbert tokenizer pack configs/tokenizer/pack.toml corpus=CORPUS tokenizer=TOK --out PACKED

Config keys are listed with ``cmedbert tokenizer SUBCOMMAND --help``. The stage modules import
only numpy at import time (~75 ms); torch/transformers/jieba load when a subcommand runs.
"""

from __future__ import annotations

import argparse
import importlib
import json

from cmedbert.cli import add_config_args, split_config_args

# subcommand -> (module, config class, one-line help)
COMMANDS = {
    "audit": ("cmedbert.tokenizer.audit", "AuditConfig", "[UNK] rate, fertility and KG coverage of a vocab on a corpus"),
    "extend": ("cmedbert.tokenizer.extend", "ExtendConfig", "add in-domain characters, Latin pieces and (term mode) KG terms to a base vocab"),
    "train": ("cmedbert.tokenizer.train", "TrainConfig", "train an in-domain WordPiece vocab from scratch"),
    "pack": ("cmedbert.tokenizer.pack", "PackConfig", "corpus + tokenizer -> packed token/flag shards for pretraining"),
}


def _key_help(module: str, cls: str) -> str:
    from cmedbert.config import describe

    mod = importlib.import_module(module)
    rows = describe(getattr(mod, cls))
    return "config keys:\n" + "\n".join(f"  {k} = {d}\n      {h}" for k, d, h in rows)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tokenizer", help="audit / extend / train a vocabulary; pack token shards",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cmds = p.add_subparsers(dest="tokenizer_command", metavar="SUBCOMMAND", required=True)
    for name, (module, cls, help_) in COMMANDS.items():
        c = cmds.add_parser(name, help=help_, description=help_, formatter_class=argparse.RawDescriptionHelpFormatter,
                            epilog=_key_help(module, cls))
        add_config_args(c)
        if name == "audit":
            c.add_argument("--tokenizer", help="shortcut for tokenizer=ID_OR_DIR")
            c.add_argument("--corpus", help="shortcut for corpus=DIR")
        c.set_defaults(func=_run, _module=module, _cls=cls)


def _run(args: argparse.Namespace) -> int:
    from cmedbert.config import load_config

    config, overrides = split_config_args(args.args)
    for key in ("tokenizer", "corpus"):
        value = getattr(args, key, None)
        if value:
            overrides.append(f"{key}={json.dumps(str(value))}")
    mod = importlib.import_module(args._module)
    cfg = load_config(getattr(mod, args._cls), config, overrides)
    result = mod.main(cfg, args.out)
    if isinstance(result, dict) and "submitted" in result:  # pack executor=slurm
        print(f"submitted SLURM job(s) {' '.join(result['submitted'])}; {args.out} appears when they end")
        return 0
    print(f"wrote {args.out}")
    return 0
