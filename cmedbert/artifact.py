"""Output folders and their manifests.

Every stage writes one folder. It is built under a temporary sibling name and renamed into
place only when complete, so a failed run never leaves a half-written output behind. Each
folder carries ``config.json`` (the resolved config) and ``manifest.json``:

    schema_version, stage, created, cmedbert_version, git_commit, config, config_hash,
    seed, inputs [{path, sha256 | manifest_hash}], outputs [{path, sha256, bytes}],
    counts {...}, versions {python, torch, ...}, plus stage-specific extras.

Stages refuse inputs whose manifest does not match (:func:`read_manifest`).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import glob
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import tempfile
from dataclasses import is_dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import cmedbert
from cmedbert.config import config_hash, to_dict
from cmedbert.errors import ArtifactError, CmedbertError

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
CONFIG = "config.json"


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def atomic_output(out: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary folder next to ``out``; rename it to ``out`` on success.

    On any exception the temporary folder is removed and ``out`` is left as it was; so is it on
    SIGTERM (the CLI's handler calls :func:`remove_active_temporaries`). A temporary folder a killed run (SIGKILL, power loss)
    left behind is named after its process (``.OUT.tmp-PID@HOST-*``) and removed by the next
    run on that host once the process is gone (with a log line saying so).
    An existing non-empty ``out`` is an error unless ``overwrite`` (then it is replaced
    only after the new folder is complete).
    """
    out = Path(out).absolute()
    check_output_folder(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-{os.getpid()}@{_host()}-", dir=out.parent))
    _ACTIVE.add(tmp)
    try:
        try:
            yield tmp
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if out.exists():
            trash = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-{os.getpid()}@{_host()}-", dir=out.parent))
            os.replace(out, trash / "old")
            os.replace(tmp, out)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, out)
    finally:
        _ACTIVE.discard(tmp)


_ACTIVE: set[Path] = set()  # temporary folders of atomic_output blocks running in this process


def die_with_parent(parent: int) -> None:
    """Called first in a worker process started by ``parent``: the kernel kills the worker
    (SIGKILL) when ``parent`` exits, so no worker outlives a build that was stopped (SIGTERM
    handler, crash) and keeps its stderr or a lock. Linux only; elsewhere a no-op."""
    if os.getpid() == parent or not os.path.exists("/proc/self"):
        return
    import ctypes
    import signal

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before the line above: nobody will signal us
        os._exit(1)


def remove_active_temporaries() -> list[Path]:
    """Remove the temporary folders of the atomic_output blocks in progress (the CLI's SIGTERM
    handler calls this just before the process exits)."""
    removed = []
    for tmp in list(_ACTIVE):
        shutil.rmtree(tmp, ignore_errors=True)
        _ACTIVE.discard(tmp)
        removed.append(tmp)
    return removed


def check_output_folder(out: str | Path, overwrite: bool = False, hint: str = "choose another --out or remove it") -> None:
    """One clear line, before any work, when ``out`` cannot be an output folder: it (or a folder
    above it) is a file, or it is a non-empty folder and ``overwrite`` is off (``hint`` says what
    to do; commands with an --overwrite flag mention it)."""
    out = Path(out).absolute()
    for p in (out, *out.parents):
        if p.exists():
            if not p.is_dir():
                what = "is a file" if p == out else f"is inside {p}, which is a file"
                raise CmedbertError(f"--out {out} {what}, not a folder: choose a folder path")
            break
    if out.exists() and not overwrite and any(out.iterdir()):
        raise CmedbertError(f"output folder {out} already exists and is not empty: {hint}")


def _host() -> str:
    return platform.node().replace("/", "_") or "localhost"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temporaries(out: Path) -> list[Path]:
    """Remove ``.OUT.tmp-PID@HOST-*`` / ``.OUT.old-PID@HOST-*`` folders next to ``out`` whose
    process (on this host) no longer runs: what a killed run left. Returns what was removed."""
    import logging

    pattern = re.compile(r"^\.%s\.(?:tmp|old)-(\d+)@(.*)-[^-]+$" % re.escape(out.name))
    removed = []
    for p in out.parent.glob(f".{glob.escape(out.name)}.*-*"):
        m = pattern.match(p.name)
        if m and p.is_dir() and m.group(2) == _host() and not _alive(int(m.group(1))):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
            logging.getLogger(__name__).warning("removed %s, left by an interrupted run (process %s is gone)",
                                                p, m.group(1))
    return removed


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write a file via a temporary name + rename (readers never see a partial file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, Any]]:
    """(line number, value) of each non-empty line of a JSON-lines file; a malformed line is an
    :class:`ArtifactError` naming the file and line."""
    path = Path(path)
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as exc:
                raise ArtifactError(f"{path}:{lineno}: invalid JSON: {exc.msg}") from None


