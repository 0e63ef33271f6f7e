"""Embedding initialization when a base checkpoint meets an extended vocabulary (WoBERT-style).

``resize_with_mean_init(model, tokenizer_dir)`` is what ``pretrain`` calls right after loading the
base checkpoint (e.g. bert-base-chinese's BertForMaskedLM) when the tokenizer folder has an
``extension.json``:

* rows ``0 .. base_vocab_size-1`` (input embeddings, MLM decoder weight and bias) stay
  bit-identical;
* each added token's row = mean of the base embedding rows of its ``base_pieces`` (the base
  tokenizer's ids for that string, stored in extension.json, so the base tokenizer is not needed);
  its MLM decoder bias = mean of the pieces' biases;
* ``[unusedN]`` filler rows (vocab padded to a multiple of 64; never produced by tokenization)
  get the mean of all base rows and the *minimum* base bias, so they start as an unlikely
  prediction; deterministic, never random;
* a tied decoder (``tie_word_embeddings``) stays tied; an untied one is initialized the same way
  from its own old rows; ``model.config.vocab_size`` is updated.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cmedbert.errors import ArtifactError

EXTENSION_FILE = "extension.json"


def read_extension(tokenizer_dir: str | Path) -> dict[str, Any] | None:
    """The folder's extension.json (None when the tokenizer is not an extension)."""
    path = Path(tokenizer_dir) / EXTENSION_FILE
    if not path.is_file():
        return None
    try:
        ext = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{path}: invalid JSON at line {exc.lineno}: {exc.msg}") from None
    base_n, n = int(ext["base_vocab_size"]), int(ext["vocab_size"])
    ids = [int(t["id"]) for t in ext["tokens"]]
    if ids != list(range(base_n, n)):
        raise ArtifactError(f"{path}: token ids must run from base_vocab_size ({base_n}) to vocab_size-1 ({n - 1})")
    for t in ext["tokens"]:
        if any(not 0 <= p < base_n for p in t["base_pieces"]):
            raise ArtifactError(f"{path}: token {t['token']!r} has a base piece outside the base vocab")
    return ext


def _mean_rows(old: Any, pieces: list[list[int]]) -> Any:
    """Row k = mean of old[pieces[k]]; an empty piece list (filler) = mean of all old rows."""
    import torch

    all_mean = old.mean(dim=0)
    rows = [old[torch.tensor(p, dtype=torch.long)].mean(dim=0) if p else all_mean for p in pieces]
    return torch.stack(rows) if rows else old.new_zeros((0,) + tuple(old.shape[1:]))


def resize_with_mean_init(model: Any, tokenizer_dir: str | Path) -> dict[str, Any]:
    """Resize ``model``'s vocab to the extended tokenizer in ``tokenizer_dir`` (see module doc).

    Returns a summary {base_vocab_size, vocab_size, mean_init, filler, tied}. A tokenizer
    without extension.json whose size equals the model's is a no-op; any other size mismatch,
    or a model that is not at the base vocab size, is an ArtifactError.
    """
    import torch

    ext = read_extension(tokenizer_dir)
    inp = model.get_input_embeddings()
    old_n = inp.weight.shape[0]
    if ext is None:
        vocab = Path(tokenizer_dir) / "vocab.txt"
        n = sum(1 for _ in vocab.open(encoding="utf-8")) if vocab.is_file() else old_n
        if n != old_n:
            raise ArtifactError(f"{tokenizer_dir}: {n} tokens but the model has {old_n} embedding rows and "
                                f"there is no {EXTENSION_FILE} saying how to initialize the difference")
        return {"base_vocab_size": old_n, "vocab_size": old_n, "mean_init": 0, "filler": 0, "tied": None}
    base_n, new_n = int(ext["base_vocab_size"]), int(ext["vocab_size"])
    if old_n != base_n:
        raise ArtifactError(f"model has {old_n} embedding rows, but {tokenizer_dir}/{EXTENSION_FILE} extends a "
                            f"base of {base_n} tokens: load the base checkpoint of {ext.get('base')!r}")
    pieces = [list(map(int, t["base_pieces"])) for t in ext["tokens"]]
    out_layer = model.get_output_embeddings()
    tied_before = out_layer is not None and out_layer.weight is inp.weight
    with torch.no_grad():
        old_in = inp.weight.detach().clone()
        old_out = None if out_layer is None or tied_before else out_layer.weight.detach().clone()
        old_bias = None if out_layer is None or out_layer.bias is None else out_layer.bias.detach().clone()

    model.resize_token_embeddings(new_n, mean_resizing=False)

    inp = model.get_input_embeddings()
    out_layer = model.get_output_embeddings()
    with torch.no_grad():
        inp.weight[base_n:] = _mean_rows(old_in, pieces).to(inp.weight.dtype)
        tied = out_layer is not None and out_layer.weight is inp.weight
        if out_layer is not None and not tied:
            src = old_out if old_out is not None else old_in
            out_layer.weight[base_n:] = _mean_rows(src, pieces).to(out_layer.weight.dtype)
        if old_bias is not None:
            new_bias = torch.stack([old_bias[torch.tensor(p)].mean() if p else old_bias.min() for p in pieces])
            for bias in _bias_tensors(model, out_layer):
                bias[base_n:] = new_bias.to(bias.dtype)
    model.config.vocab_size = new_n
    _check_old_rows(model, old_in, old_out, old_bias, base_n)
    return {"base_vocab_size": base_n, "vocab_size": new_n,
            "mean_init": sum(1 for p in pieces if p), "filler": sum(1 for p in pieces if not p),
            "tied": tied}


def _bias_tensors(model: Any, out_layer: Any) -> list[Any]:
    """The decoder bias and BERT's separate ``cls.predictions.bias`` when they are distinct."""
    found = []
    if out_layer is not None and out_layer.bias is not None:
        found.append(out_layer.bias)
    head_bias = getattr(getattr(getattr(model, "cls", None), "predictions", None), "bias", None)
    if head_bias is not None and all(head_bias is not b for b in found):
        found.append(head_bias)
    return found


def _check_old_rows(model: Any, old_in: Any, old_out: Any, old_bias: Any, base_n: int) -> None:
    import torch

    inp, out_layer = model.get_input_embeddings(), model.get_output_embeddings()
    ok = torch.equal(inp.weight[:base_n], old_in)
    if old_out is not None and out_layer is not None and out_layer.weight is not inp.weight:
        ok = ok and torch.equal(out_layer.weight[:base_n], old_out)
    if old_bias is not None:
        ok = ok and all(torch.equal(b[:base_n], old_bias) for b in _bias_tensors(model, out_layer))
    if not ok:  # a bug (or a transformers change), not a user error: fail loudly
        raise RuntimeError("resize_with_mean_init: base rows changed while resizing")
