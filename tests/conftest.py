"""Test-wide settings and fixtures.

Real data comes from ../shared/data (or $CMEDBERT_SHARED_DATA). Outside CI a test that needs it
is skipped when it is missing; with CI=true a missing data folder is a failure.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# No network here: never let a hub look-up or wandb try to reach out.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from cmedbert.paths import shared_data_root  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent


def _require(path: Path) -> Path:
    if not path.exists():
        msg = f"shared data not found: {path} (set CMEDBERT_SHARED_DATA)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Root of the shared real data; skips outside CI and fails in CI when missing."""
    return _require(shared_data_root())


@pytest.fixture
def shared_file(shared_data):
    """shared_file("cblue/KUAKE-QIC/KUAKE-QIC_dev.json") -> Path, with the same skip/fail rule."""
    return lambda rel: _require(shared_data / rel)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT
