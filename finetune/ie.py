"""CMeIE: a simple joint model.

One encoder, two heads trained together:
* a GlobalPointer over character tokens finds subject spans (type 0) and object spans (type 1);
* a relation head scores every (subject span, object span) pair against the 53 schemas
  (subject type, predicate, object type) with independent sigmoids (a pair may hold several).
Training pairs are the gold related pairs plus up to ``ie.max_pairs`` unrelated (gold subject,
gold object) pairs per window. Decoding: predicted subjects x predicted objects (best 20 of each
per window), schema probability > 0.5 -> (subject, predicate, object) with the schema's types.
The dataset gives subjects/objects as strings; a string's first occurrence in the window is
taken as its span (every dev string occurs in its text).
"""

from __future__ import annotations

from typing import Any

from cmedbert.finetune.spans import CharEncoder, build_global_pointer, decode_spans, multilabel_ce, span_batch, windows
from cmedbert.finetune.train import fit

MAX_CANDIDATES = 20  # predicted subjects / objects kept per window before pairing
MAX_TRIPLES = 40     # predicted triples kept per window (best first)


def build_ie_model(encoder, n_schemas: int):
    import torch
    from torch import nn

    hidden = encoder.config.hidden_size

    class JointIE(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = encoder
            self.gp = build_global_pointer(hidden, 2)
            self.rel = nn.Sequential(nn.Linear(4 * hidden, hidden), nn.GELU(),
                                     nn.Dropout(getattr(encoder.config, "hidden_dropout_prob", 0.1)),
                                     nn.Linear(hidden, n_schemas))

        def hidden(self, input_ids, attention_mask):
            return self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

        def pair_logits(self, h, pairs):  # pairs: [N, 5] (batch, s_start, s_end, o_start, o_end) token idx
            b = pairs[:, 0]
            feats = torch.cat([h[b, pairs[:, k]] for k in (1, 2, 3, 4)], -1)
            return self.rel(feats)

        def loss(self, batch):
            h = self.hidden(batch["input_ids"], batch["attention_mask"])
            loss = multilabel_ce(self.gp(h, batch["attention_mask"]), batch["labels"])
            if batch["pairs"].shape[0]:
                loss = loss + nn.functional.binary_cross_entropy_with_logits(
                    self.pair_logits(h, batch["pairs"]), batch["pair_labels"])
            return loss

    return JointIE()


class IeWindows:
    def __init__(self, records: list[dict[str, Any]], enc: CharEncoder, max_len: int,
                 schemas: list[tuple[str, str, str]], labeled: bool, max_pairs: int):
        self.schema_index = {s: i for i, s in enumerate(schemas)}
        self.by_pred = {}
        for i, (_, p, _) in enumerate(schemas):
            self.by_pred.setdefault(p, i)
        self.ids, self.origin, self.spans, self.pairs = [], [], [], []
        for r, rec in enumerate(records):
            text = rec["text"]
            for s, e in windows(len(text), max_len):
                w = text[s:e]
                self.ids.append(enc.encode(w))
                self.origin.append((r, s, e - s))
                if labeled:
                    sp, pr = self._gold(w, rec["spo_list"], max_pairs)
                    self.spans.append(sp)
                    self.pairs.append(pr)
        self.pad = enc.pad
        self.n_schemas = len(schemas)

    def _gold(self, w: str, spo_list: list, max_pairs: int):
        subj, obj, rel = {}, {}, {}
        for spo in spo_list:
            s_txt, o_txt = spo["subject"], spo["object"]["@value"]
            si, oi = w.find(s_txt) if s_txt else -1, w.find(o_txt) if o_txt else -1
            if si < 0 or oi < 0:
                continue
            s_span, o_span = (si, si + len(s_txt) - 1), (oi, oi + len(o_txt) - 1)
            subj[s_span] = obj[o_span] = True
            st = spo.get("subject_type", "")
            ot = (spo.get("object_type") or {}).get("@value", "")
            k = self.schema_index.get((st, spo["predicate"], ot), self.by_pred.get(spo["predicate"]))
            rel.setdefault((s_span, o_span), set()).add(k)
        spans = [(0, a, b) for a, b in subj] + [(1, a, b) for a, b in obj]
        pairs = [(s, o, ks) for (s, o), ks in rel.items()]
        negatives = [(s, o, set()) for s in subj for o in obj if (s, o) not in rel and s != o]
        return spans, pairs + negatives[:max_pairs]

    def collate(self, idx: list[int]) -> dict[str, Any]:
        import torch

        batch = span_batch([self.ids[i] for i in idx], [self.spans[i] for i in idx] if self.spans else None, 2, self.pad)
        if self.pairs:
            rows, labels = [], []
            for b, i in enumerate(idx):
                for (ss, se), (os_, oe), ks in self.pairs[i]:
                    rows.append((b, ss + 1, se + 1, os_ + 1, oe + 1))
                    y = [0.0] * self.n_schemas
                    for k in ks:
                        y[k] = 1.0
                    labels.append(y)
            batch["pairs"] = torch.as_tensor(rows, dtype=torch.long).reshape(-1, 5)
            batch["pair_labels"] = torch.as_tensor(labels, dtype=torch.float).reshape(-1, self.n_schemas)
        return batch


def predict_spo(model, data: IeWindows, records: list[dict[str, Any]], schemas: list[tuple[str, str, str]],
                batch_size: int, device: str) -> list[list[dict[str, Any]]]:
    import torch

    found: list[dict] = [{} for _ in records]
    order = sorted(range(len(data.ids)), key=lambda i: len(data.ids[i]))
    with torch.no_grad():
        for k in range(0, len(order), batch_size):
            idx = order[k:k + batch_size]
            batch = {kk: v.to(device) for kk, v in span_batch([data.ids[i] for i in idx], None, 2, data.pad).items()}
            h = model.hidden(batch["input_ids"], batch["attention_mask"])
            spans = decode_spans(model.gp(h, batch["attention_mask"]), [data.origin[i][2] for i in idx])
            rows, meta = [], []
            for b, (i, sp) in enumerate(zip(idx, spans)):
                subs = sorted((x for x in sp if x[0] == 0), key=lambda x: -x[3])[:MAX_CANDIDATES]
                objs = sorted((x for x in sp if x[0] == 1), key=lambda x: -x[3])[:MAX_CANDIDATES]
                for _, ss, se, _ in subs:
                    for _, os_, oe, _ in objs:
                        if (ss, se) != (os_, oe):
                            rows.append((b, ss + 1, se + 1, os_ + 1, oe + 1))
                            meta.append((i, ss, se, os_, oe))
            if not rows:
                continue
            probs = torch.sigmoid(model.pair_logits(h, torch.as_tensor(rows, dtype=torch.long, device=h.device)))
            # keep the best (at most MAX_TRIPLES per window) pairs above 0.5: an untrained head
            # would otherwise emit every schema for every pair
            flat = probs.flatten()
            k_keep = min(int((flat > 0.5).sum()), MAX_TRIPLES * len(idx))
            for pos in flat.topk(k_keep).indices.tolist() if k_keep else []:
                row, j = divmod(pos, data.n_schemas)
                i, ss, se, os_, oe = meta[row]
                r, off, _ = data.origin[i]
                text = records[r]["text"]
                s_txt, o_txt = text[off + ss: off + se + 1], text[off + os_: off + oe + 1]
                found[r].setdefault((s_txt, j, o_txt), None)
    out = []
    for triples in found:
        spo = []
        for s_txt, j, o_txt in triples:
            st, pred, ot = schemas[j]
            spo.append({"Combined": False, "predicate": pred, "subject": s_txt, "subject_type": st,
                        "object": {"@value": o_txt}, "object_type": {"@value": ot}})
        out.append(spo)
    return out


def run_ie(ctx) -> tuple[list, list, list]:
    """Train on train, select on the validation split; predict valid, dev and test triples."""
    from cmedbert.finetune.metrics import score
    from cmedbert.finetune.tasks import make_submission

    spec, hp, data = ctx.spec, ctx.hp, ctx.data
    schemas = list(data.schemas)
    enc = CharEncoder(ctx.tokenizer)
    mx, ebs = int(hp["max_len"]), int(hp["eval_batch_size"])
    train = IeWindows(data.train, enc, mx, schemas, True, ctx.cfg.ie.max_pairs)
    valid = IeWindows(data.valid, enc, mx, schemas, False, 0)
    model = build_ie_model(ctx.encoder, len(schemas))

    def evaluate() -> float:  # selection reads the validation split only, never the reported dev split
        pred = predict_spo(model, valid, data.valid, schemas, ebs, ctx.device)
        return score(spec.name, data.valid, make_submission(spec, data.valid, pred))["value"]

    fit(model, len(train.ids), train.collate, hp, ctx.seed, evaluate, ctx.device, ctx.history, spec.name,
        lengths=[len(x) for x in train.ids])
    test = IeWindows(data.test, enc, mx, schemas, False, 0)
    ctx.model = model
    dev = IeWindows(data.dev, enc, mx, schemas, False, 0)
    return (predict_spo(model, valid, data.valid, schemas, ebs, ctx.device),
            predict_spo(model, dev, data.dev, schemas, ebs, ctx.device),
            predict_spo(model, test, data.test, schemas, ebs, ctx.device))
