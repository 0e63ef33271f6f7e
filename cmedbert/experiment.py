"""The scratch-vs-continual experiment: every stage, in order, with reuse of finished steps.

This answers the PubMedBERT question on a user's own data: at the same pretraining token budget,
is a model trained from scratch with an in-domain vocab better than continual pretraining from a
general checkpoint (with the base vocab or an extended one)? ``cmedbert compare`` and
``cmedbert demo`` are both this pipeline; the demo just feeds it built-in data and tiny sizes.

Layout of the output folder (every step is its own stage folder with a manifest)::

    general/corpus  general/tokenizer  general/packed  general/base     (only without general.init_from)
    corpus/                       medical corpus
    tokenizer/                    base tokenizer extended on the medical corpus (+ audit before/after)
    tokenizer-in-domain/          WordPiece trained on the medical corpus (scratch arms)
    packed/<vocab>/               packed medical shards per vocab used by an arm
    pretrain/<arm>/               one pretraining run per arm (model/ = its HF export)
    finetune/                     CBLUE fine-tuning of every arm x task x seed
    report.md  loss.png  scores.png  results.jsonl  runs.json

A step whose folder already holds a manifest with the same config hash is reused, not
recomputed; one with a different config is an error (choose another --out or delete it).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Optional

from cmedbert.artifact import atomic_output, manifest_hash, read_manifest, write_manifest
from cmedbert.config import ConfigError, config_hash, from_dict, load_config, to_dict
from cmedbert.errors import CmedbertError

log = logging.getLogger("cmedbert.experiment")

VOCABS = ("base", "extended", "in_domain")


class StepInterrupted(Exception):
    """A step stopped on SIGTERM/SIGINT after checkpointing; the pipeline stops, a re-run resumes."""


@dataclass
class ArmConfig:
    name: str = field(metadata={"help": "arm name (folder under pretrain/, row in the tables)"})
    init: Literal["scratch", "continual", "untrained"] = field(metadata={
        "help": "scratch = fresh model; continual = from the general base; untrained = random init, no pretraining "
                "(the floor every pretrained arm must beat)"})
    vocab: Literal["base", "extended", "in_domain"] = field(default="extended", metadata={
        "help": "tokenizer: the general base vocab, the base extended on the medical corpus, or one trained in-domain"})
    corpus: Literal["medical", "general"] = field(default="medical", metadata={
        "help": "pretraining text of the arm: the medical corpus, or the general corpus (with init=continual and "
                "vocab=base: the general base continued on general text for the same budget, the control for "
                "'is it the medical text or just more pretraining?')"})
    train_tokens: Optional[int] = field(default=None, metadata={
        "help": "this arm's pretraining budget (sequence positions); default: the experiment's train_tokens. A scratch "
                "arm given general.train_tokens + train_tokens has the same total compute as a continual arm"})
    model: Optional[str] = field(default=None, metadata={
        "help": "collect an existing checkpoint instead of training this arm: a pretrain run's model/ folder or any "
                "HF model folder (init/vocab then only label the arm)"})


@dataclass
class GeneralConfig:
    init_from: Optional[str] = field(default=None, metadata={
        "help": "an existing general checkpoint (hub id or folder, e.g. bert-base-chinese) used as the base; "
                "when empty a base is pretrained on `corpus` below"})
    corpus: str = field(default="", metadata={
        "help": "general-domain text for the base: a corpus config (.toml/.yaml), a built corpus folder, or any "
                "folder of .txt files (one document per line)"})
    vocab_size: int = field(default=8000, metadata={"help": "base WordPiece vocab trained on the general corpus (tokens)"})
    train_tokens: int = field(default=200_000, metadata={"help": "base pretraining budget (sequence positions)"})
    pretrain: dict[str, Any] = field(default_factory=dict, metadata={
        "help": "pretrain config keys for the base run only (over the shared `pretrain` table)"})


@dataclass
class ExperimentConfig:
    medical_corpus: str = field(metadata={
        "help": "medical text: a corpus config (.toml/.yaml), a built corpus folder, or a folder of .txt files"})
    general: GeneralConfig = field(default_factory=GeneralConfig, metadata={"help": "the general-domain base"})
    arms: list[ArmConfig] = field(default_factory=lambda: [
        ArmConfig("scratch", "scratch", "in_domain"), ArmConfig("continual", "continual", "extended")],
        metadata={"help": "pretraining arms compared at the same token budget"})
    train_tokens: int = field(default=400_000, metadata={
        "help": "pretraining budget of every arm (sequence positions = global batch x seq_len per step)"})
    kg_terms: list[str] = field(default_factory=list, metadata={
        "help": "KG term lists (one term per line, or term<TAB>freq): jieba user dictionary, entity flags, extension"})
    in_domain_vocab_size: int = field(default=8000, metadata={"help": "vocab of the in-domain tokenizer (tokens)"})
    seq_len: int = field(default=128, metadata={"help": "packed sequence length (tokens)"})
    corpus: dict[str, Any] = field(default_factory=dict, metadata={"help": "corpus config keys applied to both corpora"})
    extend: dict[str, Any] = field(default_factory=dict, metadata={"help": "tokenizer extend config keys"})
    pack: dict[str, Any] = field(default_factory=dict, metadata={"help": "tokenizer pack config keys"})
    pretrain: dict[str, Any] = field(default_factory=dict, metadata={
        "help": "pretrain config keys shared by every run (model, batch, optimizer, engine, ...)"})
    finetune: dict[str, Any] = field(default_factory=dict, metadata={
        "help": "finetune config keys (tasks, seeds, data_dir, hp, ...); models are filled in"})
    base_dir: str = field(default="", metadata={
        "help": "folder relative paths resolve against (set to the config file's folder when loading)"})
    seed: int = field(default=42, metadata={"help": "seed of every pretraining run"})
    budget_fractions: list[float] = field(default_factory=list, metadata={
        "help": "score against pretraining budget: shares of each pretrained arm's steps (e.g. [0.25, 0.5]) exported "
                "as hf/step_N and fine-tuned too; the final model is the 1.0 point (report: budget.png)"})
    budget_tasks: list[str] = field(default_factory=list, metadata={
        "help": "tasks fine-tuned at the budget points (default: every fine-tuning task)"})
    bootstrap_resamples: int = field(default=2000, metadata={
        "help": "paired-bootstrap resamples of the dev examples per comparison (report, comparisons.jsonl)"})
    bootstrap_seed: int = field(default=0, metadata={"help": "seed of the bootstrap resampling"})

    def validate(self) -> None:
        names = [a.name for a in self.arms]
        if not names:
            raise ConfigError("config key 'arms': give at least one arm")
        if len(set(names)) != len(names):
            raise ConfigError(f"config key 'arms': duplicate arm names {names}")
        for a in self.arms:
            if a.init == "continual" and a.vocab == "in_domain":
                raise ConfigError(f"arm {a.name!r}: a continual run keeps the base vocab or extends it "
                                  f"(vocab='base' or 'extended'), it cannot switch to the in-domain vocab")
            if a.corpus == "general" and not a.model and (a.vocab != "base" or a.init == "untrained"):
                raise ConfigError(f"arm {a.name!r}: corpus='general' pretrains on the general text packed with the "
                                  f"base vocab: set vocab='base' and init='continual' (or 'scratch')")
            if a.corpus == "general" and not a.model and not self.general.corpus:
                raise ConfigError(f"arm {a.name!r}: corpus='general' needs config key 'general.corpus'")
        if any(not 0.0 < f < 1.0 for f in self.budget_fractions):
            raise ConfigError("config key 'budget_fractions': shares strictly between 0 and 1 (the final model is 1.0)")
        if self.bootstrap_resamples < 100:
            raise ConfigError("config key 'bootstrap_resamples' must be >= 100 (2000 or more for a report)")
        if not self.general.init_from and not self.general.corpus and self._needs_base():
            raise ConfigError("config key 'general.corpus' (or 'general.init_from'): the base model needs one")

    def _needs_base(self) -> bool:
        return any(not a.model and (a.init == "continual" or a.vocab != "in_domain" or a.corpus == "general")
                   for a in self.arms)

    def path(self, p: str) -> Path:
        """``${data_root}`` = the shared data folder; other $VARS expand; relative = from base_dir."""
        import os

        from cmedbert.shared_data import shared_data_root

        if p.startswith("${data_root}"):
            p = str(shared_data_root()) + p[len("${data_root}"):]
        q = Path(os.path.expandvars(p)).expanduser()
        return q if q.is_absolute() else Path(self.base_dir or ".") / q


def load(path: str | Path | None, overrides: list[str] | None = None) -> ExperimentConfig:
    base = {"base_dir": str(Path(path).resolve().parent)} if path is not None else {}
    return load_config(ExperimentConfig, path, overrides, base=base)


# ---------------------------------------------------------------------------- helpers

def deep_merge(*layers: dict[str, Any]) -> dict[str, Any]:
    """Later layers win; nested tables merge key by key."""
    out: dict[str, Any] = {}
    for layer in layers:
        for k, v in (layer or {}).items():
            if isinstance(v, dict) and isinstance(out.get(k), dict):
                out[k] = deep_merge(out[k], v)
            else:
                out[k] = json.loads(json.dumps(v))
    return out


def run_step(name: str, folder: Path, cfg: Any, fn: Callable[[Any, Path], Any], stage: str | None = None) -> Path:
    """Run ``fn(cfg, folder)`` unless ``folder`` already holds this exact step (same config hash)."""
    if (folder / "manifest.json").is_file():
        manifest = read_manifest(folder, stage=stage)
        if manifest.get("config_hash") == config_hash(cfg):
            _check_inputs_unchanged(name, folder, manifest)
            log.info("[%s] reusing %s (config %s)", name, folder, manifest["config_hash"])
            return folder
        if stage != "pretrain":  # pretrain decides itself which config changes a finished run tolerates
            raise CmedbertError(f"{folder} holds a {name} step with another config (hash {manifest.get('config_hash')} "
                                f"!= {config_hash(cfg)}): delete it or choose another --out")
    log.info("[%s] -> %s", name, folder)
    result = fn(cfg, folder)
    if isinstance(result, dict) and result.get("status") == "interrupted":
        # pretrain checkpointed on SIGTERM/SIGINT: stop here; running the command again resumes.
        raise StepInterrupted(f"{name} was interrupted at step {result.get('step')} and checkpointed; "
                              f"run the same command again to resume")
    return folder


def _check_inputs_unchanged(name: str, folder: Path, manifest: dict[str, Any]) -> None:
    """A reused step must have been built from the artifacts that are there now: an input folder
    rebuilt since (different manifest hash) makes the step stale."""
    for inp in manifest.get("inputs", []):
        path, pinned = Path(inp.get("path", "")), inp.get("manifest_hash")
        if pinned and (path / "manifest.json").is_file() and manifest_hash(path) != pinned:
            raise CmedbertError(f"{folder} ({name}) was built from {path} as it was before; that input has been "
                                f"rebuilt since: delete {folder} to rebuild it")


def corpus_step(cfg: ExperimentConfig, spec: str, folder: Path, name: str) -> Path:
    """Build (or adopt) a corpus from a config file, a built corpus folder, or a text folder."""
    import cmedbert.corpus.build
    import cmedbert.corpus.config
    src = cfg.path(spec)
    if src.is_dir() and (src / "manifest.json").is_file():
        read_manifest(src, stage="corpus")
        return src
    if src.is_file():
        ccfg = cmedbert.corpus.config.load(src, [])
        data = deep_merge(to_dict(ccfg), cfg.corpus)
    elif src.is_dir():
        data = deep_merge({"sources": [{"name": src.name, "type": "plain_text", "paths": [str(src / "**" / "*.txt")]}],
                           "base_dir": str(src)}, cfg.corpus)
    else:
        raise CmedbertError(f"{name} corpus not found: {src} (a corpus config, corpus folder or text folder)")
    ccfg = from_dict(cmedbert.corpus.config.CorpusConfig, data)
    return run_step(f"{name} corpus", folder, ccfg, cmedbert.corpus.build.main, stage="corpus")


def _stage_cfg(cls: type, *layers: dict[str, Any]) -> Any:
    return from_dict(cls, deep_merge(*layers))


# ---------------------------------------------------------------------------- the pipeline

def build_base(cfg: ExperimentConfig, out: Path) -> tuple[str, Path]:
    """(base model id/folder, base tokenizer id/folder): an existing checkpoint, or a tiny one
    pretrained here on the general corpus."""
    if cfg.general.init_from:
        return cfg.general.init_from, Path(cfg.general.init_from)
    import cmedbert.tokenizer.pack
    import cmedbert.tokenizer.train
    gen = out / "general"
    gcorpus = corpus_step(cfg, cfg.general.corpus, gen / "corpus", "general")
    tcfg = _stage_cfg(cmedbert.tokenizer.train.TrainConfig, {"corpus": str(gcorpus), "vocab_size": cfg.general.vocab_size,
                                                    "min_frequency": 1})
    gtok = run_step("general tokenizer", gen / "tokenizer", tcfg, cmedbert.tokenizer.train.main, stage="tokenizer")
    packed = pack_step(cfg, gcorpus, gtok, gen / "packed", "general")
    run = pretrain_step(cfg, "base", gen / "base", "scratch", gtok, packed, None, cfg.general.train_tokens,
                        cfg.general.pretrain)
    return str(run / "model"), gtok


def pack_step(cfg: ExperimentConfig, corpus_dir: Path, tok_dir: Path, folder: Path, name: str) -> Path:
    import cmedbert.tokenizer.pack
    pcfg = _stage_cfg(cmedbert.tokenizer.pack.PackConfig, {"corpus": str(corpus_dir), "tokenizer": str(tok_dir),
                                                  "seq_len": cfg.seq_len, "kg_terms": [str(cfg.path(t)) for t in cfg.kg_terms]},
                      cfg.pack)
    return run_step(f"{name} pack", folder, pcfg, cmedbert.tokenizer.pack.main, stage="packed")


def pretrain_step(cfg: ExperimentConfig, name: str, folder: Path, init: str, tok_dir: Path, packed: Path,
                  init_from: str | None, train_tokens: int, extra: dict[str, Any] | None = None) -> Path:
    import cmedbert.pretrain.train
    from cmedbert.pretrain.config import PretrainConfig

    layers = [{"metrics": {"progress_bar": False}}, cfg.pretrain, extra or {},
              {"tokenizer": str(tok_dir), "data": {"path": str(packed)}, "init": init, "init_from": init_from,
               "train": {"train_tokens": train_tokens}, "seed": cfg.seed}]
    pcfg = _stage_cfg(PretrainConfig, *layers)
    if cfg.budget_fractions and name != "base":  # the budget points of an arm: hf/step_N exports
        from cmedbert.pretrain.data import plan_steps

        total = plan_steps(pcfg, [cfg.seq_len] * len(pcfg.data.resolved_phases()))
        steps = budget_steps(cfg.budget_fractions, total)
        layers.append({"checkpoint": {"hf_export_steps": sorted(set(pcfg.checkpoint.hf_export_steps) | set(steps.values()))}})
        pcfg = _stage_cfg(PretrainConfig, *layers)
    return run_step(f"pretrain {name}", folder, pcfg, cmedbert.pretrain.train.main, stage="pretrain")


def budget_steps(fractions: list[float], total_steps: int) -> dict[float, int]:
    """fraction -> optimizer step of a run of ``total_steps`` steps."""
    return {f: max(1, min(total_steps, round(f * total_steps))) for f in fractions}


def budget_step(cfg: ExperimentConfig, out: Path, models: dict[str, Path]) -> tuple[Path, dict[str, Any]] | None:
    """Fine-tune every pretrained arm's budget exports (hf/step_N at ``budget_fractions`` of its
    steps) on ``budget_tasks``; returns (finetune folder, {checkpoint name: arm, fraction, step,
    tokens}) or None without budget points. Tokens count the arm's run plus, for arms that start
    from the general base pretrained here, the base's tokens (total compute)."""
    import cmedbert.finetune.run
    from cmedbert.finetune.config import FinetuneConfig

    if not cfg.budget_fractions:
        return None
    points, ckpts = {}, {}
    for arm in cfg.arms:
        run = models[arm.name].parent
        if arm.model or arm.init == "untrained" or not (run / "manifest.json").is_file():
            continue
        manifest = read_manifest(run, stage="pretrain")
        per_step = int(manifest["counts"]["tokens_seen"]) / max(1, int(manifest["counts"]["steps"]))
        base = _base_tokens(out) if arm.init == "continual" and not cfg.general.init_from else 0
        for f in cfg.budget_fractions:
            step = budget_steps([f], int(manifest["counts"]["steps"]))[f]
            folder = run / "hf" / f"step_{step}"
            if not (folder / "config.json").is_file():
                raise CmedbertError(f"budget point {f:g} of arm {arm.name!r}: {folder} was not exported "
                                    f"(the run predates budget_fractions: delete {run} to retrain it)")
            name = f"{arm.name}@{round(100 * f)}%"
            ckpts[name] = str(folder)
            points[name] = {"arm": arm.name, "fraction": f, "step": step, "tokens": int(base + step * per_step)}
    if not ckpts:
        return None
    ft = dict(cfg.finetune)
    if cfg.budget_tasks:
        ft["tasks"] = list(cfg.budget_tasks)
    fcfg = _stage_cfg(FinetuneConfig, ft, {"models": ckpts})
    folder = run_step("finetune budget points", out / "finetune-budget", fcfg, cmedbert.finetune.run.main, stage="finetune")
    return folder, points