def read_jsonl(path: str | Path) -> list[Any]:
    return [value for _, value in iter_jsonl(path)]


def git_commit() -> str | None:
    """The commit of the cmedbert source tree, if it is a git checkout (else None)."""
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    commit = out.stdout.strip()
    dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True, timeout=5).stdout.strip()
    return commit + ("-dirty" if dirty else "")


def package_versions() -> dict[str, str | None]:
    from importlib import metadata

    names = ["torch", "transformers", "deepspeed", "tokenizers", "datasets", "accelerate", "jieba",
             "numpy", "safetensors", "huggingface_hub"]
    out: dict[str, str | None] = {"python": platform.python_version(), "cmedbert": cmedbert.__version__}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def describe_input(path: str | Path) -> dict[str, Any]:
    """An input entry: a folder with a manifest is identified by the manifest's hash,
    a file by its sha256."""
    path = Path(path)
    if path.is_dir():
        m = path / MANIFEST
        if m.is_file():
            return {"path": str(path), "manifest_hash": sha256_file(m)}
        return {"path": str(path), "sha256": None}
    if not path.exists():
        raise ArtifactError(f"input not found: {path}")
    return {"path": str(path), "sha256": sha256_file(path)}


def describe_outputs(folder: Path, files: Iterable[str | Path] | None = None) -> list[dict[str, Any]]:
    """sha256 and size of output files (relative paths). Default: every file but the manifest."""
    folder = Path(folder)
    if files is None:
        files = sorted(p.relative_to(folder) for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)
    rows = []
    for rel in files:
        p = folder / rel
        rows.append({"path": str(rel), "sha256": sha256_file(p), "bytes": p.stat().st_size})
    return rows


def write_manifest(folder: str | Path, *, stage: str, config: Any, inputs: Iterable[Any] = (),
                   counts: dict[str, Any] | None = None, seed: int | None = None,
                   outputs: list[dict[str, Any]] | None = None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write ``config.json`` and ``manifest.json`` into ``folder`` and return the manifest.

    ``inputs`` are paths (hashed here) or ready dicts. ``outputs`` defaults to hashing every
    file in the folder, which stages with very large outputs should replace with a list.
    """
    folder = Path(folder)
    cfg = to_dict(config) if is_dataclass(config) else dict(config)
    atomic_write_text(folder / CONFIG, json.dumps(cfg, indent=2, ensure_ascii=False) + "\n")
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "stage": stage,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "cmedbert_version": cmedbert.__version__,
        "git_commit": git_commit(),
        "config": cfg,
        "config_hash": config_hash(cfg, type(config) if is_dataclass(config) else None),
        "seed": seed,
        "inputs": [i if isinstance(i, dict) else describe_input(i) for i in inputs],
        "outputs": outputs if outputs is not None else describe_outputs(folder),
        "counts": counts or {},
        "versions": package_versions(),
    }
    if extra:
        manifest.update(extra)
    atomic_write_text(folder / MANIFEST, json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    return manifest


def read_manifest(folder: str | Path, stage: str | None = None, verify_outputs: bool = False) -> dict[str, Any]:
    """Read and check an artifact folder's manifest.

    Raises :class:`ArtifactError` if the folder or manifest is missing, the schema version or
    stage differs, or (with ``verify_outputs``) a listed output is missing or changed.
    """
    folder = Path(folder)
    path = folder / MANIFEST
    if not folder.is_dir():
        raise ArtifactError(f"artifact folder not found: {folder}")
    if not path.is_file():
        raise ArtifactError(f"{folder} has no {MANIFEST}: not a cmedbert artifact (or an incomplete one)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{path}: invalid JSON at line {exc.lineno}: {exc.msg}") from None
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise ArtifactError(f"{path}: schema_version {manifest.get('schema_version')!r}, expected {SCHEMA_VERSION}")
    if stage is not None and manifest.get("stage") != stage:
        raise ArtifactError(f"{folder}: is a {manifest.get('stage')!r} artifact, expected {stage!r}")
    if verify_outputs:
        for row in manifest.get("outputs", []):
            p = folder / row["path"]
            if not p.is_file():
                raise ArtifactError(f"{folder}: output {row['path']} listed in manifest is missing")
            if row.get("bytes") is not None and p.stat().st_size != row["bytes"]:
                raise ArtifactError(f"{folder}: output {row['path']} has {p.stat().st_size} bytes, manifest says {row['bytes']}")
            if row.get("sha256") and sha256_file(p) != row["sha256"]:
                raise ArtifactError(f"{folder}: output {row['path']} does not match its sha256 in the manifest")
    return manifest


def manifest_hash(folder: str | Path) -> str:
    """The sha256 of a folder's manifest.json: how later stages pin the artifact they used."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise ArtifactError(f"{folder} has no {MANIFEST}")
    return sha256_file(path)
