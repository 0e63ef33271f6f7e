"""Where the real data lives (../shared/data by default, or $CMEDBERT_SHARED_DATA)."""

from __future__ import annotations

import os
from pathlib import Path

_REPO_ROOT = Path(__file__).resolve().parent.parent


def shared_data_root() -> Path:
    """The shared data folder: $CMEDBERT_SHARED_DATA, else ../shared/data beside the checkout."""
    env = os.environ.get("CMEDBERT_SHARED_DATA")
    if env:
        return Path(env)
    for base in (Path.cwd(), _REPO_ROOT):
        cand = base.parent / "shared" / "data"
        if cand.is_dir():
            return cand
    return _REPO_ROOT.parent / "shared" / "data"