def _base_tokens(out: Path) -> int:
    base = out / "general" / "base"
    if (base / "manifest.json").is_file():
        return int(read_manifest(base, stage="pretrain").get("counts", {}).get("tokens_seen", 0))
    return 0


def untrained_step(cfg: ExperimentConfig, name: str, folder: Path, tok_dir: Path, packed: Path) -> Path:
    """A randomly initialized model of the arms' architecture, exported like a run (the floor)."""
    from cmedbert.pretrain.config import PretrainConfig

    pcfg = _stage_cfg(PretrainConfig, cfg.pretrain, {"tokenizer": str(tok_dir), "data": {"path": str(packed)},
                                                     "init": "scratch", "train": {"max_steps": 1}, "seed": cfg.seed})

    def build(pcfg: Any, folder: Path) -> None:
        from cmedbert.pretrain.model import build_model
        from cmedbert.tokenizer.base import load_tokenizer

        tok = load_tokenizer(tok_dir)
        model = build_model(pcfg, tok, tok_dir, cfg.seq_len)
        with atomic_output(folder) as tmp:
            model.save_pretrained(tmp / "model", safe_serialization=True)
            tok.save_pretrained(tmp / "model")
            write_manifest(tmp, stage="untrained", config=pcfg, inputs=[tok_dir], seed=cfg.seed,
                           counts={"steps": 0, "tokens_seen": 0})

    return run_step(f"untrained {name}", folder, pcfg, build, stage="untrained")


