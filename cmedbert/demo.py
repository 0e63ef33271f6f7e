"""`cmedbert demo`: placeholder until it lands."""

from __future__ import annotations

import argparse

from cmedbert.errors import CmedbertError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="demo (not built yet)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    raise CmedbertError("demo is not built yet")
