"""Config of the finetune stage.

Hyperparameters resolve per task in four layers: the official CBLUE baseline defaults
(:data:`OFFICIAL_HP`), then (with ``recipe="auto"``) the defaults of the checkpoint's size class
(:data:`SIZE_HP`: tiny and small encoders need larger learning rates and more epochs than the
bert-base recipe; base and large keep the official settings), then ``hp.*`` (applies to every
task), then ``tasks_hp.<TASK>.*``:

    cmedbert finetune configs/finetune/demo.toml hp.epochs=1 tasks_hp.KUAKE-QIC.lr=5e-5 --out OUT

Selection (best epoch, early stopping, the learning rate of ``lr_grid``) reads only a validation
split carved from *train* (``valid_fraction``, fixed ``valid_seed``), never the dev split that is
reported; where train itself is carved from dev, dev is carved three ways.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from cmedbert.errors import ConfigError


@dataclass
class TaskHP:
    """Training hyperparameters of one task; ``None`` means "inherit" (official default)."""

    epochs: float | None = field(default=None, metadata={"help": "passes over the train split (epochs)"})
    batch_size: int | None = field(default=None, metadata={"help": "train batch size (samples per step)"})
    max_len: int | None = field(default=None, metadata={"help": "max sequence length (tokens, incl. [CLS]/[SEP])"})
    lr: float | None = field(default=None, metadata={"help": "peak learning rate (AdamW)"})
    warmup_ratio: float | None = field(default=None, metadata={"help": "linear warmup share of all steps (fraction)"})
    weight_decay: float | None = field(default=None, metadata={"help": "AdamW weight decay (not on bias/LayerNorm)"})
    max_grad_norm: float | None = field(default=None, metadata={"help": "gradient clipping norm (0 = off)"})
    patience: int | None = field(default=None, metadata={"help": "early stopping: evaluations on dev without improvement before stopping (0 = off)"})
    evals_per_epoch: int | None = field(default=None, metadata={"help": "dev evaluations per epoch (early stopping granularity)"})
    eval_batch_size: int | None = field(default=None, metadata={"help": "inference batch size (samples)"})
    lr_grid: list[float] | None = field(default=None, metadata={"help": "learning rates tried per (checkpoint, task); the one with the best mean validation score over seeds is reported (overrides lr)"})


_COMMON = dict(warmup_ratio=0.1, weight_decay=0.01, max_grad_norm=1.0, patience=3, evals_per_epoch=1,
               eval_batch_size=64)
# Official CBLUE baseline settings (examples/run_*.sh): epochs / batch / max length / lr.
OFFICIAL_HP: dict[str, dict] = {
    "CMeEE": dict(epochs=5, batch_size=32, max_len=128, lr=4e-5, **_COMMON),
    "CMeIE": dict(epochs=7, batch_size=32, max_len=128, lr=3e-5, **_COMMON),
    "CHIP-CDN": dict(epochs=3, batch_size=32, max_len=64, lr=3e-5, **_COMMON),
    "CHIP-CTC": dict(epochs=5, batch_size=32, max_len=128, lr=5e-5, **_COMMON),
    "CHIP-STS": dict(epochs=3, batch_size=16, max_len=40, lr=3e-5, **_COMMON),
    "KUAKE-QIC": dict(epochs=3, batch_size=16, max_len=50, lr=2e-5, **_COMMON),
    "KUAKE-QTR": dict(epochs=3, batch_size=16, max_len=40, lr=4e-5, **_COMMON),
    "KUAKE-QQR": dict(epochs=3, batch_size=16, max_len=30, lr=3e-5, **_COMMON),
}
ALL_TASKS = list(OFFICIAL_HP)

# Size classes by encoder hidden size (a tiny BERT is 128, small 256-512, base 768, large 1024).
SIZE_CLASSES = (("tiny", 256), ("small", 512))   # (class, largest hidden size in it); above: "base"
# Tiny/small encoders (BERT miniatures, Turc et al. 2019) fine-tune well at 3e-4..1e-3 and need more
# passes; early stopping on the validation split ends the run once it stops improving.
SIZE_HP: dict[str, dict] = {
    "tiny": dict(lr=1e-3, epochs=10, patience=3),
    "small": dict(lr=5e-4, epochs=8, patience=3),
    "base": {},
}


def size_class(model_config) -> str:
    """"tiny", "small" or "base" from a checkpoint's config (hidden size)."""
    hidden = int(getattr(model_config, "hidden_size", 768) or 768)
    for name, limit in SIZE_CLASSES:
        if hidden <= limit:
            return name
    return "base"


