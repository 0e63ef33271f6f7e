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
    packed/<vocab>-<L>/, general/packed-<L>/
                                  the same at short_seq_len L, read first by runs from scratch
    pretrain/<arm>/               one pretraining run per arm (model/ = its HF export)
    finetune/                     CBLUE fine-tuning of every arm x task x seed
    report.md  loss.png  scores.png  results.jsonl  runs.json

Every step is planned before any runs (:func:`plan`): its stage (the declaration in the stage
package, :mod:`cmedbert.stage`), its folder and its fully typed config. A wrong key or type anywhere
in the experiment config therefore fails in seconds, naming the key, before an output folder exists.
A step whose folder already holds a manifest with the same config hash is reused, not recomputed;
one with a different config is an error (choose another --out or delete it).

This module runs steps only; :mod:`cmedbert.compare` runs the plan and writes the report.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Optional

from cmedbert.artifact import atomic_output, manifest_hash, read_manifest, write_manifest
from cmedbert.config import ConfigError, config_hash, deep_merge, load_config, to_dict
from cmedbert.errors import CmedbertError
from cmedbert.stage import Stage

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
    model: Optional[str] = field(default=None, metadata={"path": "path",
        "help": "collect an existing checkpoint instead of training this arm: a pretrain run's model/ folder or any "
                "HF model folder (init/vocab then only label the arm)"})


@dataclass
class GeneralConfig:
    init_from: Optional[str] = field(default=None, metadata={"path": "id_or_dir",
        "help": "an existing general checkpoint (hub id or folder, e.g. bert-base-chinese) used as the base; "
                "when empty a base is pretrained on `corpus` below"})
    corpus: str = field(default="", metadata={"path": "path",
        "help": "general-domain text for the base: a corpus config (.toml/.yaml), a built corpus folder, or any "
                "folder of .txt files (one document per line)"})
    vocab_size: int = field(default=8000, metadata={"help": "base WordPiece vocab trained on the general corpus (tokens)"})
    train_tokens: int = field(default=200_000, metadata={"help": "base pretraining budget (sequence positions)"})
    pretrain: dict[str, Any] = field(default_factory=dict, metadata={
        "help": "pretrain config keys for the base run only (over the shared `pretrain` table)"})


