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
    previous = _catch_sigterm(args.command)
    try:
        rc = args.func(args)
    except CmedbertError as exc:
        print(f"cmedbert {args.command}: error: {' '.join(str(exc).splitlines())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"cmedbert {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return int(rc or 0)


def _catch_sigterm(command: str):
    """On SIGTERM (a scheduler's stop, `kill`): stop this process's own worker processes, remove
    the temporary output folders it is writing (``artifact.atomic_output``), say so on one line
    and exit 143. Done in the handler rather than by raising an exception, which could land
    inside a worker pool's or a logger's lock and hang. Forked workers keep the default action.
    Stages that handle SIGTERM themselves (pretraining writes a checkpoint) install their own
    handler while they run. Returns the handler to restore, or None when not installed."""
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
        from cmedbert.artifact import remove_active_temporaries

        _stop_children()
        removed = remove_active_temporaries()
        print(f"cmedbert {command}: terminated (SIGTERM); removed {len(removed)} temporary output folder(s)",
              file=sys.stderr, flush=True)
        os._exit(143)

    return signal.signal(signal.SIGTERM, handler)


def _stop_children(timeout: float = 10.0) -> None:
    """SIGTERM to this process's direct children (worker pools), then wait for them briefly."""
    import time

    me = str(os.getpid())
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[1] == me:
            children.append(int(stat.parent.name))
    for child in children:
        try:
            os.kill(child, signal.SIGTERM)
        except ProcessLookupError:
            pass
    end = time.monotonic() + timeout
    while children and time.monotonic() < end:
        for child in list(children):
            try:
                done, _ = os.waitpid(child, os.WNOHANG)
            except ChildProcessError:
                done = child
            if done:
                children.remove(child)
        time.sleep(0.05)


if __name__ == "__main__":
    sys.exit(main())
