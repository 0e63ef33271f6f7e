"""The pretrain stage's config: one dataclass tree, every field documented with its unit.

Units are named everywhere: *sequences* vs *tokens*, *global* (all ranks, one optimizer step)
vs *per rank* (one forward pass on one process).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

from cmedbert.errors import ConfigError

# Model size presets (BERT shapes). Free fields in ModelConfig override a preset.
PRESETS: dict[str, dict[str, int]] = {
    "tiny": {"hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 512},
    "small": {"hidden_size": 512, "num_hidden_layers": 4, "num_attention_heads": 8, "intermediate_size": 2048},
    "base": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072},
    "large": {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16, "intermediate_size": 4096},
}

# Dense peak TFLOP/s per device (bf16/fp16 tensor cores; fp32 runs use the TF32 figure), used for MFU.
PEAK_TFLOPS: dict[str, dict[str, float]] = {
    "A100": {"bf16": 312.0, "fp16": 312.0, "fp32": 156.0},
    "H100": {"bf16": 989.0, "fp16": 989.0, "fp32": 494.5},
    "H200": {"bf16": 989.0, "fp16": 989.0, "fp32": 494.5},
}


@dataclass
class PhaseConfig:
    path: str = field(metadata={"path": "path", "help": "packed folder (stage 'packed') used in this phase"})
    fraction: float = field(default=1.0, metadata={"help": "share of the run's optimizer steps spent in this phase (phases must sum to 1)"})


@dataclass
class DataConfig:
    path: Optional[str] = field(default=None, metadata={"path": "path", "help": "packed folder (stage 'packed'); shorthand for a single phase"})
    phases: list[PhaseConfig] = field(default_factory=list, metadata={"help": "sequence-length phases in order, e.g. [{path=packed128, fraction=0.9}, {path=packed512, fraction=0.1}]"})
    train_split: str = field(default="train", metadata={"help": "split of the packed folders to train on"})
    valid_split: str = field(default="valid", metadata={"help": "held-out split of the packed folders to evaluate on"})

    def resolved_phases(self) -> list[PhaseConfig]:
        if self.phases:
            return list(self.phases)
        return [PhaseConfig(path=self.path)] if self.path else []


@dataclass
class ModelConfig:
    preset: Literal["tiny", "small", "base", "large"] = field(default="base", metadata={"help": "BERT size preset for init=scratch (free fields below override it)"})
    hidden_size: Optional[int] = field(default=None, metadata={"help": "hidden width (overrides preset)"})
    num_hidden_layers: Optional[int] = field(default=None, metadata={"help": "transformer layers (overrides preset)"})
    num_attention_heads: Optional[int] = field(default=None, metadata={"help": "attention heads (overrides preset)"})
    intermediate_size: Optional[int] = field(default=None, metadata={"help": "FFN width (overrides preset)"})
    max_position_embeddings: int = field(default=512, metadata={"help": "position table size (tokens); must cover the longest phase"})
    hidden_dropout_prob: float = field(default=0.1, metadata={"help": "dropout on hidden states"})
    attention_probs_dropout_prob: float = field(default=0.1, metadata={"help": "dropout on attention probabilities"})
    tie_word_embeddings: bool = field(default=True, metadata={"help": "share the input embedding matrix with the MLM decoder (BERT default)"})
    initializer_range: float = field(default=0.02, metadata={"help": "std of the normal init of weights and embeddings (init=scratch)"})
    attn_implementation: Literal["sdpa", "eager"] = field(default="sdpa", metadata={"help": "attention kernel (sdpa is faster on CPU and GPU)"})

    def shape(self) -> dict[str, int]:
        out = dict(PRESETS[self.preset])
        for k in out:
            v = getattr(self, k)
            if v is not None:
                out[k] = v
        return out


@dataclass
class BatchConfig:
    global_batch: int = field(default=256, metadata={"help": "sequences per optimizer step, over all ranks and accumulation steps"})
    micro_batch: int = field(default=32, metadata={"help": "sequences per forward pass per rank; accumulation = global / (world size x micro)"})


@dataclass
class OptimizerConfig:
    lr: float = field(default=1e-4, metadata={"help": "peak learning rate"})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW decoupled weight decay (not on biases / LayerNorm)"})
    beta1: float = field(default=0.9, metadata={"help": "AdamW beta1"})
    beta2: float = field(default=0.98, metadata={"help": "AdamW beta2"})
    eps: float = field(default=1e-6, metadata={"help": "AdamW epsilon"})
    warmup_steps: int = field(default=0, metadata={"help": "linear warmup length (optimizer steps); see warmup_ratio"})
    warmup_ratio: float = field(default=0.0, metadata={"help": "warmup as a share of total steps (used when warmup_steps=0)"})
    schedule: Literal["linear", "cosine", "constant"] = field(default="linear", metadata={"help": "decay after warmup, to min_lr_ratio x lr at the last step"})
    min_lr_ratio: float = field(default=0.0, metadata={"help": "final lr as a share of the peak lr"})
    grad_clip: float = field(default=1.0, metadata={"help": "gradient-norm clipping (0 = off)"})


@dataclass
class TrainConfig:
    max_steps: Optional[int] = field(default=None, metadata={"help": "optimizer steps; with train_tokens the smaller wins"})
    train_tokens: Optional[int] = field(default=None, metadata={"help": "token budget (sequence positions = global_batch x seq_len per step, summed over phases); gives the step count"})


@dataclass
class EngineConfig:
    zero_stage: int = field(default=2, metadata={"help": "DeepSpeed ZeRO stage 0-3"})
    precision: Literal["fp32", "bf16", "fp16"] = field(default="bf16", metadata={"help": "training precision (fp16 uses dynamic loss scaling, GPU only)"})
    ds_config: Optional[str] = field(default=None, metadata={"path": "path", "help": "JSON file deep-merged over the generated DeepSpeed config"})
    backend: Optional[str] = field(default=None, metadata={"help": "torch.distributed backend (default nccl on GPU, gloo on CPU)"})


@dataclass
class MaskingConfig:
    mlm_probability: float = field(default=0.15, metadata={"help": "share of non-special tokens selected for prediction (0.15 default, 0.3 allowed)"})
    whole_word: bool = field(default=True, metadata={"help": "select whole words (WORD_START groups) rather than single tokens"})
    entity_probability: float = field(default=0.0, metadata={"help": "probability that a whole KG entity span (ENTITY_START groups) is selected, on top of word masking"})
    mask_ratio: float = field(default=0.8, metadata={"help": "of selected tokens: share replaced by [MASK]"})
    random_ratio: float = field(default=0.1, metadata={"help": "of selected tokens: share replaced by a random token (rest kept)"})


@dataclass
class CheckpointConfig:
    every: int = field(default=1000, metadata={"help": "DeepSpeed checkpoint every N optimizer steps (0 = only at the end / on SIGTERM)"})
    keep_last: int = field(default=3, metadata={"help": "checkpoints kept (older ones deleted)", "affects_output": False})
    hf_export_steps: list[int] = field(default_factory=list, metadata={"help": "steps with a Hugging Face export in hf/step_N (0 = the initial model)"})
    hf_export_every: int = field(default=0, metadata={"help": "also export every N steps (0 = off)"})
    verify: bool = field(default=True, metadata={"help": "check checkpoint file sizes and sha256 before resuming", "affects_output": False})
    trust_checkpoint: bool = field(default=False, metadata={"help": "on resume, let DeepSpeed unpickle the checkpoint without first checking that it holds only tensors and DeepSpeed's own types (a planted file can then run code); CLI flag --trust-checkpoint", "affects_output": False})


@dataclass
class EvalConfig:
    every: int = field(default=1000, metadata={"help": "evaluate on the valid split every N optimizer steps (0 = only at the end)"})
    max_sequences: int = field(default=2048, metadata={"help": "valid sequences used (the first N)"})
    micro_batch: Optional[int] = field(default=None, metadata={"help": "eval sequences per forward per rank (default batch.micro_batch)"})
    seed: int = field(default=1234, metadata={"help": "seed of the fixed evaluation mask (15%, same for every run)"})


@dataclass
class MetricsConfig:
    log_every: int = field(default=10, metadata={"help": "write a metrics.jsonl row every N optimizer steps", "affects_output": False})
    wandb_mode: Literal["disabled", "offline", "online"] = field(default="disabled", metadata={"help": "wandb mode; a failing wandb never stops the run", "affects_output": False})
    wandb_project: str = field(default="cmedbert", metadata={"help": "wandb project", "affects_output": False})
    wandb_run_name: Optional[str] = field(default=None, metadata={"help": "wandb run name (default: run folder name)", "affects_output": False})
    device: Optional[str] = field(default=None, metadata={"help": "device name for peak FLOPs (A100, H100, H200); default detected from CUDA", "affects_output": False})
    peak_tflops: Optional[float] = field(default=None, metadata={"help": "peak TFLOP/s per device for MFU (overrides device)", "affects_output": False})
    progress_bar: bool = field(default=True, metadata={"help": "show a tqdm progress bar on rank 0", "affects_output": False})


@dataclass
class PretrainConfig:
    tokenizer: str = field(metadata={"path": "path", "help": "tokenizer folder (stage 'tokenizer' or any HF tokenizer folder); must match the packed data"})
    data: DataConfig = field(default_factory=DataConfig, metadata={"help": "packed data and sequence-length phases"})
    init: Literal["scratch", "continual"] = field(default="scratch", metadata={"help": "scratch = fresh model for this vocab; continual = from_pretrained(init_from)"})
    init_from: Optional[str] = field(default=None, metadata={"path": "id_or_dir", "help": "HF hub id or folder to continue from (init=continual)"})
    model: ModelConfig = field(default_factory=ModelConfig)
    batch: BatchConfig = field(default_factory=BatchConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    masking: MaskingConfig = field(default_factory=MaskingConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    seed: int = field(default=42, metadata={"help": "seed of init, data order, masks and dropout"})

    def validate(self) -> None:
        phases = self.data.resolved_phases()
        if not phases:
            raise ConfigError("config key 'data.path' (or 'data.phases'): no packed data given")
        if self.data.path and self.data.phases:
            raise ConfigError("give either 'data.path' or 'data.phases', not both")
        total = sum(p.fraction for p in phases)
        if any(p.fraction <= 0 for p in phases) or abs(total - 1.0) > 1e-6:
            raise ConfigError(f"config key 'data.phases': fractions must be > 0 and sum to 1 (sum is {total})")
        if self.init == "continual" and not self.init_from:
            raise ConfigError("init='continual' needs 'init_from' (a hub id or a model folder)")
        if self.train.max_steps is None and self.train.train_tokens is None:
            raise ConfigError("set 'train.max_steps' and/or 'train.train_tokens'")
        for key, v in (("train.max_steps", self.train.max_steps), ("train.train_tokens", self.train.train_tokens)):
            if v is not None and v <= 0:
                raise ConfigError(f"config key {key!r} must be > 0, got {v}")
        if self.batch.global_batch <= 0 or self.batch.micro_batch <= 0:
            raise ConfigError("batch.global_batch and batch.micro_batch must be > 0")
        if self.batch.global_batch % self.batch.micro_batch:
            raise ConfigError(f"batch.global_batch={self.batch.global_batch} is not a multiple of "
                              f"batch.micro_batch={self.batch.micro_batch}")
        self._validate_model()
        self._validate_optimizer()
        for key, v in (("checkpoint.every", self.checkpoint.every), ("checkpoint.hf_export_every",
                       self.checkpoint.hf_export_every), ("eval.every", self.eval.every),
                       ("eval.max_sequences", self.eval.max_sequences)):
            if v < 0:
                raise ConfigError(f"config key {key!r} must be >= 0, got {v}")
        if any(s < 0 for s in self.checkpoint.hf_export_steps):
            raise ConfigError(f"config key 'checkpoint.hf_export_steps' holds a negative step: {self.checkpoint.hf_export_steps}")
        if self.eval.micro_batch is not None and self.eval.micro_batch <= 0:
            raise ConfigError(f"config key 'eval.micro_batch' must be > 0, got {self.eval.micro_batch}")
        if self.engine.zero_stage not in (0, 1, 2, 3):
            raise ConfigError(f"config key 'engine.zero_stage': {self.engine.zero_stage} is not 0, 1, 2 or 3")
        m = self.masking
        if not 0 < m.mlm_probability < 1 or not 0 <= m.entity_probability < 1:
            raise ConfigError("masking.mlm_probability must be in (0, 1) and masking.entity_probability in [0, 1)")
        if m.mask_ratio < 0 or m.random_ratio < 0 or m.mask_ratio + m.random_ratio > 1:
            raise ConfigError("masking.mask_ratio + masking.random_ratio must be within [0, 1]")
        if self.checkpoint.keep_last < 1:
            raise ConfigError("checkpoint.keep_last must be >= 1")
        if self.metrics.log_every < 1:
            raise ConfigError("metrics.log_every must be >= 1")
        if self.metrics.device and self.metrics.device.upper() not in PEAK_TFLOPS:
            raise ConfigError(f"metrics.device {self.metrics.device!r} unknown (known: {sorted(PEAK_TFLOPS)}); "
                              "set metrics.peak_tflops instead")


    def _validate_model(self) -> None:
        m = self.model
        for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size"):
            v = getattr(m, key)
            if v is not None and v <= 0:
                raise ConfigError(f"config key 'model.{key}' must be > 0, got {v}")
        if m.max_position_embeddings <= 0:
            raise ConfigError(f"config key 'model.max_position_embeddings' must be > 0, got {m.max_position_embeddings}")
        for key in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            if not 0 <= getattr(m, key) < 1:
                raise ConfigError(f"config key 'model.{key}' must be in [0, 1), got {getattr(m, key)}")
        if self.init == "scratch":
            shape = m.shape()
            if shape["hidden_size"] % shape["num_attention_heads"]:
                raise ConfigError(f"model.num_attention_heads={shape['num_attention_heads']} does not divide "
                                  f"model.hidden_size={shape['hidden_size']} (preset {m.preset!r} + overrides)")

    def _validate_optimizer(self) -> None:
        o = self.optimizer
        if not o.lr > 0:
            raise ConfigError(f"config key 'optimizer.lr' must be > 0, got {o.lr}")
        if not o.eps > 0:
            raise ConfigError(f"config key 'optimizer.eps' must be > 0, got {o.eps}")
        for key in ("beta1", "beta2", "warmup_ratio"):
            if not 0 <= getattr(o, key) < 1:
                raise ConfigError(f"config key 'optimizer.{key}' must be in [0, 1), got {getattr(o, key)}")
        if not 0 <= o.min_lr_ratio <= 1:
            raise ConfigError(f"config key 'optimizer.min_lr_ratio' must be in [0, 1], got {o.min_lr_ratio}")
        for key in ("weight_decay", "warmup_steps", "grad_clip"):
            if getattr(o, key) < 0:
                raise ConfigError(f"config key 'optimizer.{key}' must be >= 0, got {getattr(o, key)}")


def peak_tflops(cfg: MetricsConfig, precision: str, detected_device: str | None) -> float | None:
    """Peak TFLOP/s of one device for MFU: explicit value, else the named / detected device."""
    if cfg.peak_tflops:
        return cfg.peak_tflops
    name = (cfg.device or detected_device or "").upper()
    for known, table in PEAK_TFLOPS.items():
        if known in name:
            return table[precision]
    return None
