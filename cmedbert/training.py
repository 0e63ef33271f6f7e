"""Small pieces both training stages (pretrain, finetune) use. Core layer: torch is imported
inside the functions, so importing this module stays cheap."""

from __future__ import annotations

from typing import Any, Iterable


def no_decay(name: str, param: Any) -> bool:
    """Biases, LayerNorm weights and other 1-d parameters get no weight decay (BERT's recipe)."""
    return param.ndim < 2 or "LayerNorm" in name or "layer_norm" in name


def param_groups(named_parameters: Iterable[tuple[str, Any]], weight_decay: float) -> list[dict[str, Any]]:
    """AdamW parameter groups: ``[{decayed params, weight_decay}, {the rest, 0.0}]``; frozen
    parameters (``requires_grad=False``) are left out."""
    decay, rest = [], []
    for name, p in named_parameters:
        if p.requires_grad:
            (rest if no_decay(name, p) else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def barrier() -> None:
    """Wait for every rank when torch.distributed is initialized; a no-op on a single process."""
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()