@dataclass
class ExperimentConfig:
    medical_corpus: str = field(metadata={"path": "path",
        "help": "medical text: a corpus config (.toml/.yaml), a built corpus folder, or a folder of .txt files"})
    general: GeneralConfig = field(default_factory=GeneralConfig, metadata={"help": "the general-domain base"})
    arms: list[ArmConfig] = field(default_factory=lambda: [
        ArmConfig("scratch", "scratch", "in_domain"), ArmConfig("continual", "continual", "extended")],
        metadata={"help": "pretraining arms compared at the same token budget"})
    train_tokens: int = field(default=400_000, metadata={
        "help": "pretraining budget of every arm (sequence positions = global batch x seq_len per step)"})
    kg_terms: list[str] = field(default_factory=list, metadata={"path": "path",
        "help": "KG term lists (one term per line, or term<TAB>freq): jieba user dictionary, entity flags, extension"})
    in_domain_vocab_size: int = field(default=8000, metadata={"help": "vocab of the in-domain tokenizer (tokens)"})
    seq_len: int = field(default=128, metadata={"help": "packed sequence length (tokens)"})
    short_seq_len: int = field(default=0, metadata={
        "help": "sequence-length warmup of the runs from scratch (tokens; 0 = off): their first short_seq_fraction of "
                "optimizer steps see sequences this long, the rest seq_len. Short sequences are how tiny encoders leave "
                "the unigram plateau on a CPU budget (docs/experiments/mlm-plateau.md); continual runs start from a "
                "model that already uses context and train at seq_len throughout"})
    short_seq_fraction: float = field(default=0.75, metadata={
        "help": "share of a from-scratch run's optimizer steps spent at short_seq_len (0 < f < 1)"})
    # The stage tables below are layers over what the experiment fills in (inputs, budgets); plan()
    # merges them into each step's typed stage config, so their keys and types are checked before
    # any step runs, and errors name e.g. 'pretrain.optimizer.lr'.
    corpus: dict[str, Any] = field(default_factory=dict, metadata={"help": "corpus config keys applied to both corpora"})
    extend: dict[str, Any] = field(default_factory=dict, metadata={"help": "tokenizer extend config keys"})
    pack: dict[str, Any] = field(default_factory=dict, metadata={"help": "tokenizer pack config keys"})
    pretrain: dict[str, Any] = field(default_factory=dict, metadata={
        "help": "pretrain config keys shared by every run (model, batch, optimizer, engine, ...)"})
    finetune: dict[str, Any] = field(default_factory=dict, metadata={
        "help": "finetune config keys (tasks, seeds, data_dir, hp, ...); models are filled in"})
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
        if self.short_seq_len and not 0 < self.short_seq_len < self.seq_len:
            raise ConfigError(f"config key 'short_seq_len' must be between 0 and seq_len ({self.seq_len}), "
                              f"got {self.short_seq_len}")
        if self.short_seq_len and not 0.0 < self.short_seq_fraction < 1.0:
            raise ConfigError("config key 'short_seq_fraction': a share strictly between 0 and 1")
        if self.bootstrap_resamples < 100:
            raise ConfigError("config key 'bootstrap_resamples' must be >= 100 (2000 or more for a report)")
        if not self.general.init_from and not self.general.corpus and self._needs_base():
            raise ConfigError("config key 'general.corpus' (or 'general.init_from'): the base model needs one")

    def _needs_base(self) -> bool:
        return any(not a.model and (a.init == "continual" or a.vocab != "in_domain" or a.corpus == "general")
                   for a in self.arms)

    def path(self, p: str) -> Path:
        """A path of this config by the path rule (:func:`cmedbert.paths.resolve`)."""
        from cmedbert.paths import resolve

        return resolve(p)


def load(path: str | Path | None, overrides: list[str] | None = None) -> ExperimentConfig:
    return load_config(ExperimentConfig, path, overrides)


# ---------------------------------------------------------------------------- helpers

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


@dataclass
class Step:
    """One planned step: a declared stage, its output folder and its typed config."""

    name: str
    stage: Stage
    folder: Path
    cfg: Any
    run: Callable[[Any, Path], Any] | None = None  # instead of stage.execute (the untrained arm)

    def execute(self) -> Path:
        return run_step(self.name, self.folder, self.cfg, self.run or self.stage.execute, stage=self.stage.name)


@dataclass
class Plan:
    """Every step in order, the model folder of every arm, and the fine-tuning step. ``budget`` is
    filled by :func:`main` after the runs: (fine-tuning folder of the budget points, their meta)."""

    steps: list[Step]
    models: dict[str, Path]
    finetune: Step
    budget: tuple[Path, dict[str, Any]] | None = None

    def configs(self) -> dict[str, Any]:
        """step name -> typed stage config."""
        return {s.name: s.cfg for s in self.steps}


# ---------------------------------------------------------------------------- planning

def _typed(stage: Stage, where: str, *layers: dict[str, Any]) -> Any:
    """The stage's typed config from layered plain data; a bad key/type names ``where.key``."""
    return stage.build_config(deep_merge(*layers), where)


def plan_corpus(cfg: ExperimentConfig, spec: str, folder: Path, name: str) -> tuple[Path, list[Step]]:
    """(corpus folder, steps): adopt a built corpus folder, or plan a build from a corpus config or
    a folder of text files."""
    from cmedbert.corpus.stage import BUILD

    src = cfg.path(spec)
    if src.is_dir() and (src / "manifest.json").is_file():
        read_manifest(src, stage=BUILD.name)
        return src, []
    if src.is_file():
        data = deep_merge(to_dict(BUILD.load(src, [])), cfg.corpus)
    elif src.is_dir():
        data = deep_merge({"sources": [{"name": src.name, "type": "plain_text", "paths": [str(src / "**" / "*.txt")]}]}, cfg.corpus)
    else:
        raise CmedbertError(f"{name} corpus not found: {src} (a corpus config, corpus folder or text folder)")
    return folder, [Step(f"{name} corpus", BUILD, folder, BUILD.build_config(data, "corpus"))]


