"""cmedbert.training: the shared no-decay parameter grouping and barrier."""

from __future__ import annotations

import torch

from cmedbert.training import barrier, param_groups


def test_param_groups_no_decay_on_bias_and_layernorm_and_skips_frozen():
    model = torch.nn.Sequential()
    model.add_module("dense", torch.nn.Linear(4, 4))
    model.add_module("LayerNorm", torch.nn.LayerNorm(4))
    model.add_module("frozen", torch.nn.Linear(4, 4))
    model.frozen.weight.requires_grad_(False)
    decay, rest = param_groups(model.named_parameters(), 0.01)
    assert decay["weight_decay"] == 0.01 and rest["weight_decay"] == 0.0
    assert [p is model.dense.weight for p in decay["params"]] == [True]
    ids = {id(p) for p in rest["params"]}
    assert ids == {id(model.dense.bias), id(model.LayerNorm.weight), id(model.LayerNorm.bias), id(model.frozen.bias)}


def test_barrier_is_a_no_op_without_a_process_group():
    barrier()
