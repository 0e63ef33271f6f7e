"""The context check (pretrain/evaluate.py) and the must-show test: the real pretraining path
learns a language whose tokens are fixed by their neighbours, and the check tells it from the
unigram plateau."""

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from cmedbert.config import load_config
from cmedbert.pretrain import evaluate as E
from cmedbert.pretrain.config import PretrainConfig
from cmedbert.pretrain.masking import IGNORE
from cmedbert.pretrain.testing import make_tokenizer, tiny_run_config, write_packed
from cmedbert.pretrain.train import main
from cmedbert.tokenizer.packed import WORD_START

torch.set_num_threads(1)
PAD, UNK, CLS, SEP, MASK = range(5)
SPECIAL = [PAD, UNK, CLS, SEP, MASK]


# ------------------------------------------------------------------ pure pieces

def test_plateau_rule():
    assert E.on_plateau(0.054, 0.051)  # the numbers: on the plateau
    assert E.on_plateau(0.07, 0.051)  # above by 1.9 points, but < 1.5x: still the plateau
    assert not E.on_plateau(0.12, 0.051)
    assert E.on_plateau(0.015, 0.005)  # 3x a tiny baseline but within 2 points
    assert not E.on_plateau(0.5, 0.3)
    # above the baseline from the [MASK]'s position alone (shuffling the context changes nothing): plateau
    assert E.on_plateau(0.049, 0.029, shuffled=0.049) and not E.on_plateau(0.049, 0.029)
    assert not E.on_plateau(0.092, 0.029, shuffled=0.023)


def test_most_frequent_token_ignores_specials():
    ids = np.array([[CLS, 7, 7, 9, SEP, PAD, PAD, PAD], [CLS, 9, 7, SEP, PAD, PAD, PAD, PAD]])
    assert E.most_frequent_token(ids, SPECIAL) == 7
    counts = E.token_counts(ids, SPECIAL)
    assert counts[PAD] == 0 and counts[7] == 3 and counts[9] == 2


def test_mask_only_labels_keeps_mask_positions():
    inp = np.array([[CLS, MASK, 8, 11, MASK, SEP]])
    lab = np.array([[IGNORE, 7, 8, 9, IGNORE, IGNORE]])  # 8 kept, 11 randomised, last [MASK] not selected
    assert E.mask_only_labels(inp, lab, MASK).tolist() == [[IGNORE, 7, IGNORE, IGNORE, IGNORE, IGNORE]]


def test_shuffle_context_permutes_only_the_context():
    rng = np.random.default_rng(0)
    inp = np.concatenate([[CLS], rng.integers(5, 50, 30), [SEP], rng.integers(5, 50, 20), [SEP, PAD, PAD]])[None, :]
    inp[0, [3, 10, 40]] = MASK
    lab = np.full_like(inp, IGNORE)
    lab[0, [3, 10, 40]] = 6
    out = E.shuffle_context(inp, lab, SPECIAL, MASK, [np.random.default_rng(1)])
    fixed = np.isin(inp, SPECIAL)
    assert (out[fixed] == inp[fixed]).all()  # [MASK], [CLS], [SEP], [PAD] stay where they are
    assert sorted(out[~fixed].tolist()) == sorted(inp[~fixed].tolist())  # same bag of words
    assert (out[~fixed] != inp[~fixed]).mean() > 0.5  # ... in another order
    again = E.shuffle_context(inp, lab, SPECIAL, MASK, [np.random.default_rng(1)])
    assert (again == out).all()  # seeded


def _chain_batches(n_rows=8, seq_len=24, seed=0):
    """Rows of a permutation chain (token t is followed by succ[t]) with ~20% [MASK]."""
    rng = np.random.default_rng(seed)
    succ = rng.permutation(40) + 5
    ids = np.zeros((n_rows, seq_len), np.int64)
    for r in range(n_rows):
        t = int(rng.integers(5, 45))
        for p in range(seq_len):
            ids[r, p] = t
            t = int(succ[t - 5])
    sel = rng.random(ids.shape) < 0.2
    sel[:, 0] = False
    inp = np.where(sel, MASK, ids)
    lab = np.where(sel, ids, IGNORE)
    return [{"input_ids": inp, "labels": lab, "attention_mask": np.ones_like(ids, bool)}], succ


