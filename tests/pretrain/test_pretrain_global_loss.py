"""The MLM loss is normalised by the masked tokens of the whole global batch (all micro-batches
of the accumulation, all data-parallel ranks): 1 rank x 2 accumulation steps and 2 ranks x 1 give
the same gradients, equal to d(sum of token losses) / (global masked count) computed in plain
PyTorch, even though the two micro-batches hold different masked counts; the old mean of
per-micro-batch means gives different gradients."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cmedbert.config import load_config
from cmedbert.pretrain.config import PretrainConfig
from cmedbert.pretrain.data import Batches, build_phases, open_phases, plan_steps
from cmedbert.pretrain.model import build_model, wrap_masked_lm
from cmedbert.pretrain.testing import child_process_env, free_port, tiny_run_config, tiny_setup
from cmedbert.pretrain.train import _load_tokenizer, _special_ids

torch.set_num_threads(1)
pytestmark = [pytest.mark.slow, pytest.mark.distributed]
PROBE = Path(__file__).with_name("grad_probe.py")




def _reference_grads(cfg_dict):
    """Plain PyTorch, no DeepSpeed: the step-0 micro-batches of 1 rank x 2 accumulation steps
    (the same samples and masks 2 ranks x 1 see), and the gradients of the global token mean
    and of the old mean of per-micro-batch means."""
    cfg = load_config(PretrainConfig, None, [], base=cfg_dict)
    tok, tok_hash = _load_tokenizer(cfg.tokenizer)
    specials = _special_ids(tok)
    packed = open_phases(cfg, tok_hash, len(tok), specials)
    phases = build_phases(cfg, packed, plan_steps(cfg, [p.seq_len for p in packed]))
    batches = Batches(cfg, phases, 0, 1, 2, sorted(set(specials.values())), specials["mask_id"], specials["pad_id"],
                      len(tok))
    model = wrap_masked_lm(build_model(cfg, tok, cfg.tokenizer, phases[0].seq_len))
    sums, counts = [], []
    for m in range(2):
        b = batches.micro_batch(0, m)
        assert b["attention_mask"].all()
        loss_sum, _, n = model(torch.from_numpy(b["input_ids"]), None, torch.from_numpy(b["labels"]))
        sums.append(loss_sum)
        counts.append(int(n))

    def grads(loss):
        model.zero_grad()
        loss.backward(retain_graph=True)
        return {n: p.grad.clone() for n, p in model.hf.named_parameters() if p.grad is not None}

    new = grads((sums[0] + sums[1]) / (counts[0] + counts[1]))
    old = grads((sums[0] / counts[0] + sums[1] / counts[1]) / 2)
    return new, old, counts


def test_one_rank_accumulation2_equals_two_ranks_with_unequal_masked_counts(tmp_path, repo_root):
    tok, packed = tiny_setup(tmp_path / "data")
    cfg = tiny_run_config(tok, packed, max_steps=1, engine={"zero_stage": 2, "precision": "fp32"},
                          model={"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0},
                          eval={"every": 0, "max_sequences": 0})
    p = tmp_path / "cfg.json"
    p.write_text(json.dumps(cfg))
    one = subprocess.run([sys.executable, str(PROBE), str(p), str(tmp_path / "one"), str(tmp_path / "g1.pt")],
                         env=child_process_env(), cwd=repo_root, capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    assert "2 micro x 2 accumulation x 1 ranks" in one.stderr
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                          str(free_port()), str(PROBE), str(p), str(tmp_path / "two"), str(tmp_path / "g2.pt")],
                         env=child_process_env(), cwd=repo_root, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    assert "2 micro x 1 accumulation x 2 ranks" in two.stderr
    g1 = torch.load(tmp_path / "g1.pt", weights_only=True)
    g2 = torch.load(tmp_path / "g2.pt", weights_only=True)
    new, old, counts = _reference_grads(cfg)
    assert counts[0] != counts[1], counts  # the case that matters: micro-batches with different masked counts
    assert set(g1) == set(g2) == set(new)
    for name in new:
        assert torch.allclose(g1[name], g2[name], rtol=1e-4, atol=1e-7), name
        assert torch.allclose(g1[name], new[name], rtol=1e-4, atol=1e-7), name
    # the old normalisation (mean of the per-micro-batch means) would have given other gradients
    flat = lambda g: torch.cat([g[n].flatten() for n in sorted(g)])  # noqa: E731
    rel = (flat(old) - flat(new)).norm() / flat(new).norm()
    assert rel > 0.01, float(rel)
    assert not torch.allclose(flat(g1), flat(old), rtol=1e-3, atol=1e-6)
