"""The masked-positions-only MLM loss equals the full-decoder loss; mean-of-pieces init."""

import json

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

from cmedbert.pretrain.config import MaskingConfig
from cmedbert.pretrain.masking import mask_tokens
from cmedbert.pretrain.model import count_params, flops_per_sequence, init_extended_embeddings, wrap_masked_lm
from cmedbert.pretrain.testing import extend_tokenizer, make_tokenizer, synthetic_split


def tiny_bert(vocab=120):
    torch.manual_seed(0)
    c = BertConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                   intermediate_size=64, max_position_embeddings=64, hidden_dropout_prob=0.0,
                   attention_probs_dropout_prob=0.0)
    c._attn_implementation = "sdpa"
    return BertForMaskedLM(c)


@pytest.mark.parametrize("host_positions", [False, True], ids=["positions-on-device", "positions-from-host"])
def test_masked_only_loss_and_grads_equal_full_decoder(host_positions):
    model = tiny_bert()
    ids, flags = synthetic_split(np.random.default_rng(0), 4, 32, 120)
    inp, labels = mask_tokens(ids, flags, np.random.default_rng(1), MaskingConfig(), special_ids=range(5),
                              mask_id=4, vocab_size=120)
    inp, labels = torch.from_numpy(inp), torch.from_numpy(labels)
    attn = torch.ones_like(inp)
    attn[-1, -5:] = 0  # a padded tail
    labels[-1, -5:] = -100
    full = model(input_ids=inp, attention_mask=attn, labels=labels).loss
    full.backward()
    g_full = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    # the trainer passes the masked positions computed on the host (no device sync for .nonzero())
    where = torch.from_numpy(np.flatnonzero(labels.numpy().reshape(-1) != -100)) if host_positions else None
    loss_sum, n_correct, n_masked = wrap_masked_lm(model)(inp, attn, labels, where)
    loss = loss_sum / n_masked  # the wrapper returns the sum of token losses
    loss.backward()
    assert loss.item() == pytest.approx(full.item(), rel=1e-5)
    assert int(n_masked) == int((labels != -100).sum())
    for n, p in model.named_parameters():
        if n in g_full:
            assert torch.allclose(p.grad, g_full[n], atol=1e-6), n


def test_no_masked_position_keeps_graph():
    model = tiny_bert()
    inp = torch.randint(5, 120, (2, 16))
    loss, _, n = wrap_masked_lm(model)(inp, None, torch.full_like(inp, -100))
    loss.backward()
    assert loss.item() == 0.0 and int(n) == 0


def test_mean_of_pieces_init(tmp_path):
    base = make_tokenizer(tmp_path / "base", [chr(0x4E00 + i) for i in range(100)])
    ext = extend_tokenizer(base, tmp_path / "ext", ["\u4e00\u4e01", "\u4e02\u4e03\u4e04"])
    tok = AutoTokenizer.from_pretrained(str(ext))
    model = tiny_bert(vocab=105)
    emb = model.get_input_embeddings().weight.detach().clone()
    bias = model.cls.predictions.decoder.bias.detach().clone()
    init_extended_embeddings(model, ext, len(tok))
    new = model.get_input_embeddings().weight
    assert new.shape[0] == 107
    rows = json.loads((ext / "extension.json").read_text())["tokens"]
    for r in rows:
        assert torch.allclose(new[r["id"]], emb[r["base_pieces"]].mean(0))
        assert torch.allclose(model.cls.predictions.decoder.bias[r["id"]], bias[r["base_pieces"]].mean())
    assert torch.equal(new[:105], emb)
    assert model.cls.predictions.decoder.weight.data_ptr() == new.data_ptr()  # still tied


def test_flops_estimate_scales():
    c = tiny_bert().config
    f128, f256 = flops_per_sequence(c, 128, 19), flops_per_sequence(c, 256, 38)
    assert 2 < f256 / f128 < 4  # linear part doubles, attention quadruples
    p = count_params(tiny_bert())
    assert p["params"] > p["params_non_embedding"] > 0
