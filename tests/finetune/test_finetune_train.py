"""The shared training loop: early stopping on dev and restoring the best weights."""

from __future__ import annotations

import torch

from cmedbert.finetune.config import OFFICIAL_HP
from cmedbert.finetune.train import fit


class Toy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Linear(4, 1)

    def loss(self, batch):
        return ((self.w(batch["x"]) - 1) ** 2).mean()


def _run(scores, patience):
    torch.manual_seed(0)
    model = Toy()
    seen, snapshots = iter(scores), []

    def evaluate():
        snapshots.append(model.w.weight.detach().clone())
        return next(seen)

    hp = dict(OFFICIAL_HP["KUAKE-QIC"], epochs=len(scores), batch_size=4, patience=patience, lr=0.1)
    history: list = []
    best = fit(model, 8, lambda idx: {"x": torch.ones(len(idx), 4)}, hp, seed=1, evaluate=evaluate, history=history)
    return model, best, snapshots, history


def test_early_stopping_waits_for_a_nonzero_score_then_restores_the_best_weights():
    model, best, snaps, history = _run([0.0, 0.0, 0.0, 0.5, 0.4, 0.3, 0.9, 0.9], patience=2)
    assert best == 0.5
    assert len(snaps) == 6  # zeros never count against patience; stopped 2 evaluations after 0.5
    assert history[-1].get("early_stop") is True
    assert torch.equal(model.w.weight, snaps[3])  # the weights evaluated at 0.5


def test_patience_zero_trains_every_epoch():
    _, best, snaps, _ = _run([0.2, 0.1, 0.1, 0.1, 0.3], patience=0)
    assert len(snaps) == 5 and best == 0.3


def test_max_len_is_capped_at_the_checkpoint_positions():
    from types import SimpleNamespace

    from cmedbert.finetune.run import _fit_max_len

    assert _fit_max_len({"max_len": 256}, SimpleNamespace(max_position_embeddings=128, model_type="bert"), "CMeEE")["max_len"] == 128
    assert _fit_max_len({"max_len": 512}, SimpleNamespace(max_position_embeddings=514, model_type="roberta"), "t")["max_len"] == 512
    assert _fit_max_len({"max_len": 64}, SimpleNamespace(max_position_embeddings=128, model_type="bert"), "t")["max_len"] == 64