def plan_pack(cfg: ExperimentConfig, corpus_dir: Path, tok_dir: Path, folder: Path, name: str,
              seq_len: int | None = None) -> Step:
    from cmedbert.tokenizer.stage import PACK

    return Step(f"{name} pack", PACK, folder, _typed(PACK, "pack", {
        "corpus": str(corpus_dir), "tokenizer": str(tok_dir), "seq_len": seq_len or cfg.seq_len,
        "kg_terms": [str(cfg.path(t)) for t in cfg.kg_terms]}, cfg.pack))


def short_pack_folder(packed: Path, short_seq_len: int) -> Path:
    """Where the short-sequence pack of the packed folder ``packed`` goes (``<packed>-<L>``)."""
    return packed.with_name(f"{packed.name}-{short_seq_len}")


def run_data(cfg: ExperimentConfig, init: str, packed: Path) -> tuple[dict[str, Any], list[int]]:
    """(pretrain ``data`` table, sequence length of each phase) of a run of ``init`` on ``packed``:
    runs from scratch start with the short-sequence warmup when ``short_seq_len`` is set."""
    if init != "scratch" or not cfg.short_seq_len:
        return {"path": str(packed)}, [cfg.seq_len]
    f = cfg.short_seq_fraction
    return ({"phases": [{"path": str(short_pack_folder(packed, cfg.short_seq_len)), "fraction": f},
                        {"path": str(packed), "fraction": round(1.0 - f, 12)}]},
            [cfg.short_seq_len, cfg.seq_len])


def plan_packs(cfg: ExperimentConfig, corpus_dir: Path, tok_dir: Path, folder: Path, name: str,
               short: bool) -> list[Step]:
    """The pack at ``seq_len`` and, for data a run from scratch reads, the short-sequence pack."""
    steps = [plan_pack(cfg, corpus_dir, tok_dir, folder, name)]
    if short and cfg.short_seq_len:
        steps.append(plan_pack(cfg, corpus_dir, tok_dir, short_pack_folder(folder, cfg.short_seq_len),
                               f"{name} (seq_len {cfg.short_seq_len})", cfg.short_seq_len))
    return steps


def plan_pretrain(cfg: ExperimentConfig, name: str, folder: Path, init: str, tok_dir: Path, packed: Path,
                  init_from: str | None, train_tokens: int, extra: dict[str, Any] | None = None) -> Step:
    from cmedbert.pretrain.stage import PRETRAIN

    data, seq_lens = run_data(cfg, init, packed)
    layers = [{"metrics": {"progress_bar": False}}, cfg.pretrain, extra or {},
              {"tokenizer": str(tok_dir), "data": data, "init": init, "init_from": init_from,
               "train": {"train_tokens": train_tokens}, "seed": cfg.seed}]
    pcfg = _typed(PRETRAIN, "pretrain", *layers)
    if cfg.budget_fractions and name != "base":  # the budget points of an arm: hf/step_N exports
        from cmedbert.pretrain.data import plan_steps

        total = plan_steps(pcfg, seq_lens)
        steps = budget_steps(cfg.budget_fractions, total)
        layers.append({"checkpoint": {"hf_export_steps": sorted(set(pcfg.checkpoint.hf_export_steps) | set(steps.values()))}})
        pcfg = _typed(PRETRAIN, "pretrain", *layers)
    return Step(f"pretrain {name}", PRETRAIN, folder, pcfg)


def budget_steps(fractions: list[float], total_steps: int) -> dict[float, int]:
    """fraction -> optimizer step of a run of ``total_steps`` steps."""
    return {f: max(1, min(total_steps, round(f * total_steps))) for f in fractions}


