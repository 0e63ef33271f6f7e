"""`cmedbert publish`: a checked Hugging Face upload folder with a model card, then a push.

    cmedbert publish runs/med-continual/model --repo-id my-org/cmedbert-small [--private]
        [--revision R] [--dry-run] [--results finetune/results.jsonl ...] [--out UPLOAD_DIR]

Steps (``main`` reads in this order):
1. check the inputs: repo id form, model folder (safetensors weights only, never pickles;
   config.json; tokenizer files), results files;
2. build the upload folder atomically: weights, config, tokenizer files, ``extension.json``
   (if the tokenizer was extended), ``cmedbert.json`` (provenance: hashes of every file) and
   ``README.md``, the model card (YAML metadata with the CBLUE ``model-index``; training data,
   tokenizer, training config, intended use, limitations, not for clinical decisions);
3. verify it: the folder loads with AutoModelForMaskedLM / AutoTokenizer, its logits equal the
   source's, and a fill-mask pipeline gives the same top predictions on medical sentences;
4. unless ``--dry-run``: ``HfApi().create_repo`` (+ ``create_branch`` for a revision other
   than main) and ``upload_folder`` with the config hash in the commit message.

The token is resolved by huggingface_hub itself (HF_TOKEN, then the login cache): this module
only asks whether one exists and never prints, logs or writes it.

The upload folder deliberately carries no cmedbert ``manifest.json``/``config.json`` pair: its
``config.json`` must be the model's Hugging Face config. ``cmedbert.json`` holds the provenance.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
import shutil
import statistics
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cmedbert.artifact import iter_jsonl
from cmedbert.errors import CmedbertError

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

DEFAULT_SENTENCES = (
    "患者确诊2型糖尿病后需要长期服用二甲双[MASK]控制血糖。",
    "冠状动脉粥样硬化的典型症状是活动后胸[MASK]。",
    "孩子发烧超过38.5℃可以按10mg/kg服用布洛[MASK]。",
    "复查糖化血红蛋白HbA1c 6.5%，提示血[MASK]控制不理想。",
)

# CBLUE task -> Hugging Face task type for the model-index
TASK_TYPES = {
    "KUAKE-QIC": "text-classification", "KUAKE-QQR": "text-classification",
    "KUAKE-QTR": "text-classification", "CHIP-CTC": "text-classification",
    "CHIP-STS": "text-classification", "CMeEE": "token-classification",
    "CMeEE-V2": "token-classification", "CMeIE": "token-classification",
    "CHIP-CDN": "text-classification", "CHIP-CDEE": "token-classification",
}


@dataclass
class PublishConfig:
    model_dir: str = field(metadata={"help": "Hugging Face model folder to publish (a pretrain run's RUN/model)"})
    repo_id: str = field(metadata={"help": "Hub repository, ORG/NAME"})
    private: bool = field(default=False, metadata={"help": "create the repository as private"})
    revision: str | None = field(default=None, metadata={"help": "branch to push to (created if missing); default main"})
    dry_run: bool = field(default=False, metadata={"help": "build and verify the upload folder, list it, no network"})
    results: list[str] = field(default_factory=list, metadata={
        "help": "finetune results.jsonl files; rows of this checkpoint go into the model card (mean over seeds)"})
    checkpoint_name: str | None = field(default=None, metadata={
        "help": "the checkpoint name used in results.jsonl (default: found via the finetune manifest, "
                "else the run folder's name)"})
    out: str | None = field(default=None, metadata={"help": "upload folder to build (default: a new temporary folder)"})
    license: str = field(default="apache-2.0", metadata={"help": "license tag of the model card"})
    datasets: list[str] = field(default_factory=list, metadata={"help": "dataset ids for the card's `datasets` metadata"})
    sentences: list[str] = field(default_factory=lambda: list(DEFAULT_SENTENCES), metadata={
        "help": "sentences with [MASK] for the fill-mask check (source vs upload folder)"})
    top_k: int = field(default=5, metadata={"help": "fill-mask predictions compared per sentence"})

    def validate(self) -> None:
        check_repo_id(self.repo_id)
        if self.revision is not None and (not self.revision.strip() or re.search(r"\s|\.\.|^/|/$", self.revision)):
            raise CmedbertError(f"--revision {self.revision!r} is not a valid branch name")
        if self.top_k < 1:
            raise CmedbertError("top_k must be at least 1")


# ----------------------------------------------------------------------------------- checks
def check_repo_id(repo_id: str) -> tuple[str, str]:
    """``ORG/NAME`` in the Hub's allowed form, else a CmedbertError saying why."""
    m = REPO_ID_RE.match(repo_id or "")
    if not m or "--" in repo_id or ".." in repo_id or repo_id.endswith((".git", ".ipynb")) or repo_id.endswith((".", "-")):
        raise CmedbertError(
            f"--repo-id {repo_id!r} is not of the form ORG/NAME (letters, digits, '-', '_', '.'; "
            "no '--' or '..'; at most 96 characters each side)")
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        raise CmedbertError(f"--repo-id {repo_id!r}: {exc}") from None
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


