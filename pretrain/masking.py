"""MLM masking as one vectorized numpy function.

    input_ids, labels = mask_tokens(ids, flags, rng, cfg, special_ids=..., mask_id=..., vocab_size=...)

* whole-word: a word is the run of tokens from one WORD_START flag to the next; a word is
  selected with probability ``mlm_probability`` and then all of its tokens are predicted;
* entity masking: a KG entity span (ENTITY_START then ENTITY tokens) is selected whole with
  probability ``entity_probability``, on top of the word selection;
* of the selected tokens: ``mask_ratio`` become [MASK], ``random_ratio`` a random token, the
  rest stay (80/10/10 by default); labels are the original ids there and -100 elsewhere;
* special tokens ([CLS], [SEP], [PAD], ...) are never selected and always start a new word.

``rng`` is a ``np.random.Generator`` or a sequence of them, one per row. Per-row generators
make a row's mask independent of which batch / rank it lands in (the trainer seeds one per
global sample index), which is what makes resume and data-parallel layouts exact.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from cmedbert.tokenizer.packed import ENTITY, ENTITY_START, WORD_START

IGNORE = -100


def _random(rng: np.random.Generator | Sequence[np.random.Generator], shape: tuple[int, int]) -> np.ndarray:
    if isinstance(rng, np.random.Generator):
        return rng.random(shape)
    if len(rng) != shape[0]:
        raise ValueError(f"got {len(rng)} row generators for {shape[0]} rows")
    return np.stack([g.random(shape[1]) for g in rng]) if shape[0] else np.zeros(shape)


def _group_start(starts: np.ndarray) -> np.ndarray:
    """For every position, the index of the most recent start flag at or before it (0 if none)."""
    pos = np.arange(starts.shape[1])[None, :]
    return np.maximum.accumulate(np.where(starts, pos, 0), axis=1)


def mask_tokens(ids: np.ndarray, flags: np.ndarray, rng: Any, cfg: Any, *, special_ids: Sequence[int],
                mask_id: int, vocab_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(input_ids, labels)`` as int64 arrays shaped like ``ids`` ([batch, seq_len]).

    ``cfg`` has ``mlm_probability, whole_word, entity_probability, mask_ratio, random_ratio``
    (a :class:`pretrain.config.MaskingConfig`).
    """
    ids = np.asarray(ids).astype(np.int64)
    flags = np.asarray(flags, dtype=np.uint8)
    shape = ids.shape
    special = np.isin(ids, np.asarray(list(special_ids), dtype=np.int64))
    # Three independent uniforms per position: word selection, entity selection, replacement.
    u = _random(rng, (shape[0], 3 * shape[1])).reshape(shape[0], 3, shape[1])
    u_word, u_ent, u_repl = u[:, 0], u[:, 1], u[:, 2]

    if cfg.whole_word:
        starts = ((flags & WORD_START) != 0) | special
        starts[:, 0] = True
        chosen_start = starts & (u_word < cfg.mlm_probability)
        selected = np.take_along_axis(chosen_start, _group_start(starts), axis=1)
    else:
        selected = u_word < cfg.mlm_probability

    if cfg.entity_probability > 0:
        ent_start = (flags & ENTITY_START) != 0
        in_entity = (flags & ENTITY) != 0
        chosen = ent_start & (u_ent < cfg.entity_probability)
        # a span continues while ENTITY is set; a new ENTITY_START begins the next one
        selected |= in_entity & np.take_along_axis(chosen, _group_start(ent_start), axis=1)

    selected &= ~special
    labels = np.where(selected, ids, IGNORE)
    to_mask = selected & (u_repl < cfg.mask_ratio)
    to_random = selected & (u_repl >= cfg.mask_ratio) & (u_repl < cfg.mask_ratio + cfg.random_ratio)
    # Random replacement ids come from the replacement uniform itself (rescaled), so the
    # function draws a fixed amount of randomness per row; special ids are swapped for [MASK].
    span = max(cfg.random_ratio, 1e-12)
    rand_ids = ((u_repl - cfg.mask_ratio) / span * vocab_size).astype(np.int64).clip(0, vocab_size - 1)
    rand_ids = np.where(np.isin(rand_ids, np.asarray(list(special_ids))), mask_id, rand_ids)
    input_ids = np.where(to_mask, mask_id, np.where(to_random, rand_ids, ids))
    return input_ids, labels


def row_generators(seed: int, sample_indices: Sequence[int], salt: int = 0) -> list[np.random.Generator]:
    """One generator per global sample index: the same sample gets the same mask anywhere."""
    return [np.random.default_rng([seed, salt, int(i)]) for i in sample_indices]
