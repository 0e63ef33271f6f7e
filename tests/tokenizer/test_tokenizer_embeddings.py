"""Mean-of-pieces initialization of an extended vocab on a tiny BertForMaskedLM."""

from __future__ import annotations

import json

import pytest

from cmedbert.errors import ArtifactError


def _tiny_mlm(vocab_size: int, tie: bool = True):
    import torch
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=64, tie_word_embeddings=tie)
    model = BertForMaskedLM(cfg)
    with torch.no_grad():  # a trained-looking, non-zero decoder bias (the one forward() adds)
        model.cls.predictions.decoder.bias.copy_(torch.randn(vocab_size))
        if not tie:
            model.get_output_embeddings().weight.copy_(torch.randn_like(model.get_output_embeddings().weight))
    return model


@pytest.mark.parametrize("tie", [True, False])
def test_new_rows_are_means_of_pieces_and_old_rows_are_bit_identical(extended, tiny_base, tie):
    import torch

    from cmedbert.tokenizer.base import load_tokenizer
    from cmedbert.tokenizer.embeddings import resize_with_mean_init

    folder = extended["term"]
    ext = json.loads((folder / "extension.json").read_text(encoding="utf-8"))
    base_n, new_n = ext["base_vocab_size"], ext["vocab_size"]
    model = _tiny_mlm(base_n, tie)
    old_in = model.get_input_embeddings().weight.detach().clone()
    old_out = model.get_output_embeddings().weight.detach().clone()
    old_bias = model.cls.predictions.decoder.bias.detach().clone()

    summary = resize_with_mean_init(model, folder)
    assert summary["vocab_size"] == new_n and summary["tied"] is tie
    assert summary["mean_init"] + summary["filler"] == new_n - base_n and summary["filler"] > 0
    w_in = model.get_input_embeddings().weight
    w_out = model.get_output_embeddings().weight
    bias = model.cls.predictions.decoder.bias
    assert model.cls.predictions.bias is bias  # BERT's separate head bias follows the decoder's
    assert w_in.shape == (new_n, 32) and bias.shape == (new_n,) and model.config.vocab_size == new_n
    assert torch.equal(w_in[:base_n], old_in) and torch.equal(bias[:base_n], old_bias)
    assert torch.equal(w_out[:base_n], old_out)
    assert (w_out is w_in) == tie
    for t in ext["tokens"]:
        row = w_in[t["id"]]
        if t["base_pieces"]:
            p = torch.tensor(t["base_pieces"])
            assert torch.allclose(row, old_in[p].mean(0)), t["token"]
            assert torch.allclose(w_out[t["id"]], old_out[p].mean(0))
            assert torch.allclose(bias[t["id"]], old_bias[p].mean())
        else:  # filler: deterministic, unlikely prediction
            assert torch.allclose(row, old_in.mean(0)) and bias[t["id"]] == old_bias.min()
    # a term row really is the mean of its characters' rows
    base = load_tokenizer(tiny_base)
    term = next(t for t in ext["tokens"] if t["token"] == "糖尿病")
    chars = [base.convert_tokens_to_ids(c) for c in "糖尿病"]
    assert torch.allclose(w_in[term["id"]], old_in[chars].mean(0))
    # the model runs on the new ids and predicts over the new vocab
    out = model(input_ids=torch.tensor([[0, term["id"], new_n - 1]]))
    assert out.logits.shape == (1, 3, new_n)


def test_wrong_model_size_is_refused(extended):
    from cmedbert.tokenizer.embeddings import resize_with_mean_init

    ext = json.loads((extended["default"] / "extension.json").read_text(encoding="utf-8"))
    with pytest.raises(ArtifactError, match="base of"):
        resize_with_mean_init(_tiny_mlm(ext["base_vocab_size"] + 1), extended["default"])


def test_plain_tokenizer_of_same_size_is_a_no_op(tiny_base):
    import torch

    from cmedbert.tokenizer.base import load_tokenizer
    from cmedbert.tokenizer.embeddings import resize_with_mean_init

    n = len(load_tokenizer(tiny_base))
    model = _tiny_mlm(n)
    before = model.get_input_embeddings().weight.detach().clone()
    assert resize_with_mean_init(model, tiny_base)["vocab_size"] == n
    assert torch.equal(model.get_input_embeddings().weight, before)
    with pytest.raises(ArtifactError, match="no extension.json"):
        resize_with_mean_init(_tiny_mlm(n + 3), tiny_base)
