"""Publish, part 1: checks of the inputs (repo id, model folder, run manifest, results rows).

Nothing here writes anything; every refusal is a CmedbertError naming the file and the reason.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

from cmedbert.errors import CmedbertError
from cmedbert.finetune import results

log = logging.getLogger("cmedbert.publish")

# Files a Hugging Face BERT folder may hold that are safe to publish (no code, no pickles).
CONFIG_FILES = ("config.json", "generation_config.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json",
                   "added_tokens.json")
EXTRA_FILES = ("extension.json",)
WEIGHT_INDEX = "model.safetensors.index.json"
# Formats that unpickle on load: refused, whatever they are named.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib")
PICKLE_MAGIC = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")  # pickle protocols 2-5
ZIP_MAGIC = b"PK\x03\x04"  # torch.save's default zip container (holds a pickle)
TEXT_OR_SAFE_SUFFIXES = (".safetensors", ".json", ".txt", ".md", ".jinja", ".model", ".yaml", ".yml", ".jsonl")

REPO_ID_RE = re.compile(r"^(?P<ns>[A-Za-z0-9][A-Za-z0-9_.-]{0,95})/(?P<name>[A-Za-z0-9][A-Za-z0-9_.-]{0,95})$")


def check_repo_id(repo_id: str) -> tuple[str, str]:
    """``ORG/NAME`` in the Hub's allowed form, else a CmedbertError saying why."""
    m = REPO_ID_RE.match(repo_id or "")
    if not m or "--" in repo_id or ".." in repo_id or repo_id.endswith((".git", ".ipynb")) or repo_id.endswith((".", "-")):
        raise CmedbertError(
            f"config key 'repo_id': {repo_id!r} is not of the form ORG/NAME (letters, digits, '-', '_', '.'; "
            "no '--' or '..'; at most 96 characters each side)")
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        raise CmedbertError(f"config key 'repo_id': {repo_id!r}: {exc}") from None
    return m["ns"], m["name"]


def _is_pickle(path: Path) -> bool:
    if path.suffix.lower() in PICKLE_SUFFIXES:
        return True
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError:
        return False
    if path.suffix.lower() in TEXT_OR_SAFE_SUFFIXES:
        # safetensors starts with a little-endian header length that may look like pickle magic;
        # a pickle disguised under these names fails the load check in verify_upload
        return False
    return head[:2] in PICKLE_MAGIC or head == ZIP_MAGIC


def check_model_dir(model_dir: Path) -> dict[str, list[str]]:
    """The files to publish, by role. Refuses pickles, missing weights/config/tokenizer."""
    if not model_dir.is_dir():
        raise CmedbertError(f"model folder not found: {model_dir}")
    files = sorted(p for p in model_dir.iterdir() if p.is_file())
    pickles = [p.name for p in files if _is_pickle(p)]
    if pickles:
        raise CmedbertError(
            f"{model_dir}: refusing pickled files {', '.join(pickles)} (loading a pickle can run code). "
            "Publish safetensors only: re-save with model.save_pretrained(dir, safe_serialization=True) and "
            "remove the pickled files from the folder")
    names = {p.name for p in files}
    weights = sorted(n for n in names if n.endswith(".safetensors"))
    if not weights:
        raise CmedbertError(f"{model_dir}: no *.safetensors weights (expected model.safetensors)")
    if len(weights) > 1 and WEIGHT_INDEX not in names:
        raise CmedbertError(f"{model_dir}: {len(weights)} safetensors shards but no {WEIGHT_INDEX}")
    if "config.json" not in names:
        raise CmedbertError(f"{model_dir}: no config.json (not a Hugging Face model folder)")
    try:
        hf_config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CmedbertError(f"{model_dir / 'config.json'}: invalid JSON: {exc}") from None
    if not isinstance(hf_config, dict) or "model_type" not in hf_config:
        raise CmedbertError(f"{model_dir / 'config.json'}: no model_type: this is not a Hugging Face model config "
                            "(a cmedbert run folder? pass RUN/model)")
    tokenizer = [n for n in TOKENIZER_FILES if n in names]
    if not ({"tokenizer.json", "vocab.txt"} & set(tokenizer)):
        raise CmedbertError(f"{model_dir}: no tokenizer files (tokenizer.json or vocab.txt): save the tokenizer "
                            "into the model folder with tokenizer.save_pretrained(dir)")
    return {
        "weights": weights + ([WEIGHT_INDEX] if WEIGHT_INDEX in names else []),
        "config": [n for n in CONFIG_FILES if n in names],
        "tokenizer": tokenizer,
        "extra": [n for n in EXTRA_FILES if n in names],
        "skipped": sorted(names - set(weights) - {WEIGHT_INDEX} - set(CONFIG_FILES) - set(TOKENIZER_FILES)
                          - set(EXTRA_FILES)),
    }



