"""Sequence(-pair) classification: CHIP-CTC, CHIP-STS, KUAKE-QIC/QTR/QQR (and the two
classifiers inside CHIP-CDN). A linear layer on the encoder's [CLS] state (no pooler: pretrain
checkpoints do not train one)."""

from __future__ import annotations

from typing import Any, Callable, Sequence

from cmedbert.finetune.train import fit, pad_batch

# input fields (first text, second text) of each classification task
TEXT_FIELDS = {
    "CHIP-CTC": ("text", None),
    "CHIP-STS": ("text1", "text2"),
    "KUAKE-QIC": ("query", None),
    "KUAKE-QTR": ("query", "title"),
    "KUAKE-QQR": ("query1", "query2"),
}


def build_classifier(encoder, n_labels: int):
    import torch
    from torch import nn

    class SeqClassifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = encoder
            hidden = encoder.config.hidden_size
            self.dropout = nn.Dropout(getattr(encoder.config, "hidden_dropout_prob", 0.1))
            self.head = nn.Linear(hidden, n_labels)

        def forward(self, input_ids, attention_mask, token_type_ids=None, **_):
            kw = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
            h = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **kw).last_hidden_state[:, 0]
            return self.head(self.dropout(h))

        def loss(self, batch):
            logits = self(**batch)
            return torch.nn.functional.cross_entropy(logits, batch["labels"])

    return SeqClassifier()


class Encoded:
    """Tokenized (text_a[, text_b]) examples, padded per batch."""

    def __init__(self, tokenizer, a: Sequence[str], b: Sequence[str] | None, max_len: int,
                 labels: Sequence[int] | None = None):
        enc = tokenizer(list(a), list(b) if b is not None else None, truncation=True, max_length=max_len)
        self.ids = enc["input_ids"]
        self.types = enc.get("token_type_ids")
        self.labels = list(labels) if labels is not None else None
        self.pad = tokenizer.pad_token_id or 0

    def __len__(self) -> int:
        return len(self.ids)

    def collate(self, idx: list[int]) -> dict[str, Any]:
        import torch

        ids = pad_batch([self.ids[i] for i in idx], self.pad)
        batch = {"input_ids": ids, "attention_mask": (pad_batch([[1] * len(self.ids[i]) for i in idx], 0))}
        if self.types is not None:
            batch["token_type_ids"] = pad_batch([self.types[i] for i in idx], 0)
        if self.labels is not None:
            batch["labels"] = torch.as_tensor([self.labels[i] for i in idx], dtype=torch.long)
        return batch


def predict_proba(model, data: Encoded, batch_size: int, device: str = "cpu"):
    """Class probabilities, [n, n_labels] numpy array (order of ``data``)."""
    import numpy as np
    import torch

    model.eval()
    out = []
    # sort by length so padding stays small; restore the order at the end
    order = sorted(range(len(data)), key=lambda i: len(data.ids[i]))
    with torch.no_grad():
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            batch = {k: v.to(device) for k, v in data.collate(idx).items() if k != "labels"}
            out.append(torch.softmax(model(**batch).float(), -1).cpu().numpy())
    probs = np.concatenate(out) if out else np.zeros((0, model.head.out_features))
    result = np.empty_like(probs)
    result[order] = probs
    return result


def train_classifier(encoder, tokenizer, train: tuple, dev: tuple, n_labels: int, hp: dict, seed: int,
                     dev_metric: Callable[[Any], float], device: str, history: list, name: str):
    """Fine-tune a classifier. ``train``/``dev`` are (texts_a, texts_b | None, labels | None); ``dev``
    is the split that selects (the validation split); ``dev_metric(probs)`` scores its probabilities
    (higher is better)."""
    model = build_classifier(encoder, n_labels)
    tr = Encoded(tokenizer, train[0], train[1], int(hp["max_len"]), train[2])
    dv = Encoded(tokenizer, dev[0], dev[1], int(hp["max_len"]))
    ebs = int(hp["eval_batch_size"])
    best = fit(model, len(tr), tr.collate, hp, seed, lambda: dev_metric(predict_proba(model, dv, ebs, device)),
               device=device, history=history, name=name, lengths=[len(x) for x in tr.ids])
    return model, best


def run_classification(ctx) -> tuple[list[str], list[str], list[str]]:
    """Train on train, select on the validation split (official metric); predict valid, dev and test labels."""
    from cmedbert.finetune.metrics import score
    from cmedbert.finetune.tasks import make_submission

    spec, hp, data = ctx.spec, ctx.hp, ctx.data
    fa, fb = TEXT_FIELDS[spec.name]
    labels = list(spec.labels)
    lab2id = {lab: i for i, lab in enumerate(labels)}

    def texts(records):
        return [r[fa] for r in records], ([r[fb] for r in records] if fb else None)

    def to_labels(probs) -> list[str]:
        return [labels[i] for i in probs.argmax(-1)]

    def valid_metric(probs) -> float:  # selection reads the validation split only, never the reported dev split
        return score(spec.name, data.valid, make_submission(spec, data.valid, to_labels(probs)))["value"]

    ta, tb = texts(data.train)
    model, _ = train_classifier(ctx.encoder, ctx.tokenizer, (ta, tb, [lab2id[r["label"]] for r in data.train]),
                                (*texts(data.valid), None), len(labels), hp, ctx.seed, valid_metric, ctx.device,
                                ctx.history, spec.name)
    ebs = int(hp["eval_batch_size"])
    mx = int(hp["max_len"])
    valid_pred, dev_pred, test_pred = (
        to_labels(predict_proba(model, Encoded(ctx.tokenizer, *texts(recs), mx), ebs, ctx.device))
        for recs in (data.valid, data.dev, data.test))
    ctx.model = model
    return valid_pred, dev_pred, test_pred
