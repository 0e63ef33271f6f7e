"""The Trainer's pieces: StepStats encodes / decodes by field name, and extra callbacks see every
step (after the built-in ones) with the statistics the metrics rows are made of."""

import json

import pytest
import torch

from cmedbert.config import load_config
from cmedbert.pretrain.config import PretrainConfig
from cmedbert.pretrain.testing import tiny_run_config, tiny_setup
from cmedbert.pretrain.train import Callback, StepStats, main

torch.set_num_threads(1)


def test_step_stats_round_trip_by_name_and_sum():
    a = StepStats(loss_sum=torch.tensor(6.0, dtype=torch.float64), masked=torch.tensor(3.0), correct=1, tokens=64,
                  micro_batches=2, stop=0.0)
    r = a.all_reduced("cpu", 1)
    assert r == StepStats(loss_sum=6.0, masked=3.0, correct=1.0, tokens=64.0, micro_batches=2.0, stop=0.0)
    total = r + StepStats(loss_sum=2.0, masked=5.0, correct=3.0, tokens=64.0, micro_batches=2.0)
    assert total.loss == pytest.approx(8.0 / 8.0) and total.accuracy == pytest.approx(4 / 8)
    assert StepStats().loss == 0.0  # no masked token: no division by zero


class Recorder(Callback):
    def __init__(self):
        self.events, self.stats = [], []

    def on_train_start(self, trainer):
        self.events.append(("start", trainer.state.step))

    def on_gradients_ready(self, trainer):
        self.events.append(("grads", trainer.state.step))

    def on_step_end(self, trainer, stats):
        self.events.append(("end", trainer.state.step))
        self.stats.append(stats)

    def on_train_end(self, trainer):
        self.events.append(("train_end", trainer.state.step))


def test_extra_callback_sees_each_step_and_the_logged_loss_is_the_token_mean(tmp_path):
    tok, packed = tiny_setup(tmp_path / "data")
    rec = Recorder()
    cfg = load_config(PretrainConfig, None, [], base=tiny_run_config(tok, packed, max_steps=2))
    main(cfg, tmp_path / "run", callbacks=[rec])
    assert rec.events == [("start", 0), ("grads", 0), ("end", 1), ("grads", 1), ("end", 2), ("train_end", 2)]
    rows = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines() if "split" not in l]
    for row, st in zip(rows, rec.stats):
        assert st.micro_batches == 2 and st.tokens == 4 * 32 and st.masked > 0
        assert row["loss"] == pytest.approx(st.loss_sum / st.masked) and row["mlm_acc"] == pytest.approx(st.accuracy)