@dataclass
class CdnConfig:
    recall_k: int = field(default=200, metadata={"help": "candidates retrieved per text by char n-gram TF-IDF (names)"})
    train_negatives: int = field(default=3, metadata={"help": "retrieved wrong names per gold name used as negatives in training"})
    ngram: int = field(default=2, metadata={"help": "TF-IDF uses character n-grams of length 1..ngram"})
    max_names: int = field(default=3, metadata={"help": "count classes: 1..max_names (max_names means 'that many or more')"})


@dataclass
class IeConfig:
    max_pairs: int = field(default=64, metadata={"help": "negative (unrelated) entity pairs sampled per text in training"})


@dataclass
class FinetuneConfig:
    models: list[str] | dict[str, str] = field(metadata={"path": "path", "help": "checkpoint folders (HF config.json + weights + tokenizer): a list, or a table name -> folder"})
    tasks: list[str] = field(default_factory=lambda: list(ALL_TASKS), metadata={"help": "CBLUE tasks to run"})
    seeds: list[int] = field(default_factory=lambda: [42], metadata={"help": "one fine-tuning run per seed"})
    data_dir: str = field(default="${data_root}/cblue", metadata={"path": "path", "help": "CBLUE root with TASK/TASK_{train,dev,test}.json"})
    hp: TaskHP = field(default_factory=TaskHP, metadata={"help": "hyperparameters applied to every task (over the official defaults)"})
    tasks_hp: dict[str, TaskHP] = field(default_factory=dict, metadata={"help": "per-task hyperparameters, e.g. tasks_hp.KUAKE-QIC.lr=3e-5"})
    max_train_samples: int | None = field(default=None, metadata={"help": "use only the first N train records (samples; quick runs)"})
    max_eval_samples: int | None = field(default=None, metadata={"help": "use only the first N dev (eval) records (samples)"})
    max_test_samples: int | None = field(default=None, metadata={"help": "predict only the first N test records (samples); the submission is then marked incomplete"})
    carve: Literal["auto", "always", "never"] = field(default="auto", metadata={"help": "split the labeled dev file into train/eval: 'auto' when TASK_train.json is missing (CMeEE, CMeIE here), 'always', or 'never' (missing train is an error)"})
    carve_eval_fraction: float = field(default=0.2, metadata={"help": "share of dev records kept for evaluation when carving (fraction)"})
    carve_seed: int = field(default=0, metadata={"help": "seed of the carve permutation (fixed, independent of the training seeds)"})
    valid_fraction: float = field(default=0.1, metadata={"help": "share of the train records held out as the validation split that selects the epoch / learning rate (fraction; never the reported dev split)"})
    valid_seed: int = field(default=0, metadata={"help": "seed of the validation carve (fixed, independent of the training seeds)"})
    recipe: Literal["auto", "official"] = field(default="auto", metadata={"help": "'auto': the size class of each checkpoint (tiny/small/base by hidden size) picks the defaults of SIZE_HP over the official ones; 'official': the CBLUE baseline settings for every model"})
    cdn: CdnConfig = field(default_factory=CdnConfig, metadata={"help": "CHIP-CDN retrieval / count settings"})
    ie: IeConfig = field(default_factory=IeConfig, metadata={"help": "CMeIE settings"})
    device: Literal["auto", "cpu", "cuda"] = field(default="auto", metadata={"help": "where to fine-tune: auto (a CUDA GPU when one is visible, else CPU), cpu or cuda"})
    precision: Literal["auto", "fp32", "bf16", "fp16"] = field(default="auto", metadata={"help": "auto: bf16 autocast on GPUs that support it, else fp16 with loss scaling; fp32 on CPU (bit-for-bit reproducible)"})
    workers: int = field(default=0, metadata={"help": "jobs (checkpoint x task x seed) run at once, each in its own process: 0 = one per visible GPU (CPU: 1, in this process); N > 1 on CPU shares the cores", "affects_output": False})
    num_threads: int | None = field(default=None, metadata={"help": "torch intra-op threads per job (None = torch default; with several CPU workers: cores / workers)", "affects_output": False})
    results: str | None = field(default=None, metadata={"path": "path", "help": "also append result rows to this results.jsonl (for sweeps across several --out folders)", "affects_output": False})
    save_model: bool = field(default=False, metadata={"help": "keep the fine-tuned weights in each seed folder"})

    def validate(self) -> None:
        from cmedbert.finetune.tasks import TASKS

        if not self.models:
            raise ConfigError("config key 'models': give at least one checkpoint folder")
        for t in list(self.tasks) + list(self.tasks_hp):
            if t not in TASKS:
                raise ConfigError(f"unknown CBLUE task {t!r} (known: {', '.join(TASKS)})")
        if len(set(self.tasks)) != len(self.tasks):
            raise ConfigError("config key 'tasks' lists a task twice")
        if not self.seeds:
            raise ConfigError("config key 'seeds': give at least one seed")
        if not 0.0 < self.carve_eval_fraction < 1.0:
            raise ConfigError("config key 'carve_eval_fraction' must be in (0, 1)")
        if not 0.0 < self.valid_fraction < 1.0:
            raise ConfigError("config key 'valid_fraction' must be in (0, 1)")
        for name, layer in [("hp", self.hp)] + [(f"tasks_hp.{t}", h) for t, h in self.tasks_hp.items()]:
            if layer.lr_grid is not None and (not layer.lr_grid or any(lr <= 0 for lr in layer.lr_grid)):
                raise ConfigError(f"config key '{name}.lr_grid' must list positive learning rates")
        for name, n in (("max_train_samples", self.max_train_samples), ("max_eval_samples", self.max_eval_samples),
                        ("max_test_samples", self.max_test_samples)):
            if n is not None and n < 1:
                raise ConfigError(f"config key {name!r} must be >= 1")
        if self.workers < 0:
            raise ConfigError("config key 'workers' must be >= 0 (0 = one per visible GPU, 1 on CPU)")
        names = [n for n, _ in self._named_models()]
        if len(set(names)) != len(names):
            raise ConfigError(f"config key 'models': two checkpoints share the name {names}; use a table name -> folder")

    def model_dirs(self) -> dict[str, Path]:
        """name -> checkpoint folder. A list entry is named after its folder (a pretrain run's
        ``RUN/model`` is named ``RUN``)."""
        return dict(self._named_models())

    def _named_models(self) -> list[tuple[str, Path]]:
        if isinstance(self.models, dict):
            return [(k, Path(v)) for k, v in self.models.items()]
        out = []
        for m in self.models:
            p = Path(m)
            out.append((p.parent.name if p.name == "model" and p.parent.name else p.name, p))
        return out

    def data_root(self) -> Path:
        from cmedbert.paths import resolve

        return resolve(self.data_dir, key="data_dir")

    def task_hp(self, task: str, size: str | None = None) -> dict:
        """Resolved hyperparameters of ``task`` (official defaults < size class < hp < tasks_hp[task]).

        ``size`` is the checkpoint's :func:`size_class` (ignored with ``recipe="official"``)."""
        out = dict(OFFICIAL_HP[task], lr_grid=None)
        if self.recipe == "auto" and size is not None:
            out.update(SIZE_HP[size])
        for layer in (self.hp, self.tasks_hp.get(task)):
            if layer is None:
                continue
            for k, v in dataclasses.asdict(layer).items():
                if v is not None:
                    out[k] = v
        return out
