"""The ``cmedbert`` console script: one subcommand per stage.

Each stage module exposes ``register(subparsers)``, which adds its parser and sets
``func`` (called with the parsed args). Stage modules import heavy libraries (torch,
transformers, deepspeed) inside their functions, so ``cmedbert --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
from typing import Sequence

from cmedbert import __version__
from cmedbert.cliargs import add_config_args, split_config_args  # noqa: F401  (re-exported)
from cmedbert.errors import CmedbertError

# subcommand -> module providing register(subparsers)
STAGES: dict[str, str] = {
    "corpus": "cmedbert.corpus.cli",
    "tokenizer": "cmedbert.tokenizer.cli",
    "pretrain": "cmedbert.pretrain.cli",
    "launch": "cmedbert.launch.cli",
    "finetune": "cmedbert.finetune.cli",
    "compare": "cmedbert.compare",
    "publish": "cmedbert.publish",
    "demo": "cmedbert.demo",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cmedbert",
        description="Domain-adaptive pretraining of Chinese medical BERT models, stage by stage.",
    )
    parser.add_argument("--version", action="version", version=f"cmedbert {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    # The deepspeed launcher appends --local_rank=N right after the module name; the rank is
    # read from the LOCAL_RANK environment variable instead, so the flag is accepted and ignored.
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module in STAGES.items():
        importlib.import_module(module).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # Never let a hub look-up hang a run on a machine without network unless asked to go online.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    previous = _catch_sigterm()
    try:
        rc = args.func(args)
    except CmedbertError as exc:
        print(f"cmedbert {args.command}: error: {' '.join(str(exc).splitlines())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"cmedbert {args.command}: interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print(f"cmedbert {args.command}: terminated (SIGTERM); partial output removed", file=sys.stderr)
        return 143
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return int(rc or 0)


class Terminated(BaseException):
    """SIGTERM in the CLI process: unwinds like Ctrl-C, so temporary output folders are removed
    (``artifact.atomic_output``) and worker pools are shut down. Stages that handle SIGTERM
    themselves (pretraining writes a checkpoint) install their own handler while they run."""


def _catch_sigterm():
    """Turn SIGTERM into :class:`Terminated` in this process (not in forked workers, which get
    the default action). Returns the handler to restore, or None when not installed."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return None  # someone (an embedding program, a test runner) handles it already
    pid = os.getpid()

    def handler(signum, frame):
        if os.getpid() != pid:  # a forked worker: die as before
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        raise Terminated()

    return signal.signal(signal.SIGTERM, handler)


if __name__ == "__main__":
    sys.exit(main())