UNTRAINED = Stage(name="untrained", command=(), config="cmedbert.pretrain.config:PretrainConfig",
                  run="cmedbert.experiment:build_untrained",
                  help="a randomly initialized model of the arms' architecture, exported like a run (the floor)")


def build_untrained(pcfg: Any, folder: Path, seq_len: int) -> None:
    from cmedbert.pretrain.model import build_model
    from cmedbert.tokenizer.base import load_tokenizer

    tok = load_tokenizer(pcfg.tokenizer)
    model = build_model(pcfg, tok, Path(pcfg.tokenizer), seq_len)
    with atomic_output(folder) as tmp:
        model.save_pretrained(tmp / "model", safe_serialization=True)
        tok.save_pretrained(tmp / "model")
        write_manifest(tmp, stage=UNTRAINED.name, config=pcfg, inputs=[Path(pcfg.tokenizer)], seed=pcfg.seed,
                       counts={"steps": 0, "tokens_seen": 0})


def plan_untrained(cfg: ExperimentConfig, name: str, folder: Path, tok_dir: Path, packed: Path) -> Step:
    import functools

    pcfg = _typed(UNTRAINED, "pretrain", cfg.pretrain, {"tokenizer": str(tok_dir), "data": {"path": str(packed)},
                                                        "init": "scratch", "train": {"max_steps": 1}, "seed": cfg.seed})
    return Step(f"untrained {name}", UNTRAINED, folder, pcfg, run=functools.partial(build_untrained, seq_len=cfg.seq_len))


def plan_base(cfg: ExperimentConfig, out: Path) -> tuple[str, Path, list[Step]]:
    """(base model id/folder, base tokenizer id/folder, steps): an existing checkpoint, or a tiny one
    pretrained here on the general corpus."""
    if cfg.general.init_from:
        return cfg.general.init_from, Path(cfg.general.init_from), []
    from cmedbert.tokenizer.stage import TRAIN

    gen = out / "general"
    gcorpus, steps = plan_corpus(cfg, cfg.general.corpus, gen / "corpus", "general")
    gtok = gen / "tokenizer"
    steps.append(Step("general tokenizer", TRAIN, gtok, _typed(TRAIN, "general", {
        "corpus": str(gcorpus), "vocab_size": cfg.general.vocab_size, "min_frequency": 1})))
    steps += plan_packs(cfg, gcorpus, gtok, gen / "packed", "general", short=True)
    steps.append(plan_pretrain(cfg, "base", gen / "base", "scratch", gtok, gen / "packed", None,
                               cfg.general.train_tokens, cfg.general.pretrain))
    return str(gen / "base" / "model"), gtok, steps


def plan_tokenizers(cfg: ExperimentConfig, out: Path, mcorpus: Path, base_tok: Path | None) -> tuple[dict[str, Path], list[Step]]:
    """The vocabularies the arms need: base, extended (audit before/after inside), in-domain."""
    from cmedbert.tokenizer.stage import EXTEND, TRAIN

    wanted = {a.vocab for a in cfg.arms if not a.model}
    toks: dict[str, Path] = {}
    steps: list[Step] = []
    if "base" in wanted:
        toks["base"] = base_tok
    kg = [str(cfg.path(t)) for t in cfg.kg_terms]
    if "extended" in wanted:
        toks["extended"] = out / "tokenizer"
        steps.append(Step("extend tokenizer", EXTEND, toks["extended"], _typed(
            EXTEND, "extend", {"base": str(base_tok), "corpus": str(mcorpus), "kg_terms": kg}, cfg.extend)))
    if "in_domain" in wanted:
        toks["in_domain"] = out / "tokenizer-in-domain"
        steps.append(Step("in-domain tokenizer", TRAIN, toks["in_domain"], _typed(TRAIN, "in_domain", {
            "corpus": str(mcorpus), "vocab_size": cfg.in_domain_vocab_size, "kg_terms": kg, "min_frequency": 1})))
    return toks, steps


