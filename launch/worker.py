"""What every rank runs under the launchers: check the pretrain config hash, then run cmedbert.

    python -m launch.worker [--local_rank=N] pretrain CONFIG [key=value ...] --out RUN_DIR

``cmedbert launch`` computes the hash of the resolved pretrain config on the launching machine
and passes it to every node as ``CMEDBERT_CONFIG_HASH``. Each rank loads the config from its own
filesystem and refuses to start if the hash differs (a node with a stale checkout or a different
config file would otherwise train a different model in the same run). Then the arguments go to
``cmedbert.cli.main`` unchanged; its parser accepts and ignores ``--local_rank`` (the deepspeed
launcher's) and the rank comes from the environment.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path
from typing import Sequence

from cmedbert.errors import CmedbertError
from launch.plan import HASH_ENV


def pretrain_args(argv: Sequence[str]) -> tuple[str, list[str]]:
    """(config path, overrides) of a ``pretrain CONFIG [k=v ...] --out DIR`` argument list."""
    from cmedbert.cli import build_parser, split_config_args

    args = build_parser().parse_args(list(argv))
    if args.command != "pretrain":
        raise CmedbertError(f"launch.worker runs `pretrain`, got {args.command!r}")
    config, overrides = split_config_args(getattr(args, "args", []) or [])
    if config is None:
        raise CmedbertError("launch.worker: no pretrain config file in the arguments")
    return config, overrides


def check_config_hash(argv: Sequence[str], environ=os.environ) -> str | None:
    """Compare this node's pretrain config hash with ``CMEDBERT_CONFIG_HASH`` (if set)."""
    from launch.pretrain_link import config_hash_of

    expected = environ.get(HASH_ENV)
    if not expected:
        return None
    config, overrides = pretrain_args(argv)
    actual = config_hash_of(config, overrides, Path.cwd())
    if actual != expected:
        rank = environ.get("RANK", "?")
        raise CmedbertError(
            f"rank {rank} on {socket.gethostname()}: pretrain config {config} {overrides or ''} hashes to "
            f"{actual} here but the launch planned {expected}: the nodes do not see the same config "
            f"(sync the checkout / config file on every node, then launch again)")
    return actual


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        check_config_hash([a for a in argv if not a.startswith(("--local_rank", "--local-rank"))])
    except CmedbertError as exc:
        print(f"cmedbert launch: error: {exc}", file=sys.stderr)
        return 2
    from cmedbert.cli import main as cmedbert_main

    return cmedbert_main(argv)


if __name__ == "__main__":
    sys.exit(main())
