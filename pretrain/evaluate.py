"""Does the encoder use context? [MASK]-only accuracy, the same with the context shuffled, and
the always-most-frequent-token baseline.

Plain MLM accuracy over all selected positions flatters a model that learned nothing: 10% of
them are left unchanged and are copied, and a model that predicts the corpus unigram (the
plateau MLM training starts on) already scores the frequency of the commonest token on the
rest. The numbers here separate "uses context" from "knows the unigram":

* ``mask_acc``: accuracy at the positions whose input is [MASK] (nothing to copy);
* ``mask_acc_shuffled``: the same positions and targets, with every other non-special token of
  the sequence permuted within it (bag of words kept, order destroyed);
* ``baseline_most_frequent``: accuracy of always answering the most frequent non-special token
  of the *train* split at those positions;
* ``mask_loss`` / ``mask_loss_shuffled`` / ``baseline_unigram_loss``: mean cross-entropy (nats) at
  those positions in real context, in shuffled context, and of the train split's unigram (add-one
  smoothed) — a continuous view of the same question, which moves before the argmax does;
* ``plateau``: True when ``mask_acc`` is not clearly above the baseline (below
  ``PLATEAU_RATIO`` x baseline or within ``PLATEAU_MARGIN`` of it): "still on the unigram plateau".

The model is reached through ``predict(input_ids, attention_mask, labels) -> (n_correct,
n_scored, loss_sum)`` (numpy in, counts out), so the same code scores a DeepSpeed engine inside the
training loop (every rank calls it the same number of times, as ZeRO-3 needs) and a plain
Hugging Face model folder afterwards (:func:`evaluate_export`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from cmedbert.pretrain.masking import IGNORE, mask_tokens, row_generators

PLATEAU_RATIO = 1.5  # mask_acc below 1.5x the most-frequent-token baseline ...
PLATEAU_MARGIN = 0.02  # ... or within 2 accuracy points of it: still on the unigram plateau
MAX_COUNT_TOKENS = 50_000_000  # token counts for the baseline read at most this many train positions
SHUFFLE_SALT = 99  # row generators of the context shuffle (independent of the mask's)

Predict = Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[float, float, float]]
KEYS = ("mask_acc", "mask_acc_shuffled", "baseline_most_frequent", "plateau", "mask_positions", "mask_loss",
        "mask_loss_shuffled", "baseline_unigram_loss")


def clearly_above(acc: float, reference: float) -> bool:
    """``acc`` at least 1.5x ``reference`` and at least 2 accuracy points above it."""
    return acc >= max(PLATEAU_RATIO * reference, reference + PLATEAU_MARGIN)


def on_plateau(mask_acc: float, baseline: float, shuffled: float | None = None) -> bool:
    """True when [MASK] accuracy is not clearly above the most-frequent-token baseline or, given
    ``shuffled``, not clearly above the same model with the context shuffled: an encoder can beat the
    global most-frequent token without context (from the [MASK]'s position: e.g. the first token of
    a dialogue turn), which is still the plateau."""
    return not clearly_above(mask_acc, baseline) or (shuffled is not None and not clearly_above(mask_acc, shuffled))


def plateau_message(ev: dict[str, Any]) -> str:
    if clearly_above(ev["mask_acc"], ev["mask_acc_shuffled"]):
        return (f"still on the unigram plateau: [MASK] accuracy {ev['mask_acc']:.3f} (context shuffled "
                f"{ev['mask_acc_shuffled']:.3f}) is not clearly above always predicting the most frequent token "
                f"({ev['baseline_most_frequent']:.3f}); it starts to use context, not yet clearly")
    return (f"still on the unigram plateau: [MASK] accuracy {ev['mask_acc']:.3f} is not clearly above the same "
            f"model with the context shuffled ({ev['mask_acc_shuffled']:.3f}; most frequent token "
            f"{ev['baseline_most_frequent']:.3f}); the encoder does not use context yet")


def token_counts(ids: np.ndarray, special_ids: Sequence[int], vocab_size: int | None = None,
                 max_tokens: int = MAX_COUNT_TOKENS) -> np.ndarray:
    """Counts of every id over (the first ``max_tokens`` positions of) ``ids``, specials zeroed."""
    rows = max(1, max_tokens // max(ids.shape[1], 1))
    flat = np.asarray(ids[:rows]).reshape(-1).astype(np.int64)
    size = max(int(flat.max(initial=0)) + 1, vocab_size or 0, max(special_ids, default=0) + 1)
    counts = np.bincount(flat, minlength=size)
    counts[np.asarray(list(special_ids), dtype=np.int64)] = 0
    return counts


def most_frequent_token(ids: np.ndarray, special_ids: Sequence[int]) -> int:
    """The most frequent non-special token id of a [n_seq, seq_len] id array (a packed split)."""
    return _most_frequent_cached(ids, tuple(sorted(set(int(s) for s in special_ids))))


def unigram_log_probs(ids: np.ndarray, special_ids: Sequence[int], vocab_size: int) -> np.ndarray:
    """Add-one smoothed log-probabilities of every id under the split's non-special unigram."""
    return _counts_cached(ids, tuple(sorted(set(int(s) for s in special_ids))), vocab_size)[1]


