"""CMeEE: nested NER with a GlobalPointer span head over character tokens (see spans.py)."""

from __future__ import annotations

from typing import Any

from cmedbert.finetune.spans import CharEncoder, build_global_pointer, decode_spans, multilabel_ce, span_batch, windows
from cmedbert.finetune.train import fit


def build_span_model(encoder, n_types: int):
    from torch import nn

    class SpanModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = encoder
            self.gp = build_global_pointer(encoder.config.hidden_size, n_types)

        def forward(self, input_ids, attention_mask, **_):
            h = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            return self.gp(h, attention_mask)

        def loss(self, batch):
            return multilabel_ce(self(batch["input_ids"], batch["attention_mask"]), batch["labels"])

    return SpanModel()


class NerWindows:
    """Records cut into character windows; gold spans kept per window (window-local offsets)."""

    def __init__(self, records: list[dict[str, Any]], enc: CharEncoder, max_len: int, types: list[str],
                 labeled: bool):
        t2i = {t: i for i, t in enumerate(types)}
        self.ids, self.spans, self.origin = [], [], []
        for r, rec in enumerate(records):
            text = rec["text"]
            for s, e in windows(len(text), max_len):
                self.ids.append(enc.encode(text[s:e]))
                self.origin.append((r, s, e - s))
                if labeled:
                    self.spans.append([(t2i[x["type"]], x["start_idx"] - s, x["end_idx"] - s)
                                       for x in rec["entities"] if s <= x["start_idx"] and x["end_idx"] < e])
        self.pad = enc.pad
        self.n_types = len(types)

    def collate(self, idx: list[int]) -> dict[str, Any]:
        return span_batch([self.ids[i] for i in idx], [self.spans[i] for i in idx] if self.spans else None,
                          self.n_types, self.pad)


def predict_entities(model, data: NerWindows, records: list[dict[str, Any]], types: list[str], batch_size: int,
                     device: str) -> list[list[dict[str, Any]]]:
    import torch

    found: list[set] = [set() for _ in records]
    order = sorted(range(len(data.ids)), key=lambda i: len(data.ids[i]))
    with torch.no_grad():
        for k in range(0, len(order), batch_size):
            idx = order[k:k + batch_size]
            batch = {kk: v.to(device) for kk, v in span_batch([data.ids[i] for i in idx], None, data.n_types, data.pad).items()}
            logits = model(**batch)
            for i, spans in zip(idx, decode_spans(logits, [data.origin[i][2] for i in idx])):
                r, off, _ = data.origin[i]
                for t, s, e, _score in spans:
                    found[r].add((s + off, e + off, t))
    out = []
    for rec, spans in zip(records, found):
        text = rec["text"]
        out.append([{"start_idx": s, "end_idx": e, "type": types[t], "entity": text[s:e + 1]}
                    for s, e, t in sorted(spans)])
    return out


def run_ner(ctx) -> tuple[list, list, list]:
    """Train on train, select on the validation split; predict valid, dev and test entities."""
    from cmedbert.finetune.metrics import score
    from cmedbert.finetune.tasks import make_submission

    spec, hp, data = ctx.spec, ctx.hp, ctx.data
    types = list(spec.labels)
    enc = CharEncoder(ctx.tokenizer)
    mx, ebs = int(hp["max_len"]), int(hp["eval_batch_size"])
    train = NerWindows(data.train, enc, mx, types, labeled=True)
    valid = NerWindows(data.valid, enc, mx, types, labeled=False)
    model = build_span_model(ctx.encoder, len(types))

    def evaluate() -> float:  # selection reads the validation split only, never the reported dev split
        pred = predict_entities(model, valid, data.valid, types, ebs, ctx.device)
        return score(spec.name, data.valid, make_submission(spec, data.valid, pred))["value"]

    fit(model, len(train.ids), train.collate, hp, ctx.seed, evaluate, ctx.device, ctx.history, spec.name,
        lengths=[len(x) for x in train.ids])
    test = NerWindows(data.test, enc, mx, types, labeled=False)
    ctx.model = model
    dev = NerWindows(data.dev, enc, mx, types, labeled=False)
    return (predict_entities(model, valid, data.valid, types, ebs, ctx.device),
            predict_entities(model, dev, data.dev, types, ebs, ctx.device),
            predict_entities(model, test, data.test, types, ebs, ctx.device))
