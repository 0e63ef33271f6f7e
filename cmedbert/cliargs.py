"""The arguments every subcommand shares: ``[CONFIG] [key=value ...] --out DIR``.

Core layer: stage CLI modules import this (not :mod:`cmedbert.cli`, the entry point that loads
them), so no stage depends on the console script.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from cmedbert.errors import CmedbertError


def split_config_args(items: Sequence[str]) -> tuple[str | None, list[str]]:
    """``[CONFIG] [key=value ...]`` -> (config path or None, overrides).

    The first item that is an existing file or has no ``=`` is the config file; the rest
    must be overrides.
    """
    config: str | None = None
    overrides: list[str] = []
    for i, item in enumerate(items):
        if i == 0 and ("=" not in item or Path(item).is_file()):
            config = item
        elif "=" in item:
            overrides.append(item)
        else:
            raise CmedbertError(f"unexpected argument {item!r}: expected key=value")
    return config, overrides


def add_config_args(parser: argparse.ArgumentParser, out: bool = True, out_required: bool = True) -> None:
    """The common stage arguments: ``[CONFIG] [key=value ...] --out DIR``."""
    parser.add_argument("args", nargs="*", metavar="CONFIG|key=value",
                        help="a TOML/YAML/JSON config file, then key=value overrides (dotted keys for nested tables)")
    if out:
        parser.add_argument("--out", required=out_required, type=Path, help="output folder (written atomically)")
