"""The model: BertForMaskedLM (SDPA attention), built fresh or loaded for continual pretraining,
wrapped so the MLM decoder runs only at the masked positions.

The decoder (hidden -> vocab logits) is the largest matmul of a small BERT with a big vocab;
gathering the ~15% masked positions before it gives the same loss at a fraction of the cost.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from cmedbert.errors import ArtifactError, CmedbertError
from cmedbert.paths import resolve_id_or_dir

log = logging.getLogger(__name__)


def build_model(cfg: Any, tokenizer: Any, tokenizer_dir: str | Path, max_seq_len: int):
    """A ``BertForMaskedLM`` for ``cfg.init``: scratch (fresh, sized by the preset) or continual
    (``from_pretrained(cfg.init_from)``, vocab grown with the mean-of-pieces rule if the
    tokenizer was extended)."""
    import torch
    from transformers import BertConfig, BertForMaskedLM

    vocab_size = len(tokenizer)
    if cfg.init == "scratch":
        if cfg.model.max_position_embeddings < max_seq_len:
            raise CmedbertError(f"model.max_position_embeddings={cfg.model.max_position_embeddings} is shorter "
                                f"than the packed seq_len {max_seq_len}")
        bert_cfg = BertConfig(vocab_size=vocab_size, pad_token_id=tokenizer.pad_token_id,
                              max_position_embeddings=cfg.model.max_position_embeddings,
                              hidden_dropout_prob=cfg.model.hidden_dropout_prob,
                              attention_probs_dropout_prob=cfg.model.attention_probs_dropout_prob,
                              tie_word_embeddings=cfg.model.tie_word_embeddings,
                              initializer_range=cfg.model.initializer_range,
                              **cfg.model.shape())
        bert_cfg._attn_implementation = cfg.model.attn_implementation
        torch.manual_seed(cfg.seed)  # same init on every rank and every resume
        return BertForMaskedLM(bert_cfg)

    model = load_pretrained(cfg.init_from, cfg.model.attn_implementation)
    if model.config.max_position_embeddings < max_seq_len:
        raise CmedbertError(f"{cfg.init_from}: max_position_embeddings={model.config.max_position_embeddings} "
                            f"is shorter than the packed seq_len {max_seq_len}")
    base_vocab = model.get_input_embeddings().weight.shape[0]
    if vocab_size > base_vocab:
        init_extended_embeddings(model, tokenizer_dir, vocab_size)
    elif vocab_size < base_vocab:
        log.warning("tokenizer has %d tokens, %s has %d embedding rows: ids beyond the tokenizer stay unused",
                    vocab_size, cfg.init_from, base_vocab)
    return model


def load_pretrained(name_or_dir: str, attn_implementation: str = "sdpa"):
    from transformers import AutoModelForMaskedLM

    try:
        return AutoModelForMaskedLM.from_pretrained(resolve_id_or_dir(name_or_dir), attn_implementation=attn_implementation)
    except OSError as exc:
        raise ArtifactError(f"cannot load the model to continue from ({name_or_dir}): {exc}") from None


def init_extended_embeddings(model: Any, tokenizer_dir: str | Path, vocab_size: int) -> dict[str, Any]:
    """Grow ``model``'s vocab to the extended tokenizer: the single place the tokenizer stage's
    mean-of-pieces rule (``tokenizer.embeddings.resize_with_mean_init``) is called from."""
    from cmedbert.tokenizer.embeddings import resize_with_mean_init

    summary = resize_with_mean_init(model, tokenizer_dir)
    if model.get_input_embeddings().weight.shape[0] != vocab_size:
        raise ArtifactError(f"{tokenizer_dir}: extension.json gives {summary['vocab_size']} tokens, the tokenizer "
                            f"loads with {vocab_size}")
    log.info("extended vocab %d -> %d: %d rows at the mean of their base pieces, %d filler rows",
             summary["base_vocab_size"], summary["vocab_size"], summary["mean_init"], summary["filler"])
    return summary


def wrap_masked_lm(model: Any):
    """An ``nn.Module`` whose forward(input_ids, attention_mask, labels[, masked_positions]) returns
    ``(loss_sum, n_correct, n_masked)`` with the decoder applied only where labels != -100.
    ``loss_sum`` is the SUM of the masked tokens' cross-entropies: the trainer divides by the
    global batch's masked count (see ``engine.backward_global_mean``), evaluation by its own."""
    import torch
    from torch import nn

    class MaskedOnlyMLM(nn.Module):
        def __init__(self, hf_model):
            super().__init__()
            self.hf = hf_model

        def forward(self, input_ids, attention_mask, labels, masked_positions=None):
            hidden = self.hf.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            flat_labels = labels.reshape(-1)
            # masked_positions: the flat indices of labels != -100, computed on the host where the batch
            # is built; .nonzero() on an accelerator would make the host wait for the device every step
            where = (flat_labels != -100).nonzero(as_tuple=True)[0] if masked_positions is None else masked_positions
            picked = hidden.reshape(-1, hidden.shape[-1]).index_select(0, where)
            logits = self.hf.cls(picked).float()
            target = flat_labels.index_select(0, where)
            if where.numel() == 0:  # keep every parameter in the graph: ZeRO expects gradients
                loss = logits.sum() * 0.0 + hidden.sum() * 0.0
            else:
                loss = nn.functional.cross_entropy(logits, target, reduction="sum")
            n_correct = (logits.argmax(-1) == target).sum()
            return loss, n_correct, torch.tensor(where.numel(), device=loss.device)

    return MaskedOnlyMLM(model)


def count_params(model: Any) -> dict[str, int]:
    """Total parameters and the non-embedding part (what the per-token FLOPs formula uses)."""
    total = sum(p.numel() for p in model.parameters())
    emb = sum(p.numel() for n, p in model.named_parameters() if "embeddings" in n)
    return {"params": total, "params_non_embedding": total - emb}


def flops_per_sequence(config: Any, seq_len: int, n_masked: float) -> float:
    """Training FLOPs (forward + backward = 3x forward) for one sequence of BERT-MLM.

    Forward: 2 FLOPs per weight per token for the encoder matmuls (QKV, output, FFN), the
    attention scores and weighted sum (4 * L^2 * H per layer), and the MLM head (transform +
    decoder) at the masked positions only.
    """
    h, n_layer, ffn, v = config.hidden_size, config.num_hidden_layers, config.intermediate_size, config.vocab_size
    per_token_layer = 2 * (4 * h * h + 2 * h * ffn)
    attention = 4 * seq_len * seq_len * h * n_layer
    head = 2 * n_masked * (h * h + h * v)
    return 3.0 * (seq_len * per_token_layer * n_layer + attention + head)