def build_tokenizers(cfg: ExperimentConfig, out: Path, mcorpus: Path, base_tok: Path) -> dict[str, Path]:
    """The vocabularies the arms need: base, extended (audit before/after inside), in-domain."""
    import cmedbert.tokenizer.extend
    import cmedbert.tokenizer.train
    wanted = {a.vocab for a in cfg.arms if not a.model}
    toks: dict[str, Path] = {}
    if "base" in wanted:
        toks["base"] = base_tok
    kg = [str(cfg.path(t)) for t in cfg.kg_terms]
    if "extended" in wanted:
        ecfg = _stage_cfg(cmedbert.tokenizer.extend.ExtendConfig, {"base": str(base_tok), "corpus": str(mcorpus), "kg_terms": kg},
                          cfg.extend)
        toks["extended"] = run_step("extend tokenizer", out / "tokenizer", ecfg, cmedbert.tokenizer.extend.main, stage="tokenizer")
    if "in_domain" in wanted:
        tcfg = _stage_cfg(cmedbert.tokenizer.train.TrainConfig, {"corpus": str(mcorpus), "vocab_size": cfg.in_domain_vocab_size,
                                                        "kg_terms": kg, "min_frequency": 1})
        toks["in_domain"] = run_step("in-domain tokenizer", out / "tokenizer-in-domain", tcfg, cmedbert.tokenizer.train.main,
                                     stage="tokenizer")
    return toks


