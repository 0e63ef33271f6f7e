"""Kept for old imports: the data root now lives in :mod:`cmedbert.paths` with the path rule."""

from cmedbert.paths import shared_data_root

__all__ = ["shared_data_root"]
