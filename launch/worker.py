"""What every rank runs under the launchers: check the pretrain config hash, then run cmedbert.

    python -m cmedbert.launch.worker [--local_rank=N] pretrain CONFIG [key=value ...] --out RUN_DIR

Two checks before any training code runs, so a node with a stale checkout or another config file
cannot train a different model into the same run:

1. ``cmedbert launch`` computes the hash of the resolved pretrain config on the machine that plans
   the launch and passes it to every node as ``CMEDBERT_CONFIG_HASH``; each rank loads the config
   from its own filesystem and compares.
2. Under torchrun (static or c10d rendezvous) the ranks also compare their hashes with each other
   through the rendezvous store torchrun shares with its workers (``MASTER_ADDR:MASTER_PORT``),
   which catches nodes started with different configs even when (1) was planned per node.
   A rank that fails its own checks still reports, so the others stop at once instead of waiting.

Then the arguments go to ``cmedbert.cli.main`` unchanged; its parser accepts and ignores
``--local_rank`` (the deepspeed launcher's) and the rank comes from the environment.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path
from typing import Mapping, Sequence

from cmedbert.errors import CmedbertError
from cmedbert.launch.plan import HASH_ENV

STORE_PREFIX = "cmedbert_launch/config_hash"
STORE_TIMEOUT_S = 600  # the slowest rank's start-up (imports) must fit in this


def pretrain_args(argv: Sequence[str]) -> tuple[str, list[str]]:
    """(config path, overrides) of a ``pretrain CONFIG [k=v ...] --out DIR`` argument list."""
    from cmedbert.cli import build_parser
    from cmedbert.cliargs import split_config_args

    args = build_parser().parse_args(list(argv))
    if args.command != "pretrain":
        raise CmedbertError(f"launch.worker runs `pretrain`, got {args.command!r}")
    config, overrides = split_config_args(getattr(args, "args", []) or [])
    if config is None:
        raise CmedbertError("launch.worker: no pretrain config file in the arguments")
    return config, overrides


def local_hash(argv: Sequence[str], environ: Mapping[str, str]) -> str:
    """This node's pretrain config hash, checked against ``CMEDBERT_CONFIG_HASH`` if set."""
    from cmedbert.launch.pretrain_link import config_hash_of

    config, overrides = pretrain_args(argv)
    actual = config_hash_of(config, overrides, Path.cwd())
    expected = environ.get(HASH_ENV)
    if expected and actual != expected:
        raise CmedbertError(
            f"rank {environ.get('RANK', '?')} on {socket.gethostname()}: pretrain config {config} "
            f"{overrides or ''} hashes to {actual} here but the launch planned {expected}: the nodes do not "
            f"see the same config (sync the checkout / config file on every node, then launch again)")
    return actual


def compare_across_ranks(mine: dict[str, str], environ: Mapping[str, str]) -> None:
    """Publish this rank's ``{"hash"|"error", "host"}`` in torchrun's shared store and compare with
    every other rank's. Does nothing outside torchrun or with one rank."""
    if environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True" or int(environ.get("WORLD_SIZE", "1")) <= 1:
        return
    from datetime import timedelta

    from torch.distributed import TCPStore

    rank, world = int(environ["RANK"]), int(environ["WORLD_SIZE"])
    store = TCPStore(environ["MASTER_ADDR"], int(environ["MASTER_PORT"]), is_master=False,
                     timeout=timedelta(seconds=STORE_TIMEOUT_S))
    prefix = f"{STORE_PREFIX}/{environ.get('TORCHELASTIC_RUN_ID', '')}/{environ.get('TORCHELASTIC_RESTART_COUNT', '0')}/"
    store.set(prefix + str(rank), json.dumps(mine))
    keys = [prefix + str(r) for r in range(world)]
    store.wait(keys)
    rows = [json.loads(store.get(k)) for k in keys]
    failed = [(r, row) for r, row in enumerate(rows) if "error" in row]
    if failed:
        r, row = failed[0]
        raise CmedbertError(f"rank {r} on {row['host']} cannot start: {row['error']}")
    hashes = {row["hash"] for row in rows}
    if len(hashes) > 1:
        by_hash: dict[str, list[str]] = {}
        for r, row in enumerate(rows):
            by_hash.setdefault(row["hash"], []).append(f"{r}@{row['host']}")
        detail = "; ".join(f"{h}: ranks {', '.join(v)}" for h, v in by_hash.items())
        raise CmedbertError(f"the ranks do not agree on the pretrain config ({detail}): "
                            "every node must see the same config file and overrides")


def check(argv: Sequence[str], environ: Mapping[str, str] = os.environ) -> None:
    host = socket.gethostname()
    try:
        mine = {"hash": local_hash(argv, environ), "host": host}
    except CmedbertError as exc:
        compare_across_ranks({"error": str(exc), "host": host}, environ)  # tell the others first
        raise
    compare_across_ranks(mine, environ)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        check([a for a in argv if not a.startswith(("--local_rank", "--local-rank"))])
    except CmedbertError as exc:
        print(f"cmedbert launch: error: {exc}", file=sys.stderr)
        return 2
    from cmedbert.cli import main as cmedbert_main

    return cmedbert_main(argv)


if __name__ == "__main__":
    sys.exit(main())