_CACHE: dict[tuple, tuple[int, np.ndarray]] = {}


def _counts_cached(ids: np.ndarray, special: tuple[int, ...], vocab_size: int = 0) -> tuple[int, np.ndarray]:
    # A memmap is keyed by its file (evaluation runs every N steps on the same split).
    key = (getattr(ids, "filename", None) or id(ids), ids.shape, special, vocab_size)
    if key not in _CACHE:
        counts = token_counts(ids, special, vocab_size)
        smoothed = counts + 1.0
        _CACHE[key] = (int(np.argmax(counts)), np.log(smoothed / smoothed.sum()))
    return _CACHE[key]


def _most_frequent_cached(ids: np.ndarray, special: tuple[int, ...]) -> int:
    return _counts_cached(ids, special)[0]


def mask_only_labels(input_ids: np.ndarray, labels: np.ndarray, mask_id: int) -> np.ndarray:
    """Labels kept only where the input is [MASK] (selected positions left unchanged or randomised
    are not scored)."""
    return np.where((input_ids == mask_id) & (labels != IGNORE), labels, IGNORE)


def shuffle_context(input_ids: np.ndarray, labels: np.ndarray, special_ids: Sequence[int], mask_id: int,
                    rngs: Sequence[np.random.Generator]) -> np.ndarray:
    """``input_ids`` with, in every row, the tokens at non-special, non-[MASK] positions permuted
    among those positions. [MASK] positions, specials ([CLS], [SEP], [PAD]) and labels stay put."""
    out = np.array(input_ids, copy=True)
    fixed = np.isin(out, np.asarray(list(special_ids) + [mask_id], dtype=out.dtype))
    for r, rng in enumerate(rngs):
        where = np.flatnonzero(~fixed[r])
        out[r, where] = out[r, rng.permutation(where)]
    return out


def context_eval(predict: Predict, batches: Iterable[dict[str, Any]], *, mask_id: int, special_ids: Sequence[int],
                 top_token: int, seed: int, unigram_logp: np.ndarray | None = None,
                 reduce: Callable[[np.ndarray], np.ndarray] | None = None) -> dict[str, Any]:
    """Score ``batches`` (dicts with input_ids, labels, attention_mask, optional weight and rows =
    the sample indices, as :func:`pretrain.data.eval_batches` yields) in real and shuffled context.

    ``unigram_logp`` (:func:`unigram_log_probs`) gives ``baseline_unigram_loss``. ``reduce`` sums the
    count vector over ranks (an all-reduce) before the ratios are taken."""
    # correct real / shuffled / baseline, scored, loss sum real / shuffled / unigram
    totals = np.zeros(7, dtype=np.float64)
    for i, b in enumerate(batches):
        w = float(b.get("weight", 1.0))
        input_ids, attn = b["input_ids"], b["attention_mask"]
        labels = mask_only_labels(input_ids, b["labels"], mask_id)
        rows = b.get("rows", np.arange(i * len(input_ids), (i + 1) * len(input_ids)))
        shuffled = shuffle_context(input_ids, labels, special_ids, mask_id,
                                   row_generators(seed, rows, salt=SHUFFLE_SALT))
        real_correct, scored, real_loss = predict(input_ids, attn, labels)
        shuf_correct, _, shuf_loss = predict(shuffled, attn, labels)
        targets = labels[labels != IGNORE]
        base_correct = float((targets == top_token).sum())
        base_loss = float(-unigram_logp[targets].sum()) if unigram_logp is not None else float("nan")
        totals += w * np.array([real_correct, shuf_correct, base_correct, scored, real_loss, shuf_loss, base_loss],
                               dtype=np.float64)
    if reduce is not None:
        totals = np.asarray(reduce(totals), dtype=np.float64)
    n = max(totals[3], 1.0)
    ev = {"mask_acc": float(totals[0] / n), "mask_acc_shuffled": float(totals[1] / n),
          "baseline_most_frequent": float(totals[2] / n),
          "mask_positions": int(totals[3]), "mask_loss": float(totals[4] / n),
          "mask_loss_shuffled": float(totals[5] / n), "baseline_unigram_loss": float(totals[6] / n)}
    ev["plateau"] = bool(totals[3] > 0 and on_plateau(ev["mask_acc"], ev["baseline_most_frequent"],
                                                               ev["mask_acc_shuffled"]))
    return ev