def read_results(files: list[Path], model_dir: Path, explicit: str | None = None) -> list[dict[str, Any]]:
    """Rows of ``model_dir`` from results.jsonl files; bad lines are errors naming file and line."""
    rows: list[dict[str, Any]] = []
    keys = ("checkpoint", "task", "seed", "split", "metric", "value")
    for f in files:
        if not f.is_file():
            raise CmedbertError(f"results file not found: {f}")
        names = checkpoint_names(model_dir, f, explicit)
        for n, row in iter_jsonl(f):
            missing = [k for k in keys if not isinstance(row, dict) or k not in row]
            if missing:
                raise CmedbertError(f"{f}:{n}: result row lacks {', '.join(missing)}")
            if row["checkpoint"] in names or _same_dir(str(row["checkpoint"]), model_dir, f.parent):
                rows.append(row)
    return rows


def summarize_results(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean/std over seeds per (task, split, metric); a seed seen twice counts once (last wins)."""
    dedup: dict[tuple, dict[str, Any]] = {}
    for r in rows:
        dedup[(r["task"], r["split"], r["metric"], r["seed"], r.get("config_hash"))] = r
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in dedup.values():
        groups.setdefault((r["task"], r["split"], r["metric"]), []).append(r)
    out = []
    for (task, split, metric), rs in sorted(groups.items()):
        vals = [float(r["value"]) for r in rs if isinstance(r["value"], (int, float)) and math.isfinite(r["value"])]
        if not vals:
            continue
        hashes = sorted({str(r.get("config_hash")) for r in rs if r.get("config_hash")})
        if len(hashes) > 1:
            log.warning("%s %s %s: rows from %d fine-tuning configs (%s) averaged together",
                        task, split, metric, len(hashes), ", ".join(hashes))
        out.append({"task": task, "split": split, "metric": metric, "mean": statistics.fmean(vals),
                    "std": statistics.stdev(vals) if len(vals) > 1 else 0.0, "n": len(vals),
                    "seeds": sorted({r["seed"] for r in rs}, key=str), "config_hashes": hashes,
                    # "CBLUE" only for rows scored on the official files (finetune.provenance)
                    "official": all(bool((r.get("data") or {}).get("official")) for r in rs)})
    return out


def publish_config_hash(model_dir: Path, manifest: dict[str, Any] | None) -> str:
    """The run's config hash (what the commit message names); without a run, a hash of the HF config."""
    if manifest and manifest.get("config_hash"):
        return str(manifest["config_hash"])
    from cmedbert.config import config_hash

    return config_hash(json.loads((model_dir / "config.json").read_text(encoding="utf-8")))


# ------------------------------------------------------------------------------- model card
def _scrub(obj: Any) -> Any:
    """Local absolute paths reduced to their last part: a public card should not show a home folder."""
    if isinstance(obj, dict):
        return {k: _scrub(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_scrub(v) for v in obj]
    if isinstance(obj, str) and (obj.startswith(("/", "~")) or re.match(r"^[A-Za-z]:\\", obj)) and len(obj) > 1:
        return Path(obj).name or obj
    return obj


def _param_count(model_dir: Path, weights: list[str]) -> int | None:
    try:
        from safetensors import safe_open

        total = 0
        for w in weights:
            if not w.endswith(".safetensors"):
                continue
            with safe_open(str(model_dir / w), framework="pt") as fh:
                for k in fh.keys():
                    total += math.prod(fh.get_slice(k).get_shape())
        return total
    except Exception:  # a count is a nicety; verification below is what guards the weights
        return None


def _fmt_int(n: Any) -> str:
    return f"{n:,}" if isinstance(n, int) else str(n)


def card_metadata(cfg: PublishConfig, summary: list[dict[str, Any]], extension: dict[str, Any] | None,
                  manifest: dict[str, Any] | None, datasets: list[str]):
    from huggingface_hub import EvalResult, ModelCardData

    name = cfg.repo_id.split("/", 1)[1]
    from cmedbert.finetune.provenance import benchmark_label

    evals = [EvalResult(task_type=TASK_TYPES.get(s["task"], "other"),
                        dataset_type="cblue" if s.get("official") else "cblue-format",
                        dataset_name=benchmark_label(s["task"], bool(s.get("official"))),
                        dataset_config=s["task"], dataset_split=s["split"],
                        metric_type=s["metric"], metric_value=round(s["mean"], 4),
                        metric_name=f"{s['metric']} (mean of {s['n']} seeds)",
                        task_name=s["task"])
             for s in summary]
    tags = ["cmedbert", "bert", "chinese", "medical", "fill-mask", "domain-adaptive-pretraining"]
    pre = (manifest or {}).get("pretrain") or {}
    init = pre.get("init") or ((manifest or {}).get("config") or {}).get("init")
    if init:
        tags.append(f"init-{init}")
    if extension:
        tags.append("vocab-extension")
    base = None
    init_from = pre.get("init_from") or (extension or {}).get("base")
    if isinstance(init_from, str) and REPO_ID_RE.match(init_from) and not Path(init_from).exists():
        base = init_from  # a Hub id, not a local folder
    return ModelCardData(language="zh", license=cfg.license, library_name="transformers", pipeline_tag="fill-mask",
                         tags=tags, datasets=datasets or None, base_model=base,
                         metrics=sorted({s["metric"] for s in summary}) or None,
                         model_name=name, eval_results=evals or None)


def _training_data_section(manifest: dict[str, Any] | None, inputs: list[dict[str, Any]]) -> list[str]:
    lines = ["## Training data", ""]
    if not manifest:
        return lines + ["No cmedbert run manifest was found next to this model folder, so the training data "
                        "cannot be summarized here.", ""]
    counts = manifest.get("counts") or {}
    if counts:
        lines.append("Pretraining run: " + ", ".join(f"{k} = {_fmt_int(v)}" for k, v in counts.items()
                                                     if isinstance(v, (int, float, str))) + ".")
        lines.append("")
    for m in inputs:
        stage = m.get("stage", "?")
        c = m.get("counts") or {}
        head = f"- **{stage}** input `{_scrub(m['path'])}` (config hash `{m.get('config_hash', '?')}`)"
        details = []
        if stage == "corpus":
            for k in ("records_in", "records_out", "bytes_out"):
                if k in c:
                    details.append(f"{k} {_fmt_int(c[k])}")
            for k in ("dropped", "pii", "decontaminated"):
                if isinstance(c.get(k), dict) and c[k]:
                    details.append(f"{k}: " + ", ".join(f"{a} {_fmt_int(b)}" for a, b in c[k].items()))
            if isinstance(c.get("per_source"), dict):
                details.append("sources: " + ", ".join(f"{a}" for a in c["per_source"]))
        elif stage == "packed":
            pk = m.get("packed") or {}
            for k in ("seq_len", "vocab_size"):
                if k in pk:
                    details.append(f"{k} {pk[k]}")
            splits = pk.get("splits")
            if isinstance(splits, dict):
                details.append("splits: " + ", ".join(
                    f"{s} {_fmt_int(v.get('n_seq', v) if isinstance(v, dict) else v)} sequences" for s, v in splits.items()))
        else:
            details += [f"{k} {_fmt_int(v)}" for k, v in list(c.items())[:6] if isinstance(v, (int, float, str))]
        lines.append(head + (": " + "; ".join(details) if details else ""))
    lines.append("")
    return lines


def _tokenizer_section(model_dir: Path, hf_config: dict[str, Any], extension: dict[str, Any] | None) -> list[str]:
    lines = ["## Tokenizer and vocabulary", ""]
    tc = _read_json(model_dir / "tokenizer_config.json") if (model_dir / "tokenizer_config.json").is_file() else None
    lines.append(f"Vocabulary size {hf_config.get('vocab_size', '?')}; tokenizer class "
                 f"`{(tc or {}).get('tokenizer_class', '?')}`, lowercase={(tc or {}).get('do_lower_case', '?')}.")
    if extension:
        toks = extension.get("tokens") or []
        origins: dict[str, int] = {}
        for t in toks:
            if isinstance(t, dict):
                origins[str(t.get("origin", "?"))] = origins.get(str(t.get("origin", "?")), 0) + 1
        sample = "、".join(str(t.get("token")) for t in toks[:30] if isinstance(t, dict))
        lines += ["", f"The vocabulary was **extended** from base `{_scrub(extension.get('base', '?'))}` "
                      f"({_fmt_int(extension.get('base_vocab_size', '?'))} tokens, mode `{extension.get('mode', '?')}`) "
                      f"with {len(toks)} new tokens"
                      + (" (" + ", ".join(f"{k}: {v}" for k, v in sorted(origins.items())) + ")" if origins else "")
                      + ". New embeddings were initialized from the mean of the base pieces of each token "
                        "and then trained. The full list is in `extension.json`.",
                  "", f"First new tokens: {sample}" if sample else ""]
    else:
        lines += ["", "No vocabulary extension (no `extension.json` in the model folder)."]
    return lines + [""]


def _training_config_section(hf_config: dict[str, Any], manifest: dict[str, Any] | None, cfg_hash: str,
                             n_params: int | None) -> list[str]:
    lines = ["## Training configuration", ""]
    arch = ", ".join(f"{k} {hf_config[k]}" for k in ("model_type", "num_hidden_layers", "hidden_size",
                                                      "num_attention_heads", "intermediate_size",
                                                      "max_position_embeddings") if k in hf_config)
    lines.append(f"Architecture: {arch}" + (f"; {_fmt_int(n_params)} parameters." if n_params else "."))
    lines.append(f"Config hash: `{cfg_hash}`.")
    if manifest:
        pre = manifest.get("pretrain") or {}
        bits = []
        if pre.get("init"):
            bits.append(f"init `{pre['init']}`" + (f" from `{_scrub(pre.get('init_from'))}`" if pre.get("init_from") else ""))
        if pre.get("world_size"):
            bits.append(f"world size {pre['world_size']}")
        if isinstance(pre.get("engine"), (str, dict)):
            bits.append(f"engine `{json.dumps(pre['engine'], ensure_ascii=False) if isinstance(pre['engine'], dict) else pre['engine']}`")
        if bits:
            lines.append("Run: " + "; ".join(bits) + ".")
        fe = pre.get("final_eval")
        if isinstance(fe, dict) and fe:
            lines.append("Final validation: " + ", ".join(f"{k} {round(v, 4) if isinstance(v, float) else v}"
                                                          for k, v in fe.items() if isinstance(v, (int, float))) + ".")
        if manifest.get("git_commit"):
            lines.append(f"cmedbert {manifest.get('cmedbert_version', '?')}, commit `{manifest['git_commit']}`.")
        if manifest.get("config"):
            lines += ["", "<details><summary>Full pretraining config</summary>", "", "```json",
                      json.dumps(_scrub(manifest["config"]), indent=2, ensure_ascii=False), "```", "", "</details>"]
    return lines + [""]


def _results_section(summary: list[dict[str, Any]]) -> list[str]:
    official = bool(summary) and all(s.get("official") for s in summary)
    lines = ["## Evaluation (CBLUE)" if official else "## Evaluation", ""]
    if not summary:
        return lines + ["No fine-tuning results were given (`--results`).", ""]
    single = all(s["n"] == 1 for s in summary)
    lines += [f"Fine-tuned with `cmedbert finetune`; "
              + ("one seed (n=1), so no spread over seeds is given." if single else
                 "mean ± standard deviation over seeds (n = number of seeds).")
              + " Data: \"official CBLUE\" only where the task files are byte-identical to the CBLUE 1.0 release; "
                "otherwise CBLUE-format task data.", "",
              "| task | data | split | metric | mean | std | n | finetune config |", "|---|---|---|---|---|---|---|---|"]
    for s in summary:
        std = "–" if s["n"] == 1 else f"{s['std']:.4f}"
        data = "official CBLUE" if s.get("official") else "CBLUE-format, not official"
        lines.append(f"| {s['task']} | {data} | {s['split']} | {s['metric']} | {s['mean']:.4f} | {std} | "
                     f"{s['n']} | {', '.join(s['config_hashes']) or '-'} |")
    prim = [s for s in summary if s["split"] == "dev"]
    tasks = sorted({s["task"] for s in prim})
    if len(tasks) > 1:
        firsts = [next(s for s in prim if s["task"] == t) for t in tasks]
        lines += ["", f"Average over {len(tasks)} tasks (first metric of each, dev): "
                      f"{statistics.fmean(s['mean'] for s in firsts):.4f}."]
    return lines + [""]


def build_card(cfg: PublishConfig, model_dir: Path, parts: dict[str, list[str]], summary: list[dict[str, Any]],
               manifest: dict[str, Any] | None, cfg_hash: str) -> str:
    """README.md text: YAML metadata + sections. Parsed back with ModelCard to make sure it is valid."""
    from huggingface_hub import ModelCard

    hf_config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    extension = _read_json(model_dir / "extension.json") if (model_dir / "extension.json").is_file() else None
    inputs = input_manifests(manifest)
    # default datasets: the corpus sources the run was trained on, when its manifests say so
    datasets = list(cfg.datasets) or sorted({str(k) for m in inputs if m.get("stage") == "corpus"
                                             for k in ((m.get("counts") or {}).get("per_source") or {})})
    data = card_metadata(cfg, summary, extension, manifest, datasets)
    name = cfg.repo_id.split("/", 1)[1]
    body = [
        f"# {name}", "",
        "A Chinese medical BERT (masked language model) built with the cmedbert "
        "domain-adaptive pretraining pipeline. It is a base encoder: fine-tune it "
        "for classification, NER or matching; on its own it only fills in masked characters.", "",
        "> **Not for clinical decisions.** This model must not be used to diagnose, treat or give medical "
        "advice to anyone. Its outputs can be wrong, outdated or biased. "
        "**本模型不能用于临床诊断、治疗或任何医疗决策。**", "",
        "## How to use", "", "```python", "from transformers import pipeline", "",
        f'fill = pipeline("fill-mask", model="{cfg.repo_id}")',
        'fill("患者确诊2型糖尿病后需要长期服用二甲双[MASK]控制血糖。")', "```", "",
        *_results_section(summary),
        *_training_data_section(manifest, inputs),
        *_tokenizer_section(model_dir, hf_config, extension),
        *_training_config_section(hf_config, manifest, cfg_hash, _param_count(model_dir, parts["weights"])),
        "## Intended use", "",
        "- Research on Chinese biomedical NLP; a starting point for fine-tuning on tasks such as CBLUE "
        "(query intent, entity recognition, relation extraction, text matching).",
        "- Comparing pretraining recipes (from scratch vs continual, with or without vocabulary extension).", "",
        "## Limitations and risks", "",
        "- Trained on a limited corpus of online consultations, QA and textbook-style text; it reflects their "
        "errors, biases and the time they were written. It has not been validated clinically.",
        "- Masked-LM predictions are not facts: it can complete a sentence with a wrong drug, dose or diagnosis.",
        "- Personal identifiers were scrubbed from the corpus with patterns; scrubbing is not perfect.",
        "- The training texts come from sources with their own licenses (see the training data section); "
        "check them before commercial use.",
        "- Evaluation covers the tasks listed above only, on their dev sets"
        + ("." if all(s.get("official") for s in summary) else
           "; tasks marked 'not official' were scored on CBLUE-format data, not on the official CBLUE files."), "",
        "## Not for clinical decisions", "",
        "Do not use this model, or anything fine-tuned from it, to make or support decisions about the "
        "diagnosis, treatment or care of patients. 本模型仅供研究使用，不能替代医生，不能用于临床决策。", "",
    ]
    content = f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body)
    try:
        card = ModelCard(content)
    except ValueError as exc:  # our own metadata failed to parse: a bug, but say what
        raise CmedbertError(f"the generated model card does not parse: {exc}") from None
    if summary and not card.data.eval_results:
        raise CmedbertError("the generated model card lost its model-index")
    return content


# --------------------------------------------------------------------------- build & verify
def build_upload_folder(cfg: PublishConfig, model_dir: Path, parts: dict[str, list[str]], card: str,
                        cfg_hash: str, manifest: dict[str, Any] | None, out: Path) -> list[str]:
    """Copy the allowed files and write README.md + cmedbert.json into ``out`` (atomically)."""
    import cmedbert
    from cmedbert.artifact import atomic_output, sha256_file

    names = parts["weights"] + parts["config"] + parts["tokenizer"] + parts["extra"]
    with atomic_output(out) as tmp:
        for n in names:
            shutil.copyfile(model_dir / n, tmp / n)
        (tmp / "README.md").write_text(card, encoding="utf-8")
        prov = {
            "cmedbert_version": cmedbert.__version__,
            "repo_id": cfg.repo_id,
            "config_hash": cfg_hash,
            "run_manifest_config_hash": (manifest or {}).get("config_hash"),
            "git_commit": (manifest or {}).get("git_commit"),
            "files": [{"path": n, "sha256": sha256_file(tmp / n), "bytes": (tmp / n).stat().st_size}
                      for n in sorted(names + ["README.md"])],
        }
        (tmp / "cmedbert.json").write_text(json.dumps(prov, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        for n in names:  # a copy that differs from its source is not publishable
            if sha256_file(tmp / n) != sha256_file(model_dir / n):
                raise CmedbertError(f"{n}: the copy in the upload folder differs from the source")
    return sorted(p.name for p in out.iterdir())


def _load(folder: Path):
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(folder))
        model = AutoModelForMaskedLM.from_pretrained(str(folder), use_safetensors=True)
    except Exception as exc:  # transformers raises many types; the user needs the folder and reason
        raise CmedbertError(f"{folder}: does not load with AutoTokenizer/AutoModelForMaskedLM: {exc}") from None
    model.eval()
    if tok.mask_token is None:
        raise CmedbertError(f"{folder}: the tokenizer has no mask token: not a masked-LM tokenizer")
    if len(tok) > model.config.vocab_size:
        raise CmedbertError(f"{folder}: tokenizer has {len(tok)} tokens but the model's vocab_size is "
                            f"{model.config.vocab_size} (embeddings not resized after vocab extension?)")
    return model, tok


def verify_upload(source: Path, upload: Path, sentences: list[str], top_k: int) -> dict[str, Any]:
    """The upload folder must behave exactly like the source: same logits, same fill-mask top-k."""
    import torch
    from transformers import pipeline

    src_model, src_tok = _load(source)
    up_model, up_tok = _load(upload)
    texts = [s.replace("[MASK]", src_tok.mask_token) for s in sentences if "[MASK]" in s]
    if not texts:
        raise CmedbertError("no verification sentence contains [MASK]")
    if src_tok(texts)["input_ids"] != up_tok(texts)["input_ids"]:
        raise CmedbertError(f"{upload}: its tokenizer encodes the check sentences differently from {source}")
    with torch.no_grad():
        enc = src_tok(texts, return_tensors="pt", padding=True)
        diff = (src_model(**enc).logits - up_model(**enc).logits).abs().max().item()
    if diff > 1e-5:
        raise CmedbertError(f"{upload}: logits differ from the source by {diff:.3g}")
    fill_src = pipeline("fill-mask", model=src_model, tokenizer=src_tok)
    fill_up = pipeline("fill-mask", model=up_model, tokenizer=up_tok)
    preds = []
    for t in texts:
        a = [p["token"] for p in fill_src(t, top_k=top_k)]
        b = [p["token"] for p in fill_up(t, top_k=top_k)]
        if a != b:
            raise CmedbertError(f"{upload}: fill-mask top-{top_k} for {t!r} differs from the source ({a} vs {b})")
        preds.append({"sentence": t, "top": src_tok.convert_ids_to_tokens(a)})
    return {"sentences": len(texts), "max_abs_logit_diff": diff, "top_k": top_k, "predictions": preds}


# ------------------------------------------------------------------------------------- push
def _redact(text: str, secret: str | None) -> str:
    return text.replace(secret, "***") if secret else text


def push(cfg: PublishConfig, folder: Path, cfg_hash: str) -> dict[str, Any]:
    """create_repo (+ create_branch) + upload_folder. The token stays inside huggingface_hub."""
    from huggingface_hub import HfApi, get_token

    try:
        token = get_token()  # only to say clearly when there is none; never printed or passed on
    except Exception as exc:  # e.g. a failed OIDC exchange
        raise CmedbertError(f"could not resolve a Hugging Face token: {type(exc).__name__}") from None
    if not token:
        raise CmedbertError("no Hugging Face token: set HF_TOKEN or run `hf auth login` (or use --dry-run)")
    api = HfApi()
    message = f"cmedbert publish {cfg.repo_id.split('/', 1)[1]}: config {cfg_hash}"
    try:
        url = api.create_repo(cfg.repo_id, private=cfg.private, exist_ok=True, repo_type="model")
        if cfg.revision and cfg.revision != "main":
            api.create_branch(cfg.repo_id, branch=cfg.revision, exist_ok=True, repo_type="model")
        info = api.upload_folder(repo_id=cfg.repo_id, folder_path=str(folder), repo_type="model",
                                 commit_message=message, revision=cfg.revision)
    except CmedbertError:
        raise
    except Exception as exc:  # HTTP, offline mode, permissions: one clear line, token never in it
        raise CmedbertError(_redact(f"push to {cfg.repo_id} failed: {type(exc).__name__}: {exc}", token)) from None
    return {"repo_url": str(url), "commit": str(getattr(info, "oid", "") or getattr(info, "commit_url", "") or info),
            "commit_message": message}


# ------------------------------------------------------------------------------------- main
def main(cfg: PublishConfig) -> dict[str, Any]:
    """Check, build, verify, (push). Returns a summary; nothing is pushed unless all checks pass."""
    cfg.validate()
    model_dir = Path(cfg.model_dir)
    parts = check_model_dir(model_dir)
    manifest = run_manifest(model_dir)
    rows = read_results([Path(r) for r in cfg.results], model_dir, cfg.checkpoint_name)
    if cfg.results and not rows:
        log.warning("no rows for this checkpoint in %s (pass --checkpoint-name to match rows by name)",
                    ", ".join(cfg.results))
    summary = summarize_results(rows)
    cfg_hash = publish_config_hash(model_dir, manifest)
    card = build_card(cfg, model_dir, parts, summary, manifest, cfg_hash)
    out = Path(cfg.out) if cfg.out else Path(tempfile.mkdtemp(prefix="cmedbert-publish-")) / "upload"
    files = build_upload_folder(cfg, model_dir, parts, card, cfg_hash, manifest, out)
    try:
        check = verify_upload(model_dir, out, cfg.sentences, cfg.top_k)
    except CmedbertError:
        shutil.rmtree(out, ignore_errors=True)  # an unverified folder is not left for a manual upload
        raise
    result: dict[str, Any] = {"folder": str(out), "files": files, "skipped": parts["skipped"], "results": summary,
                              "sizes": {n: (out / n).stat().st_size for n in files}, "config_hash": cfg_hash,
                              "verify": check, "pushed": False, "kept": True}
    if not cfg.dry_run:
        result.update(push(cfg, out, cfg_hash), pushed=True)
        if not cfg.out:  # a temporary copy of the weights is not worth keeping once it is on the Hub
            shutil.rmtree(out.parent, ignore_errors=True)
            result["kept"] = False
    return result


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("publish", help="check, verify and push a model folder to the Hugging Face Hub",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model_dir", metavar="MODEL_DIR", help="Hugging Face model folder (a pretrain run's RUN/model)")
    p.add_argument("--repo-id", required=True, help="Hub repository ORG/NAME")
    p.add_argument("--private", action="store_true", help="create the repository as private")
    p.add_argument("--revision", default=None, help="branch to push to (created if missing)")
    p.add_argument("--dry-run", action="store_true", help="build and verify the upload folder, list it, no network")
    p.add_argument("--results", nargs="+", default=[], metavar="RESULTS.jsonl",
                   help="finetune results.jsonl files for the model card")
    p.add_argument("--checkpoint-name", default=None, help="this model's name in results.jsonl rows")
    p.add_argument("--out", default=None, metavar="UPLOAD_DIR", help="upload folder to build (must not exist)")
    p.add_argument("--license", default="apache-2.0", help="license tag for the model card (default apache-2.0)")
    p.add_argument("--dataset", dest="datasets", action="append", default=[], metavar="ID",
                   help="dataset id for the card's metadata (repeatable)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    cfg = PublishConfig(model_dir=args.model_dir, repo_id=args.repo_id, private=args.private,
                        revision=args.revision, dry_run=args.dry_run, results=list(args.results),
                        checkpoint_name=args.checkpoint_name, out=args.out, license=args.license,
                        datasets=list(args.datasets))
    res = main(cfg)
    print(f"upload folder: {res['folder']}" + ("" if res["kept"] else " (temporary, removed after the push)"))
    for name in res["files"]:
        print(f"  {name}  ({res['sizes'][name]:,} bytes)")
    if res["skipped"]:
        print(f"not published from {cfg.model_dir}: {', '.join(res['skipped'])}")
    v = res["verify"]
    print(f"verified: loads with AutoModelForMaskedLM/AutoTokenizer; fill-mask top-{v['top_k']} identical to "
          f"the source on {v['sentences']} sentences (max |logit diff| {v['max_abs_logit_diff']:.1e})")
    for s in res["results"]:
        print(f"result: {s['task']} {s['split']} {s['metric']} {s['mean']:.4f} ± {s['std']:.4f} (n={s['n']})")
    if res["pushed"]:
        print(f"pushed to {res['repo_url']} ({res['commit_message']})")
    else:
        print(f"dry run: nothing uploaded; would push to {cfg.repo_id}"
              + (f" revision {cfg.revision}" if cfg.revision else "") + f" with config {res['config_hash']}")
    return 0