def general_packed(cfg: ExperimentConfig, out: Path, base_tok: Path) -> Path:
    """The general corpus packed with the base vocab (the base's own pretraining data when the base
    was pretrained here: the same step, reused)."""
    gcorpus = corpus_step(cfg, cfg.general.corpus, out / "general" / "corpus", "general")
    return pack_step(cfg, gcorpus, base_tok, out / "general" / "packed", "general")


def build_arms(cfg: ExperimentConfig, out: Path, base_model: str | None, toks: dict[str, Path],
               packed: dict[str, Path]) -> dict[str, Path]:
    """One model folder per arm: pretrained at the shared token budget, or untrained."""
    models = {}
    for arm in cfg.arms:
        folder = out / "pretrain" / arm.name
        if arm.model:  # collected, not trained here
            models[arm.name] = cfg.path(arm.model)
            if not (models[arm.name] / "config.json").is_file():
                raise CmedbertError(f"arm {arm.name!r}: {models[arm.name]} is not a model folder (no config.json)")
            continue
        if arm.init == "untrained":
            untrained_step(cfg, arm.name, folder, toks[arm.vocab], packed[arm.vocab])
        elif arm.corpus == "general":
            pretrain_step(cfg, arm.name, folder, arm.init, toks[arm.vocab], general_packed(cfg, out, toks[arm.vocab]),
                          base_model if arm.init == "continual" else None, arm.train_tokens or cfg.train_tokens)
        else:
            pretrain_step(cfg, arm.name, folder, arm.init, toks[arm.vocab], packed[arm.vocab],
                          base_model if arm.init == "continual" else None, arm.train_tokens or cfg.train_tokens)
        models[arm.name] = folder / "model"
    return models


