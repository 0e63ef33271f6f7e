"""One fine-tuning job of `cmedbert finetune`: a (checkpoint, task, seed) fine-tuned, scored on dev,
and its test predictions written in the official submission file name and format
(:func:`run_one`); reading and checking the task data. The stage's entry point, which runs every
job of the config, is :func:`cmedbert.finetune.sweep.main`.

Output folder (filled job by job and resumable, see :mod:`cmedbert.finetune.sweep`; each job's
folder is built under a temporary name and renamed when complete; the manifest comes last):

    OUT/config.json, OUT/manifest.json (stage "finetune"), OUT/sweep.json (the job list)
    OUT/results.jsonl                       one row per (checkpoint, task, seed, split, metric)
    OUT/<checkpoint>/<task>/seed_<s>/
        <TASK>_test.json                    the submission (official name/format, validated)
        <TASK>_dev_pred.json                dev predictions in the same format
        dev_predictions.jsonl.gz            compact per-example dev predictions (finetune.predictions)
        dev_scores.json                     official metric + details on dev, validation score, hp
        train_log.jsonl                     validation evaluations during training
        model/ (only with save_model=true)
    OUT/<checkpoint>/<task>/lr_<x>/seed_<s>/   with an lr_grid: the same, per learning rate
    OUT/<checkpoint>/<task>/selection.json  with an lr_grid: validation score of every learning rate

Splits: ``train`` fits, ``valid`` (carved from train with ``valid_seed``) selects the epoch and the
learning rate, ``dev`` is only predicted and reported. The task runner gets the dev records with
their labels removed, so nothing it does can depend on them. Where the train file is missing
(CMeEE, CMeIE in the shared data) the labeled dev file is carved three ways: train / valid / dev.

Several sweeps: pass all their results.jsonl files to ``cmedbert finetune table``, or set
``results=PATH`` so each job also appends its rows to one shared file.
"""

from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cmedbert.artifact import describe_input
from cmedbert.config import config_hash, to_dict
from cmedbert.errors import CmedbertError
from cmedbert.finetune.config import FinetuneConfig
from cmedbert.finetune.tasks import (TaskSpec, dumps_records, get_task, make_submission, read_schemas, read_split,
                            validate_submission)

log = logging.getLogger("finetune")


@dataclass
class TaskData:
    train: list[dict[str, Any]]
    dev: list[dict[str, Any]]       # the reported records (carved share of dev when carving)
    test: list[dict[str, Any]]
    folder: Path
    carved: bool
    test_complete: bool
    files: list[Path]
    schemas: list[tuple[str, str, str]] | None = None
    valid: list[dict[str, Any]] = field(default_factory=list)  # selects epoch / lr; carved from train
    identity: dict[str, Any] = field(default_factory=dict)     # provenance.task_data_identity of files

    def without_dev_labels(self, spec: TaskSpec) -> "TaskData":
        """The same data with the target field removed from every dev record (what runners get)."""
        import dataclasses

        return dataclasses.replace(self, dev=[{k: v for k, v in r.items() if k != spec.target} for r in self.dev])


@dataclass
class TaskContext:
    cfg: FinetuneConfig
    spec: TaskSpec
    hp: dict
    seed: int
    data: TaskData
    tokenizer: Any
    encoder: Any
    device: str
    history: list = field(default_factory=list)
    model: Any = None
    extra: dict = field(default_factory=dict)   # task-specific numbers added to dev_scores.json


def carve_split(records: list, eval_fraction: float, seed: int) -> tuple[list, list]:
    """Deterministic train/eval split of a labeled file: a permutation seeded by ``seed``; the
    first ``round(eval_fraction * n)`` (at least 1) records of it are eval; both keep file order."""
    idx = list(range(len(records)))
    random.Random(seed).shuffle(idx)
    n_eval = max(1, round(eval_fraction * len(records)))
    if n_eval >= len(records):
        raise CmedbertError(f"cannot carve {len(records)} records into train and eval")
    ev = set(idx[:n_eval])
    return [r for i, r in enumerate(records) if i not in ev], [r for i, r in enumerate(records) if i in ev]