def plan_general_packed(cfg: ExperimentConfig, out: Path, base_tok: Path, init: str) -> tuple[Path, list[Step]]:
    """The general corpus packed with the base vocab (the base's own pretraining data when the base
    was pretrained here: the same steps, planned once)."""
    gcorpus, steps = plan_corpus(cfg, cfg.general.corpus, out / "general" / "corpus", "general")
    packs = plan_packs(cfg, gcorpus, base_tok, out / "general" / "packed", "general", short=init == "scratch")
    return packs[0].folder, steps + packs


def plan_arms(cfg: ExperimentConfig, out: Path, base_model: str | None, toks: dict[str, Path],
              packed: dict[str, Path]) -> tuple[dict[str, Path], list[Step]]:
    """(arm -> model folder, steps): each arm pretrained at the shared token budget, untrained, or
    collected as is (``arm.model``)."""
    models: dict[str, Path] = {}
    steps: list[Step] = []
    for arm in cfg.arms:
        folder = out / "pretrain" / arm.name
        if arm.model:  # collected, not trained here
            models[arm.name] = cfg.path(arm.model)
            if not (models[arm.name] / "config.json").is_file():
                raise CmedbertError(f"arm {arm.name!r}: {models[arm.name]} is not a model folder (no config.json)")
            continue
        if arm.init == "untrained":
            steps.append(plan_untrained(cfg, arm.name, folder, toks[arm.vocab], packed[arm.vocab]))
        else:
            data = packed.get(arm.vocab)
            if arm.corpus == "general":  # the general text packed with the base vocab
                data, general = plan_general_packed(cfg, out, toks[arm.vocab], arm.init)
                steps += general
            steps.append(plan_pretrain(cfg, arm.name, folder, arm.init, toks[arm.vocab], data,
                                       base_model if arm.init == "continual" else None,
                                       arm.train_tokens or cfg.train_tokens))
        models[arm.name] = folder / "model"
    return models, steps


def plan_finetune(cfg: ExperimentConfig, out: Path, models: dict[str, Path]) -> Step:
    from cmedbert.finetune.stage import FINETUNE

    return Step("finetune", FINETUNE, out / "finetune", _typed(
        FINETUNE, "finetune", cfg.finetune, {"models": {k: str(v) for k, v in models.items()}}))


def plan(cfg: ExperimentConfig, out: str | Path) -> Plan:
    """Every step with its typed config, in order; reads config files only, writes nothing."""
    out = Path(out).absolute()
    base_model, base_tok, steps = plan_base(cfg, out) if cfg._needs_base() else (None, None, [])
    mcorpus, corpus_steps = plan_corpus(cfg, cfg.medical_corpus, out / "corpus", "medical")
    toks, tok_steps = plan_tokenizers(cfg, out, mcorpus, base_tok)
    scratch_vocabs = {a.vocab for a in cfg.arms if not a.model and a.init == "scratch" and a.corpus != "general"}
    # every vocab's medical pack, also for an arm pretrained on general text: its valid split is the
    # held-out medical text of the report's intrinsic check
    packs = {v: plan_packs(cfg, mcorpus, t, out / "packed" / v, f"medical/{v}", short=v in scratch_vocabs)
             for v, t in toks.items()}
    models, arm_steps = plan_arms(cfg, out, base_model, toks, {v: p[0].folder for v, p in packs.items()})
    ft = plan_finetune(cfg, out, models)
    if cfg.budget_fractions:  # the budget points' fine-tuning config: checked now, built after the runs
        _budget_finetune_config(cfg, {"check": str(out)})
    return Plan(_once(steps + corpus_steps + tok_steps + [s for p in packs.values() for s in p] + arm_steps + [ft]), models, ft)


def _once(steps: list[Step]) -> list[Step]:
    """Each folder planned once (the general corpus/pack serve the base and general arms); the same
    folder with two configs is an error now rather than after hours of training."""
    seen: dict[Path, Step] = {}
    for s in steps:
        if s.folder in seen and config_hash(seen[s.folder].cfg) != config_hash(s.cfg):
            raise CmedbertError(f"{s.folder} is planned twice with different configs ({seen[s.folder].name}, {s.name})")
        seen.setdefault(s.folder, s)
    return list(seen.values())


