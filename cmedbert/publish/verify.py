"""Publish, part 4: the upload folder must behave exactly like the source (loads with the Auto
classes, same logits, same fill-mask top-k)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cmedbert.errors import CmedbertError


def _load(folder: Path):
    from transformers import AutoModelForMaskedLM

    from cmedbert.tokenizer.base import load_tokenizer

    tok = load_tokenizer(folder)
    try:
        model = AutoModelForMaskedLM.from_pretrained(str(folder), use_safetensors=True)
    except Exception as exc:  # transformers raises many types; the user needs the folder and reason
        raise CmedbertError(f"{folder}: does not load with AutoTokenizer/AutoModelForMaskedLM: {exc}") from None
    model.eval()
    if tok.mask_token is None:
        raise CmedbertError(f"{folder}: the tokenizer has no mask token: not a masked-LM tokenizer")
    if len(tok) > model.config.vocab_size:
        raise CmedbertError(f"{folder}: tokenizer has {len(tok)} tokens but the model's vocab_size is "
                            f"{model.config.vocab_size} (embeddings not resized after vocab extension?)")
    return model, tok


def verify_upload(source: Path, upload: Path, sentences: list[str], top_k: int) -> dict[str, Any]:
    """The upload folder must behave exactly like the source: same logits, same fill-mask top-k."""
    import torch
    from transformers import pipeline

    src_model, src_tok = _load(source)
    up_model, up_tok = _load(upload)
    texts = [s.replace("[MASK]", src_tok.mask_token) for s in sentences if "[MASK]" in s]
    if not texts:
        raise CmedbertError("no verification sentence contains [MASK]")
    if src_tok(texts)["input_ids"] != up_tok(texts)["input_ids"]:
        raise CmedbertError(f"{upload}: its tokenizer encodes the check sentences differently from {source}")
    with torch.no_grad():
        enc = src_tok(texts, return_tensors="pt", padding=True)
        diff = (src_model(**enc).logits - up_model(**enc).logits).abs().max().item()
    if diff > 1e-5:
        raise CmedbertError(f"{upload}: logits differ from the source by {diff:.3g}")
    fill_src = pipeline("fill-mask", model=src_model, tokenizer=src_tok)
    fill_up = pipeline("fill-mask", model=up_model, tokenizer=up_tok)
    preds = []
    for t in texts:
        a = [p["token"] for p in fill_src(t, top_k=top_k)]
        b = [p["token"] for p in fill_up(t, top_k=top_k)]
        if a != b:
            raise CmedbertError(f"{upload}: fill-mask top-{top_k} for {t!r} differs from the source ({a} vs {b})")
        preds.append({"sentence": t, "top": src_tok.convert_ids_to_tokens(a)})
    return {"sentences": len(texts), "max_abs_logit_diff": diff, "top_k": top_k, "predictions": preds}