def load_task_data(cfg: FinetuneConfig, spec: TaskSpec) -> TaskData:
    folder = cfg.data_root() / spec.name
    if not folder.is_dir():
        extra = (" (CHIP-STS is not in the shared data: put the official CHIP-STS_{train,dev,test}.json there)"
                 if spec.name == "CHIP-STS" else "")
        raise CmedbertError(f"task folder not found: {folder}{extra}")
    schemas = read_schemas(folder / "53_schemas.json") if spec.name == "CMeIE" else None
    if spec.name == "CHIP-CTC" and (folder / "category.xlsx").is_file():
        from cmedbert.finetune.tasks import read_ctc_categories

        found = read_ctc_categories(folder / "category.xlsx")
        if set(found) != set(spec.labels):
            raise CmedbertError(f"{folder / 'category.xlsx'}: its {len(found)} labels differ from the CBLUE 1.0 "
                                f"CHIP-CTC labels: {sorted(set(found) ^ set(spec.labels))[:5]}")
    paths = {s: folder / spec.split_file(s) for s in ("train", "dev", "test")}
    dev = read_split(spec, paths["dev"], labeled=True, schemas=schemas)
    test = read_split(spec, paths["test"], labeled=False, schemas=schemas)
    files = [paths["dev"], paths["test"]]
    carve = cfg.carve == "always" or (cfg.carve == "auto" and not paths["train"].exists())
    if carve:
        train, dev = carve_split(dev, cfg.carve_eval_fraction, cfg.carve_seed)
    elif not paths["train"].exists():
        raise CmedbertError(f"{paths['train']} not found (set carve=auto to carve the dev file into train/eval)")
    else:
        train = read_split(spec, paths["train"], labeled=True, schemas=schemas)
        files.insert(0, paths["train"])
    if spec.name == "CMeIE":
        files.append(folder / "53_schemas.json")
    train, valid = carve_split(train, cfg.valid_fraction, cfg.valid_seed)
    log.info("%s: %d train / %d valid (selection) / %d dev (reported) records%s", spec.name, len(train), len(valid),
             len(dev), f" carved from {paths['dev'].name}" if carve else "")
    n_test = len(test)
    train = train[: cfg.max_train_samples] if cfg.max_train_samples else train
    dev = dev[: cfg.max_eval_samples] if cfg.max_eval_samples else dev
    test = test[: cfg.max_test_samples] if cfg.max_test_samples else test
    from cmedbert.finetune.provenance import task_data_identity

    return TaskData(train, dev, test, folder, carve, len(test) == n_test, files, schemas, valid=valid,
                    identity=task_data_identity(files))


def _runner(spec: TaskSpec):
    if spec.kind in ("cls", "pair"):
        from cmedbert.finetune.cls import run_classification
        return run_classification
    if spec.kind == "ner":
        from cmedbert.finetune.ner import run_ner
        return run_ner
    if spec.kind == "ie":
        from cmedbert.finetune.ie import run_ie
        return run_ie
    from cmedbert.finetune.cdn import run_cdn
    return run_cdn


def recipe_hash(cfg: FinetuneConfig, task: str) -> str:
    """Identifies a fine-tuning recipe for one task (not the checkpoint, not the seed)."""
    d = to_dict(cfg)
    keep = {k: d[k] for k in ("max_train_samples", "max_eval_samples", "carve", "carve_eval_fraction", "carve_seed",
                              "valid_fraction", "valid_seed", "recipe")}
    keep.update(task=task, hp=cfg.task_hp(task))
    if task == "CHIP-CDN":
        keep["cdn"] = d["cdn"]
    if task == "CMeIE":
        keep["ie"] = d["ie"]
    return config_hash(keep)