# ------------------------------------------------------------------------- provenance / results
def _read_json(path: Path) -> Any | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        log.warning("could not read %s; leaving it out of the model card", path)
        return None


def run_manifest(model_dir: Path) -> dict[str, Any] | None:
    """The pretrain run's manifest when ``model_dir`` is RUN/model (or a manifest in the folder)."""
    for cand in (model_dir.parent / "manifest.json", model_dir / "manifest.json"):
        if cand.is_file():
            m = _read_json(cand)
            if isinstance(m, dict) and (cand.parent != model_dir.parent or model_dir.name == "model"
                                        or m.get("stage") == "pretrain"):
                return m
    return None


def input_manifests(manifest: dict[str, Any] | None, depth: int = 3) -> list[dict[str, Any]]:
    """Manifests of the run's inputs (tokenizer, packed data, their corpus...), read defensively."""
    out: list[dict[str, Any]] = []
    seen: set[str] = set()

    def walk(m: dict[str, Any], d: int) -> None:
        if d <= 0:
            return
        for entry in m.get("inputs") or []:
            path = entry.get("path") if isinstance(entry, dict) else entry
            if not isinstance(path, str):
                continue
            mp = Path(path) / "manifest.json"
            if str(mp) in seen or not mp.is_file():
                continue
            seen.add(str(mp))
            sub = _read_json(mp)
            if isinstance(sub, dict):
                out.append({"path": path, **sub})
                walk(sub, d - 1)

    if manifest:
        walk(manifest, depth)
    return out


def _same_dir(a: str | Path, b: Path, base: Path | None = None) -> bool:
    for cand in ([Path(a)] + ([base / a] if base is not None else [])):
        try:
            if cand.exists() and cand.resolve() == b.resolve():
                return True
        except OSError:
            pass
    return False


def checkpoint_names(model_dir: Path, results_file: Path, explicit: str | None) -> set[str]:
    """Names under which ``model_dir`` appears in ``results_file``'s rows."""
    if explicit:
        return {explicit}
    names: set[str] = set()
    run_dir = model_dir.parent if model_dir.name == "model" else None
    fm = results_file.parent / "manifest.json"
    if fm.is_file():
        m = _read_json(fm) or {}
        for name, path in (m.get("checkpoints") or {}).items():
            if _same_dir(path, model_dir, results_file.parent) or (run_dir and _same_dir(path, run_dir)):
                names.add(name)
        if m.get("checkpoints"):
            return names
    names.add(run_dir.name if run_dir else model_dir.name)
    names.add(str(model_dir))
    return names


def model_results(files: list[Path], model_dir: Path, explicit: str | None = None) -> list[dict[str, Any]]:
    """Rows of ``model_dir`` from results.jsonl files (read and validated by finetune.results:
    bad lines are errors naming file:line)."""
    rows: list[dict[str, Any]] = []
    for f in files:
        names = checkpoint_names(model_dir, f, explicit) if f.is_file() else set()
        rows += [r for r in results.read_rows([f])
                 if r["checkpoint"] in names or _same_dir(str(r["checkpoint"]), model_dir, f.parent)]
    return rows


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean/std over seeds per (task, split, metric) of one model's rows (its names may differ
    between files); warns when rows of several fine-tuning configs are averaged together."""
    summary = results.summarize(rows, keys=("task", "split", "metric"))
    for s in summary:
        if len(s["config_hashes"]) > 1:
            log.warning("%s %s %s: rows from %d fine-tuning configs (%s) averaged together", s["task"], s["split"],
                        s["metric"], len(s["config_hashes"]), ", ".join(s["config_hashes"]))
    return summary


def publish_config_hash(model_dir: Path, manifest: dict[str, Any] | None) -> str:
    """The run's config hash (what the commit message names); without a run, a hash of the HF config."""
    if manifest and manifest.get("config_hash"):
        return str(manifest["config_hash"])
    from cmedbert.config import config_hash

    return config_hash(json.loads((model_dir / "config.json").read_text(encoding="utf-8")))
