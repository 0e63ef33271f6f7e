"""The one path rule of every config (docs/ARCHITECTURE.md, "Paths").

1. ``${data_root}`` at the start of a path is the data root: the config's own ``data_root`` key
   where a stage has one (corpus), else ``$CMEDBERT_SHARED_DATA``, else ``../shared/data`` beside
   the current folder or the checkout.
2. A relative path written in a config FILE is relative to that file's folder
   (:func:`cmedbert.config.load_config` anchors it when it reads the file).
3. A relative path given on the command line (a ``key=value`` override) or in the environment
   (``CMEDBERT_SHARED_DATA``) is relative to the current folder.
4. ``~`` and other ``$NAME`` / ``${NAME}`` environment variables are expanded; the old spellings
   ``$SHARED`` / ``${SHARED}`` are refused with a one-line error naming the replacement.

Config fields that hold paths say so on the field: ``metadata={"path": "path"}`` (a file, folder
or glob) or ``metadata={"path": "id_or_dir"}`` (a Hugging Face hub id or a local folder: a
relative value is taken as a folder only when that folder exists, else it stays a hub id).
"""

from __future__ import annotations

import os
from pathlib import Path

from cmedbert.errors import ConfigError

DATA_ROOT = "${data_root}"
ENV = "CMEDBERT_SHARED_DATA"
_OLD_SPELLINGS = ("$SHARED", "${SHARED}", "$data_root", "${DATA_ROOT}")
_REPO_ROOT = Path(__file__).resolve().parent.parent


def shared_data_root() -> Path:
    """The data root: ``$CMEDBERT_SHARED_DATA`` (a relative value is relative to the current
    folder), else ``../shared/data`` beside the current folder or beside the checkout."""
    env = os.environ.get(ENV)
    if env:
        return Path(os.path.expanduser(env)).absolute()
    for base in (Path.cwd(), _REPO_ROOT):
        cand = base.parent / "shared" / "data"
        if cand.is_dir():
            return cand
    return _REPO_ROOT.parent / "shared" / "data"


def check_spelling(value: str, key: str = "") -> None:
    """Refuse the retired placeholders with one line that names the key and the replacement."""
    for old in _OLD_SPELLINGS:
        if value.startswith(old) and (len(value) == len(old) or value[len(old)] in "/\\"):
            where = f"config key {key!r}: " if key else ""
            raise ConfigError(f"{where}{value!r}: the {old} placeholder is no longer supported; "
                              f"write {DATA_ROOT}{value[len(old):]} (see docs/ARCHITECTURE.md, Paths)")


def is_relative(value: str) -> bool:
    """A plain relative path: not absolute, no placeholder, no ``~``, no ``$VAR``."""
    return not (os.path.isabs(value) or value.startswith(("~", "$")))


def anchor(value: str, folder: str | Path, kind: str = "path", key: str = "") -> str:
    """Rule 2: a relative ``value`` from a config file in ``folder`` as an absolute path (an
    ``id_or_dir`` value only when that folder exists). Anything else is returned unchanged."""
    check_spelling(value, key)
    if not value or not is_relative(value):
        return value
    full = os.path.normpath(os.path.join(os.path.abspath(folder), value))
    if kind == "id_or_dir" and not (os.path.exists(full) or value.startswith(("./", "../"))):
        return value
    return full


def resolve(value: str | Path, data_root: str | Path | None = None, key: str = "") -> Path:
    """Rules 1, 3, 4 for a path about to be used: ``${data_root}``, ``~`` and ``$VARS`` expanded;
    a relative result is relative to the current folder. Returns an absolute path."""
    text = str(value)
    check_spelling(text, key)
    if text.startswith(DATA_ROOT):
        root = Path(os.path.expanduser(os.path.expandvars(str(data_root)))) if data_root else shared_data_root()
        text = str(root.absolute()) + text[len(DATA_ROOT):]
    return Path(os.path.abspath(os.path.expanduser(os.path.expandvars(text))))


def resolve_id_or_dir(value: str, data_root: str | Path | None = None, key: str = "") -> str:
    """A hub id stays as it is; a path (placeholder, absolute, ``~``, ``./``, or an existing
    relative folder) is resolved like :func:`resolve`."""
    check_spelling(value, key)
    if (not is_relative(value)) or value.startswith(("./", "../")) or os.path.exists(value):
        return str(resolve(value, data_root, key))
    return value
