"""`cmedbert tokenizer audit|extend|train|pack [CONFIG] [key=value ...] --out DIR`.

    cmedbert tokenizer audit --tokenizer ../shared/data/vocab/bert-base-chinese --corpus CORPUS --out AUDIT
    cmedbert tokenizer extend configs/tokenizer/extend_medical.toml corpus=CORPUS --out TOK
    cmedbert tokenizer train configs/tokenizer/train_general.toml corpus=CORPUS --out TOK
    cmedbert tokenizer pack configs/tokenizer/pack.toml corpus=CORPUS tokenizer=TOK --out PACKED
    cmedbert tokenizer verify PACKED      # full sha256 check of packed shards against their manifest

Config keys are listed with ``cmedbert tokenizer SUBCOMMAND --help``. The stage modules import
only numpy at import time (~75 ms); torch/transformers/jieba load when a subcommand runs.
The subcommands are built from the declarations in :mod:`cmedbert.tokenizer.stage`.
"""

from __future__ import annotations

import argparse
import json

from cmedbert.stage import add_command, load_from_args
from cmedbert.tokenizer.stage import COMMANDS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tokenizer", help="audit / extend / train a vocabulary; pack token shards",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cmds = p.add_subparsers(dest="tokenizer_command", metavar="SUBCOMMAND", required=True)
    for name, stage in COMMANDS.items():
        c = add_command(cmds, stage, func=_run)
        if name == "audit":
            c.add_argument("--tokenizer", help="shortcut for tokenizer=ID_OR_DIR")
            c.add_argument("--corpus", help="shortcut for corpus=DIR")
    v = cmds.add_parser("verify", help="full sha256 check of a packed folder against its manifest",
                        description="Every open checks shard sizes and fingerprints; this reads every byte.")
    v.add_argument("folder", help="a packed folder (tokenizer pack --out)")
    v.set_defaults(func=_verify)


def _verify(args: argparse.Namespace) -> int:
    import time

    from cmedbert.tokenizer.packed import open_packed

    t = time.perf_counter()
    n = open_packed(args.folder).verify_full()
    s = time.perf_counter() - t
    print(f"{args.folder}: every file matches its manifest sha256 ({n / 1e6:.1f} MB in {s:.1f} s, "
          f"{n / 1e6 / max(s, 1e-9):.0f} MB/s)")
    return 0


def _run(args: argparse.Namespace) -> int:
    shortcuts = [f"{key}={json.dumps(str(value))}" for key in ("tokenizer", "corpus")
                 if (value := getattr(args, key, None))]
    cfg = load_from_args(args, shortcuts)
    result = args.stage.execute(cfg, args.out)
    if isinstance(result, dict) and "submitted" in result:  # pack executor=slurm
        print(f"submitted SLURM job(s) {' '.join(result['submitted'])}; {args.out} appears when they end")
        return 0
    print(f"wrote {args.out}")
    return 0