def finetune_step(cfg: ExperimentConfig, out: Path, models: dict[str, Path]) -> Path:
    import cmedbert.finetune.run
    from cmedbert.finetune.config import FinetuneConfig

    fcfg = _stage_cfg(FinetuneConfig, cfg.finetune, {"models": {k: str(v) for k, v in models.items()}})
    return run_step("finetune", out / "finetune", fcfg, cmedbert.finetune.run.main, stage="finetune")


def main(cfg: ExperimentConfig, out: str | Path) -> Path:
    """Run (or reuse) every step and write the report; returns the path of report.md."""
    out = Path(out).absolute()
    out.mkdir(parents=True, exist_ok=True)
    base_model, base_tok = build_base(cfg, out) if cfg._needs_base() else (None, None)
    mcorpus = corpus_step(cfg, cfg.medical_corpus, out / "corpus", "medical")
    toks = build_tokenizers(cfg, out, mcorpus, base_tok)
    packed = {v: pack_step(cfg, mcorpus, t, out / "packed" / v, f"medical/{v}") for v, t in toks.items()}
    models = build_arms(cfg, out, base_model, toks, packed)
    ft = finetune_step(cfg, out, models)
    budget = budget_step(cfg, out, models)
    from cmedbert.compare import write_report

    return write_report(cfg, out, models, ft, budget=budget)
