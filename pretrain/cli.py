"""`cmedbert pretrain [CONFIG] [key=value ...] --out RUN_DIR`

Run alone for one process, or under torchrun / the deepspeed launcher for several:

    torchrun --nproc_per_node 8 -m cmedbert.cli pretrain configs/pretrain/base_continual.toml --out runs/cmed-base
    deepspeed --num_gpus 8 --module cmedbert.cli pretrain configs/pretrain/base_continual.toml --out runs/cmed-base

Re-running on an existing run folder resumes from ``checkpoints/latest``; a finished run is
not retrained. SIGTERM / SIGINT write a checkpoint and exit 0 (a preempted job can requeue).
"""

from __future__ import annotations

import argparse
import json

from cmedbert.cli import add_config_args, split_config_args


def register(sub: argparse._SubParsersAction) -> None:
    from cmedbert.config import describe
    from cmedbert.pretrain.config import PretrainConfig  # plain dataclasses: no torch import

    keys = "\n".join(f"  {k} = {d}\n      {h}" for k, d, h in describe(PretrainConfig))
    p = sub.add_parser("pretrain", help="MLM pretraining through DeepSpeed (scratch or continual), resumable",
                       description=__doc__, epilog="config keys:\n" + keys,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(p)
    # the deepspeed launcher passes --local_rank=N after the subcommand too; the rank comes from env
    p.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--print-config", action="store_true", help="print the resolved config as JSON and exit")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="resume without checking that the checkpoint holds only tensors and DeepSpeed's own types "
                        "(same as checkpoint.trust_checkpoint=true; only for checkpoints you made yourself: "
                        "DeepSpeed unpickles them, and a planted file can run code)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from cmedbert.config import load_config, to_dict
    from cmedbert.pretrain.config import PretrainConfig

    path, overrides = split_config_args(args.args)
    if args.trust_checkpoint:
        overrides = [*overrides, "checkpoint.trust_checkpoint=true"]
    cfg = load_config(PretrainConfig, path, overrides)
    if args.print_config:
        print(json.dumps(to_dict(cfg), indent=2, ensure_ascii=False))
        return 0
    from cmedbert.pretrain.train import main

    result = main(cfg, args.out)
    if result.get("status") == "interrupted":
        print(f"cmedbert pretrain: interrupted at step {result['step']}; checkpoint {result['checkpoint']} "
              f"written, re-run the same command to resume")
    return 0