def test_context_eval_separates_context_from_unigram():
    batches, succ = _chain_batches()

    def oracle(input_ids, attention_mask, labels):
        # predicts from the left neighbour, as a model that uses context would
        left = np.roll(input_ids, 1, axis=1)
        pred = np.where(left >= 5, succ[np.clip(left - 5, 0, 39)], -1)
        where = labels != IGNORE
        return float((pred[where] == labels[where]).sum()), float(where.sum()), 0.0

    top = E.most_frequent_token(batches[0]["labels"].clip(0), SPECIAL)

    def unigram(input_ids, attention_mask, labels):
        where = labels != IGNORE
        return float((labels[where] == top).sum()), float(where.sum()), 1.0

    good = E.context_eval(oracle, batches, mask_id=MASK, special_ids=SPECIAL, top_token=top, seed=0)
    flat = E.context_eval(unigram, batches, mask_id=MASK, special_ids=SPECIAL, top_token=top, seed=0)
    assert good["mask_acc"] > 0.6 and good["mask_acc_shuffled"] < 0.3 and not good["plateau"]
    assert flat["mask_acc"] == flat["mask_acc_shuffled"] == flat["baseline_most_frequent"] and flat["plateau"]
    assert flat["mask_loss"] == pytest.approx(1.0 / flat["mask_positions"])  # 1 nat summed per predict call
    assert good["mask_positions"] == flat["mask_positions"] == int((batches[0]["labels"] != IGNORE).sum())
    doubled = E.context_eval(oracle, batches, mask_id=MASK, special_ids=SPECIAL, top_token=top, seed=0,
                             reduce=lambda t: t * 2)  # what an all-reduce over 2 equal ranks does
    assert doubled["mask_acc"] == pytest.approx(good["mask_acc"]) and doubled["mask_positions"] == 2 * good["mask_positions"]


# ------------------------------------------------------------------ must show: the real path learns context

N_TOK, SEQ_LEN = 40, 32


def chain_language(root: Path, seed: int = 0) -> tuple[Path, Path]:
    """A language whose every token is fixed by its left (and right) neighbour: a single random
    cycle over 40 tokens, restarted at a random token after each [SEP] (~3% of positions). Every
    token is its own word. Written as a real packed folder + tokenizer."""
    tok = make_tokenizer(root / "tok", [chr(0x4E00 + i) for i in range(N_TOK)])
    rng = np.random.default_rng(seed)
    order = rng.permutation(N_TOK)
    succ = np.empty(N_TOK, np.int64)
    succ[order] = np.roll(order, -1)

    def split(n):
        ids = np.zeros((n, SEQ_LEN), np.int64)
        for r in range(n):
            ids[r, 0], t = CLS, int(rng.integers(N_TOK))
            for p in range(1, SEQ_LEN):
                if rng.random() < 0.03:
                    ids[r, p], t = SEP, int(rng.integers(N_TOK))
                else:
                    ids[r, p], t = 5 + t, int(succ[t])
        return ids, np.full(ids.shape, WORD_START, np.uint8)

    return tok, write_packed(root / "packed", tok, {"train": split(2048), "valid": split(128)})


@pytest.mark.slow
def test_real_pretraining_path_learns_neighbour_language(tmp_path, caplog):
    """DeepSpeed engine (ZeRO-2, CPU), our whole-word masking, our masked-only head, through the
    same ``main`` the user runs: [MASK] accuracy goes far above the baseline while the same model
    with the context shuffled stays near it. The first evaluation is still on the plateau (and
    says so): the metric is not fooled by training that has not yet learned context."""
    tok, packed = chain_language(tmp_path)
    cfg = tiny_run_config(tok, packed, max_steps=400,
                          model={"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                                 "intermediate_size": 128, "max_position_embeddings": SEQ_LEN},
                          batch={"global_batch": 32, "micro_batch": 32},
                          optimizer={"lr": 3e-3, "warmup_steps": 40},
                          eval={"every": 10, "max_sequences": 128}, metrics={"log_every": 50, "progress_bar": False})
    with caplog.at_level(logging.WARNING, logger="pretrain"):
        manifest = main(load_config(PretrainConfig, None, [], base=cfg), tmp_path / "run")
    rows = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    valid = [r for r in rows if r.get("split") == "valid"]
    first, last = valid[0], valid[-1]
    assert first["plateau"] and "still on the unigram plateau" in caplog.text
    assert last["mask_acc"] > 0.8, valid
    assert last["baseline_most_frequent"] < 0.06  # ~1/40
    assert last["mask_acc_shuffled"] < 3 * last["baseline_most_frequent"] + 0.03, last
    assert not last["plateau"]
    assert last["mask_loss"] < 0.5 * last["baseline_unigram_loss"] < last["mask_loss_shuffled"], last
    ev = manifest["eval"]  # write_manifest puts extra keys at the top level
    assert ev["mask_acc"] == last["mask_acc"] and ev["plateau"] is False
    # the exported model scores the same on the same fixed mask outside the training loop
    export = E.evaluate_export(tmp_path / "run" / "model", packed, max_sequences=128)
    assert export["mask_acc"] == pytest.approx(last["mask_acc"], abs=1e-9)
    assert export["mask_positions"] == last["mask_positions"]


def test_plateau_message_tells_a_context_blind_encoder_from_one_that_starts_to_use_context():
    from cmedbert.pretrain.evaluate import plateau_message

    blind = plateau_message({"mask_acc": 0.052, "mask_acc_shuffled": 0.052, "baseline_most_frequent": 0.051})
    starting = plateau_message({"mask_acc": 0.074, "mask_acc_shuffled": 0.031, "baseline_most_frequent": 0.053})
    assert "does not use context yet" in blind and "starts to use context" not in blind
    assert "starts to use context" in starting and "does not use context" not in starting