def _budget_finetune_config(cfg: ExperimentConfig, models: dict[str, str]) -> Any:
    from cmedbert.finetune.stage import FINETUNE

    ft = dict(cfg.finetune)
    if cfg.budget_tasks:
        ft["tasks"] = list(cfg.budget_tasks)
    return _typed(FINETUNE, "finetune", ft, {"models": models})


def budget_step(cfg: ExperimentConfig, out: Path, models: dict[str, Path]) -> tuple[Path, dict[str, Any]] | None:
    """Fine-tune every pretrained arm's budget exports (hf/step_N at ``budget_fractions`` of its
    steps) on ``budget_tasks``; returns (finetune folder, {checkpoint name: arm, fraction, step,
    tokens}) or None without budget points. Tokens count the arm's run plus, for arms that start
    from the general base pretrained here, the base's tokens (total compute). Runs after the
    pretraining runs: the points are read from their manifests."""
    from cmedbert.finetune.stage import FINETUNE

    if not cfg.budget_fractions:
        return None
    points, ckpts = {}, {}
    for arm in cfg.arms:
        run = models[arm.name].parent
        if arm.model or arm.init == "untrained" or not (run / "manifest.json").is_file():
            continue
        manifest = read_manifest(run, stage="pretrain")
        base = _base_tokens(out) if arm.init == "continual" and not cfg.general.init_from else 0
        for f in cfg.budget_fractions:
            step = budget_steps([f], int(manifest["counts"]["steps"]))[f]
            folder = run / "hf" / f"step_{step}"
            if not (folder / "config.json").is_file():
                raise CmedbertError(f"budget point {f:g} of arm {arm.name!r}: {folder} was not exported "
                                    f"(the run predates budget_fractions: delete {run} to retrain it)")
            name = f"{arm.name}@{round(100 * f)}%"
            ckpts[name] = str(folder)
            tokens = tokens_at_step(manifest, step)
            points[name] = {"arm": arm.name, "fraction": f, "step": step, "tokens": int(base + tokens)}
    if not ckpts:
        return None
    step = Step("finetune budget points", FINETUNE, out / "finetune-budget", _budget_finetune_config(cfg, ckpts))
    return step.execute(), points


def tokens_at_step(manifest: dict[str, Any], step: int) -> int:
    """Token positions a pretraining run (its manifest) had seen after ``step`` optimizer steps:
    each phase of the run's own config at its own tokens per step, within the trainer's phase
    bounds (:func:`cmedbert.pretrain.data.phase_bounds`)."""
    from cmedbert.pretrain.data import phase_bounds

    per_step = manifest.get("pretrain", {}).get("tokens_per_step", {})
    total = int(manifest["counts"]["steps"])
    fractions = [float(p["fraction"]) for p in manifest["config"]["data"].get("phases") or []] or [1.0]
    if len(per_step) != len(fractions):  # no per-phase figures: the run's average
        return round(step * int(manifest["counts"]["tokens_seen"]) / max(1, total))
    bounds = phase_bounds(fractions, total)
    return sum(int(per_step[str(i)]) * max(0, min(step, bounds[i + 1]) - bounds[i]) for i in range(len(fractions)))


def _base_tokens(out: Path) -> int:
    base = out / "general" / "base"
    if (base / "manifest.json").is_file():
        return int(read_manifest(base, stage="pretrain").get("counts", {}).get("tokens_seen", 0))
    return 0


def main(cfg: ExperimentConfig, out: str | Path, the_plan: Plan | None = None) -> Plan:
    """Run (or reuse) every planned step, then the budget points' fine-tuning; returns the plan
    (models, fine-tuning folder, budget points)."""
    the_plan = the_plan or plan(cfg, out)
    out = Path(out).absolute()
    out.mkdir(parents=True, exist_ok=True)
    for step in the_plan.steps:
        step.execute()
    the_plan.budget = budget_step(cfg, out, the_plan.models)
    return the_plan
