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

from cmedbert.pretrain.stage import PRETRAIN
from cmedbert.stage import add_command, load_from_args


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, PRETRAIN, func=_run, description=__doc__)  # config: plain dataclasses, no torch import
    # the deepspeed launcher passes --local_rank=N after the subcommand too; the rank comes from env
    p.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--print-config", action="store_true", help="print the resolved config as JSON and exit")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="resume without checking that the checkpoint holds only tensors and DeepSpeed's own types "
                        "(same as checkpoint.trust_checkpoint=true; only for checkpoints you made yourself: "
                        "DeepSpeed unpickles them, and a planted file can run code)")


def _run(args: argparse.Namespace) -> int:
    from cmedbert.config import to_dict

    cfg = load_from_args(args, ["checkpoint.trust_checkpoint=true"] if args.trust_checkpoint else [])
    if args.print_config:
        print(json.dumps(to_dict(cfg), indent=2, ensure_ascii=False))
        return 0
    result = args.stage.execute(cfg, args.out)
    if result.get("status") == "interrupted":
        print(f"cmedbert pretrain: interrupted at step {result['step']}; checkpoint {result['checkpoint']} "
              f"written, re-run the same command to resume")
    return 0
