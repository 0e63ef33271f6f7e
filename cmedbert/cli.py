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
from pathlib import Path
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

        # A worker pool replaces the workers stopped below; a replacement forked while this
        # handler holds a lock would hang forever, orphaned, holding our stderr. Any process
        # forked from now on exits at once instead.
        os.register_at_fork(after_in_child=lambda: os._exit(0))
        _stop_children()
        removed = remove_active_temporaries()
        print(f"cmedbert {command}: terminated (SIGTERM); removed {len(removed)} temporary output folder(s)",
              file=sys.stderr, flush=True)
        os._exit(143)

    return signal.signal(signal.SIGTERM, handler)


def _children() -> list[int]:
    """Live (not zombie) direct children of this process, from /proc."""
    me, kids = str(os.getpid()), []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[1] == me:
            if fields[0] == "Z":
                _reap(int(stat.parent.name))
            else:
                kids.append(int(stat.parent.name))
    return kids


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _stop_children(timeout: float = 10.0) -> None:
    """SIGTERM to this process's direct children (worker pools) until none has been seen for
    0.3 s: a pool's maintenance thread replaces dead workers every 0.1 s, and a replacement left
    behind would finish its task and then fail writing to the gone parent."""
    import time

    end, quiet_since = time.monotonic() + timeout, None
    while time.monotonic() < end:
        kids = _children()
        if not kids:
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since > 0.3:
                return
        else:
            quiet_since = None
            for kid in kids:
                try:
                    os.kill(kid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
                _reap(kid)
        time.sleep(0.03)


if __name__ == "__main__":
    sys.exit(main())