# ------------------------------------------------------------------ a Hugging Face model folder

def hf_predict(model: Any, device: str = "cpu") -> Predict:
    """``predict`` for a ``*ForMaskedLM`` Hugging Face model (full logits, no_grad)."""
    import torch

    def predict(input_ids: np.ndarray, attention_mask: np.ndarray, labels: np.ndarray) -> tuple[float, float, float]:
        with torch.no_grad():
            logits = model(input_ids=torch.from_numpy(np.asarray(input_ids)).to(device),
                           attention_mask=torch.from_numpy(np.asarray(attention_mask).astype(np.int64)).to(device)).logits
        lab = torch.from_numpy(np.asarray(labels)).to(device)
        where = lab != IGNORE
        picked, target = logits[where].float(), lab[where]
        loss = torch.nn.functional.cross_entropy(picked, target, reduction="sum") if target.numel() else picked.sum()
        return float((picked.argmax(-1) == target).sum()), float(where.sum()), float(loss)

    return predict


def fixed_eval_batches(ids: np.ndarray, flags: np.ndarray, *, micro_batch: int, seed: int, special_ids: Sequence[int],
                       mask_id: int, pad_id: int, vocab_size: int, max_sequences: int):
    """Single-process version of :func:`pretrain.data.eval_batches`: the first ``max_sequences`` rows
    under the same fixed 15% whole-word 80/10/10 mask (same row generators), so an exported model
    scores exactly what the training run's evaluation scored."""
    from cmedbert.pretrain.config import MaskingConfig

    fixed = MaskingConfig(mlm_probability=0.15, whole_word=True, entity_probability=0.0)
    n = min(len(ids), max_sequences)
    for start in range(0, n, micro_batch):
        rows = np.arange(start, min(start + micro_batch, n))
        batch_ids = np.asarray(ids[rows], dtype=np.int64)
        input_ids, labels = mask_tokens(batch_ids, np.asarray(flags[rows]), row_generators(seed, rows, salt=0), fixed,
                                        special_ids=special_ids, mask_id=mask_id, vocab_size=vocab_size)
        yield {"input_ids": input_ids, "labels": labels, "attention_mask": batch_ids != pad_id, "rows": rows}


def evaluate_export(model_dir: str | Path, packed_dir: str | Path, *, split: str = "valid", max_sequences: int = 2048,
                    seed: int = 1234, micro_batch: int = 32, device: str = "cpu") -> dict[str, Any]:
    """Context check of a Hugging Face model folder (a pretrain run's ``model/`` or ``hf/step_N``, or
    any MLM checkpoint with the packed data's tokenizer) on a packed folder's held-out split; the
    baseline token comes from the folder's train split. Returns :data:`KEYS`."""
    from transformers import AutoModelForMaskedLM

    from cmedbert.errors import ArtifactError
    from cmedbert.tokenizer.packed import open_packed

    packed = open_packed(packed_dir)
    meta = packed.meta
    specials = sorted({int(meta[k]) for k in ("pad_id", "cls_id", "sep_id", "mask_id") if k in meta}
                      | _tokenizer_specials(model_dir))
    try:
        model = AutoModelForMaskedLM.from_pretrained(str(model_dir)).to(device).eval()
    except OSError as exc:
        raise ArtifactError(f"cannot load a masked-LM model from {model_dir}: {exc}") from None
    if model.config.vocab_size < int(meta["vocab_size"]):
        raise ArtifactError(f"{model_dir}: vocab {model.config.vocab_size} is smaller than the packed data's "
                            f"{meta['vocab_size']} ({packed_dir} was packed with another tokenizer)")
    valid = packed.split(split)
    train_ids = packed.split("train").ids
    top = most_frequent_token(train_ids, specials)
    batches = fixed_eval_batches(valid.ids, valid.flags, micro_batch=micro_batch, seed=seed, special_ids=specials,
                                 mask_id=int(meta["mask_id"]), pad_id=int(meta["pad_id"]),
                                 vocab_size=int(meta["vocab_size"]), max_sequences=max_sequences)
    return context_eval(hf_predict(model, device), batches, mask_id=int(meta["mask_id"]), special_ids=specials,
                        top_token=top, seed=seed,
                        unigram_logp=unigram_log_probs(train_ids, specials, model.config.vocab_size))


def _tokenizer_specials(model_dir: str | Path) -> set[int]:
    try:
        from transformers import AutoTokenizer

        return {int(i) for i in AutoTokenizer.from_pretrained(str(model_dir)).all_special_ids}
    except Exception:  # a model folder without tokenizer files: the packed data's specials suffice
        return set()