def run_one(cfg: FinetuneConfig, ckpt_name: str, ckpt: Path, spec: TaskSpec, data: TaskData, seed: int,
            folder: Path, lr: float | None = None, rel: str | None = None) -> list[dict[str, Any]]:
    """Fine-tune one checkpoint on one task with one seed (and learning rate ``lr`` when given, else
    the resolved one); write its folder; return result rows (the dev row carries ``valid_value``)."""
    from cmedbert.finetune.config import size_class
    from cmedbert.finetune.metrics import score
    from cmedbert.finetune.predictions import FILE_NAME, write_predictions
    from cmedbert.finetune.train import load_backbone, set_seed

    from cmedbert.finetune.train import execution, resolve_device, resolve_precision

    device = resolve_device(cfg.device)
    precision = resolve_precision(cfg.precision, device)
    if device == "cuda":
        from accelerate import PartialState

        PartialState()  # under torchrun/accelerate launch: join the process group, pick this rank's GPU
    set_seed(seed)
    tokenizer, encoder = load_backbone(ckpt)
    size = size_class(encoder.config)
    hp = cfg.task_hp(spec.name, size)
    if lr is not None:
        hp["lr"] = lr
    hp = _fit_max_len(hp, encoder.config, spec.name)
    ctx = TaskContext(cfg, spec, hp, seed, data.without_dev_labels(spec), tokenizer, encoder, device)
    t0 = time.time()
    with execution(device, cfg.precision):
        valid_pred, dev_pred, test_pred = _runner(spec)(ctx)
    seconds = time.time() - t0
    folder.mkdir(parents=True)
    valid_score = score(spec.name, data.valid, make_submission(spec, data.valid, valid_pred))["value"]
    dev_sub = make_submission(spec, data.dev, dev_pred)
    test_sub = make_submission(spec, data.test, test_pred)
    (folder / f"{spec.name}_dev_pred.json").write_text(dumps_records(spec, dev_sub), encoding="utf-8")
    write_predictions(folder / FILE_NAME, spec, data.dev, dev_sub, data=data.identity.get("files"))
    sub_path = folder / spec.submission_name
    sub_path.write_text(dumps_records(spec, test_sub), encoding="utf-8")
    validate_submission(spec, data.test, sub_path, schemas=data.schemas)
    res = score(spec.name, data.dev, dev_sub)
    res.update(n_train=len(data.train), n_valid=len(data.valid), n_eval=len(data.dev), n_test=len(data.test),
               carved=data.carved, test_complete=data.test_complete, seconds=round(seconds, 2), size_class=size,
               valid_value=valid_score, hp=hp, data=data.identity, device=device,
               compute_dtype={"no": "fp32"}.get(precision, precision), **ctx.extra)
    (folder / "dev_scores.json").write_text(json.dumps(res, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    (folder / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ctx.history), encoding="utf-8")
    if cfg.save_model and ctx.model is not None:
        from safetensors.torch import save_file

        (folder / "model").mkdir()
        save_file({k: v.contiguous() for k, v in ctx.model.state_dict().items()}, str(folder / "model" / "head_and_encoder.safetensors"))
        tokenizer.save_pretrained(str(folder / "model"))
    del ctx, encoder
    h = recipe_hash(cfg, spec.name)
    base = dict(checkpoint=ckpt_name, task=spec.name, seed=seed, split="dev", config_hash=h,
                n_eval=len(data.dev), carved=data.carved, lr=hp["lr"], data=data.identity,
                predictions=f"{rel or f'{ckpt_name}/{spec.name}/seed_{seed}'}/{FILE_NAME}")
    rows = [dict(base, metric=res["metric"], value=res["value"], valid_value=valid_score)]
    rows += [dict(base, metric=k, value=res[k]) for k in ("precision", "recall") if k in res]
    log.info("%s %s seed %d lr %g: valid %s = %.4f, dev %.4f (%.1fs)", ckpt_name, spec.name, seed, hp["lr"],
             res["metric"], valid_score, res["value"], seconds)
    return rows


def _fit_max_len(hp: dict, config: Any, task: str) -> dict:
    """Cap max_len at the checkpoint's position table (tiny checkpoints may have 128 positions)."""
    limit = getattr(config, "max_position_embeddings", None)
    if not limit:
        return hp
    if "roberta" in str(getattr(config, "model_type", "")):
        limit -= 2  # RoBERTa-style position ids start after the padding index
    if int(hp["max_len"]) > limit:
        log.warning("%s: max_len %s exceeds the checkpoint's %d positions; using %d", task, hp["max_len"], limit, limit)
        return dict(hp, max_len=limit)
    return hp


def _check_checkpoint(path: Path) -> dict[str, Any]:
    if not path.is_dir():
        raise CmedbertError(f"checkpoint folder not found: {path}")
    if not (path / "config.json").is_file():
        raise CmedbertError(f"checkpoint {path}: no config.json (expected a Hugging Face model folder)")
    entry = describe_input(path)
    # a pretrain run's model/ folder: pin the run's manifest
    parent_manifest = path.parent / "manifest.json"
    if path.name == "model" and parent_manifest.is_file():
        from cmedbert.artifact import read_manifest

        m = read_manifest(path.parent)
        if m.get("stage") == "pretrain":
            entry = describe_input(path.parent) | {"path": str(path)}
    return entry


def check_inputs(cfg: FinetuneConfig) -> list[dict[str, Any]]:
    """Every checkpoint exists and is a model folder; their manifest entries."""
    return [_check_checkpoint(p) for p in cfg.model_dirs().values()]
