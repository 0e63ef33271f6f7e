"""What launch needs to know about the pretrain config: its hash (the same on every node),
its batch shape (against the world size) and its input folders (present before we start).

The pretrain stage owns ``pretrain.config.PretrainConfig``; this module reads it through a small
protocol so the launcher does not break when pretrain adds fields:

- hash: ``cmedbert.config.config_hash`` of the resolved config (what the run's manifest records);
- batch: ``batch.global_batch`` / ``batch.micro_batch``, i.e. the first field found (at any nesting depth) named like a global batch
  (:data:`GLOBAL_BATCH_NAMES`, sequences per optimizer step over all ranks) and a per-rank micro
  batch (:data:`MICRO_BATCH_NAMES`, sequences per rank per forward pass);
- inputs: ``data.path`` or ``data.phases[].path`` and ``tokenizer`` (without the pretrain stage:
  fields named like the packed data and tokenizer folders, :data:`INPUT_NAMES`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from cmedbert.config import apply_overrides, config_hash, load_config, read_config_file, to_dict
from cmedbert.errors import CmedbertError

GLOBAL_BATCH_NAMES = ("global_batch", "global_batch_size", "global_batch", "global_batch_sequences")
MICRO_BATCH_NAMES = ("micro_batch_size", "micro_batch", "per_rank_batch_size", "train_micro_batch_size_per_gpu")
GRAD_ACCUM_NAMES = ("gradient_accumulation_steps", "grad_accum")
# label -> candidate field names (first found wins)
INPUT_NAMES = {
    "packed data": ("packed", "packed_dir", "data_dir", "data"),
    "tokenizer": ("tokenizer", "tokenizer_dir"),
}


@dataclass
class PretrainInfo:
    config_path: str
    overrides: list[str]
    config_hash: str
    data: dict[str, Any]  # resolved config as plain data
    global_batch: int | None = None  # sequences per optimizer step, all ranks
    micro_batch: int | None = None  # sequences per rank per forward pass
    grad_accum: int | None = None
    inputs: dict[str, str] = field(default_factory=dict)  # label -> path as written in the config
    typed: bool = False  # loaded through PretrainConfig (else the raw file: pretrain stage missing)


def load_pretrain_config(path: Path, overrides: list[str]) -> tuple[dict[str, Any], bool]:
    """The resolved pretrain config as plain data; strict (unknown keys fail) when the pretrain
    stage is installed, else the raw file plus overrides."""
    try:
        from cmedbert.pretrain.config import PretrainConfig  # type: ignore[import-not-found]
    except ImportError:
        return apply_overrides(read_config_file(path), overrides), False
    return to_dict(load_config(PretrainConfig, path, overrides)), True


def describe_pretrain(config_path: str, overrides: list[str], workdir: Path) -> PretrainInfo:
    """Load the pretrain config (relative paths against ``workdir``) and read what launch checks."""
    path = Path(config_path)
    if not path.is_absolute():
        path = workdir / path
    if not path.is_file():
        raise CmedbertError(f"pretrain config {path} not found (config key 'pretrain_config')")
    data, typed = load_pretrain_config(path, overrides)
    info = PretrainInfo(config_path=config_path, overrides=list(overrides), config_hash=_hash(data, typed),
                        data=data, typed=typed)
    info.global_batch = _first_int(data, GLOBAL_BATCH_NAMES)
    info.micro_batch = _first_int(data, MICRO_BATCH_NAMES)
    info.grad_accum = _first_int(data, GRAD_ACCUM_NAMES)
    if typed:  # PretrainConfig: tokenizer folder, data.path or data.phases[].path
        phases = [p["path"] for p in data["data"].get("phases") or []] or [data["data"].get("path")]
        for i, path in enumerate(p for p in phases if p):
            info.inputs["packed data" + (f" (phase {i})" if len(phases) > 1 else "")] = path
        info.inputs["tokenizer"] = data["tokenizer"]
        return info
    for label, names in INPUT_NAMES.items():
        value = _first(data, names, str)
        if value:
            info.inputs[label] = value
    return info


def _hash(data: dict[str, Any], typed: bool) -> str:
    """``cmedbert.config.config_hash`` as the run's manifest records it (fields that do not change
    the output, such as progress bars and wandb, left out) when the pretrain stage is installed."""
    if not typed:
        return config_hash(data)
    from cmedbert.pretrain.config import PretrainConfig

    return config_hash(data, PretrainConfig)


def config_hash_of(config_path: str, overrides: list[str], workdir: Path) -> str:
    return describe_pretrain(config_path, overrides, workdir).config_hash


def check_batch(info: PretrainInfo, world_size: int) -> str:
    """The batch arithmetic for ``world_size`` ranks as one line, or a CmedbertError."""
    g, m, a = info.global_batch, info.micro_batch, info.grad_accum
    if m is None:
        return f"batch: no micro batch field in {info.config_path}; not checked against world size {world_size}"
    if g is None:
        if a is None:
            return f"batch: micro {m} x world {world_size} per step (no global batch field to check)"
        return f"batch: global {m * world_size * a} = micro {m} x world {world_size} x grad accum {a}"
    per_step = m * world_size
    if g % per_step:
        lo, hi = (g // per_step) * per_step, (g // per_step + 1) * per_step
        raise CmedbertError(
            f"global batch {g} sequences ({info.config_path}) is not a multiple of micro batch {m} x "
            f"world size {world_size} = {per_step}: use a global batch of {lo or hi} or {hi}, "
            f"or change micro batch / nodes / gpus_per_node")
    steps = g // per_step
    if a is not None and a != steps:
        raise CmedbertError(f"{info.config_path}: gradient accumulation {a} disagrees with global batch {g} "
                            f"/ (micro {m} x world {world_size}) = {steps}")
    return f"batch: global {g} = micro {m} x world {world_size} x grad accum {steps}"


def _walk(data: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if dataclasses.is_dataclass(data) and not isinstance(data, type):
        data = dataclasses.asdict(data)
    if isinstance(data, dict):
        # leaves of this table first, then nested tables: a top-level field wins over a nested one
        for k, v in data.items():
            if not isinstance(v, dict):
                yield f"{prefix}{k}", v
        for k, v in data.items():
            if isinstance(v, dict):
                yield from _walk(v, f"{prefix}{k}.")


def _first(data: dict[str, Any], names: tuple[str, ...], tp: type) -> Any:
    leaves = list(_walk(data))
    for name in names:
        for key, value in leaves:
            if key.rsplit(".", 1)[-1] == name and isinstance(value, tp) and not isinstance(value, bool):
                return value
    return None


def _first_int(data: dict[str, Any], names: tuple[str, ...]) -> int | None:
    value = _first(data, names, int)
    return int(value) if value is not None else None
