"""Masking: rates, whole words, entities, 80/10/10, specials, determinism per row."""

import numpy as np
import pytest

from cmedbert.pretrain.config import MaskingConfig
from cmedbert.pretrain.masking import IGNORE, mask_tokens, row_generators
from cmedbert.pretrain.testing import SPECIALS, synthetic_split
from cmedbert.tokenizer.packed import ENTITY, ENTITY_START, WORD_START

VOCAB = 300
SPECIAL_IDS = list(range(len(SPECIALS)))
MASK_ID = SPECIALS.index("[MASK]")


def _data(n=256, L=64, seed=0):
    return synthetic_split(np.random.default_rng(seed), n, L, VOCAB)


def _mask(ids, flags, rng, **kw):
    return mask_tokens(ids, flags, rng, MaskingConfig(**kw), special_ids=SPECIAL_IDS, mask_id=MASK_ID,
                       vocab_size=VOCAB)


@pytest.mark.parametrize("p", [0.15, 0.3])
def test_rate_and_never_special(p):
    ids, flags = _data()
    inp, labels = _mask(ids, flags, np.random.default_rng(1), mlm_probability=p)
    special = np.isin(ids, SPECIAL_IDS)
    sel = labels != IGNORE
    assert not (sel & special).any()
    assert (inp[special] == ids[special]).all()  # specials are never replaced either
    rate = sel.sum() / (~special).sum()
    assert abs(rate - p) < 0.03, rate
    assert (labels[sel] == ids[sel]).all()


def test_whole_words_are_all_or_nothing():
    ids, flags = _data()
    _, labels = _mask(ids, flags, np.random.default_rng(2), mlm_probability=0.3)
    sel = labels != IGNORE
    special = np.isin(ids, SPECIAL_IDS)
    for r in range(ids.shape[0]):
        word = []
        for c in range(ids.shape[1] + 1):
            if c == ids.shape[1] or flags[r, c] & WORD_START or special[r, c]:
                if word:
                    assert len({bool(sel[r, j]) for j in word}) == 1, (r, word)
                word = []
            if c < ids.shape[1] and not special[r, c]:
                word.append(c)


def test_token_level_when_whole_word_off():
    ids, flags = _data()
    _, labels = _mask(ids, flags, np.random.default_rng(3), mlm_probability=0.3, whole_word=False)
    sel = labels != IGNORE
    # some multi-token word must be split (partially selected) without whole-word masking
    partial = 0
    for r in range(ids.shape[0]):
        starts = np.flatnonzero(flags[r] & WORD_START)
        for a, b in zip(starts[:-1], starts[1:]):
            if b - a > 1 and 0 < sel[r, a:b].sum() < b - a:
                partial += 1
    assert partial > 0


def test_80_10_10():
    ids, flags = _data(n=1024)
    inp, labels = _mask(ids, flags, np.random.default_rng(4), mlm_probability=0.15)
    sel = labels != IGNORE
    masked = (inp == MASK_ID) & sel
    kept = (inp == ids) & sel
    changed = sel & ~masked & ~kept
    n = sel.sum()
    assert abs(masked.sum() / n - 0.8) < 0.03
    assert abs(kept.sum() / n - 0.1) < 0.02  # random may hit the same id: tiny extra keep
    assert abs(changed.sum() / n - 0.1) < 0.02
    assert not np.isin(inp[changed], SPECIAL_IDS).any()
    assert ((inp != ids) <= sel).all()  # nothing outside the selection changes


def test_entity_masking_selects_whole_spans():
    ids, flags = _data()
    base = _mask(ids, flags, np.random.default_rng(5), mlm_probability=0.01)[1] != IGNORE
    sel = _mask(ids, flags, np.random.default_rng(5), mlm_probability=0.01, entity_probability=0.9)[1] != IGNORE
    ent = (flags & ENTITY) != 0
    assert sel.sum() > base.sum() + 100
    extra = sel & ~base
    assert (ent[extra]).all()  # the additions are entity tokens
    for r in range(ids.shape[0]):  # and each span is taken whole
        starts = np.flatnonzero(flags[r] & ENTITY_START)
        for a in starts:
            b = a + 1
            while b < ids.shape[1] and flags[r, b] & ENTITY and not flags[r, b] & ENTITY_START:
                b += 1
            assert sel[r, a:b].all() or not sel[r, a:b].any() or base[r, a:b].any()


def test_row_generators_make_masks_layout_independent():
    ids, flags = _data(n=8)
    full = _mask(ids, flags, row_generators(7, range(8)))
    halves = [_mask(ids[i:i + 4], flags[i:i + 4], row_generators(7, range(i, i + 4))) for i in (0, 4)]
    for k in range(2):
        assert (np.concatenate([h[k] for h in halves]) == full[k]).all()
    again = _mask(ids, flags, row_generators(7, range(8)))
    assert (again[0] == full[0]).all()
    other = _mask(ids, flags, row_generators(8, range(8)))
    assert (other[1] != full[1]).any()
