"""`cmedbert tokenizer`: placeholder until the stage lands."""

from __future__ import annotations

import argparse

from cmedbert.errors import CmedbertError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tokenizer", help="tokenizer stage (not built yet)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    raise CmedbertError("the tokenizer stage is not built yet")
