"""CHIP-CDN: normalize a diagnosis to ICD-10 Beijing clinical v601 names.

Three steps, in the spirit of the official baseline:
1. retrieval: character n-gram (1..``cdn.ngram``) TF-IDF cosine over the candidate names (the
   xlsx names plus names seen in the train labels), top ``cdn.recall_k`` per text;
2. a cross-encoder (text, candidate) -> match / no match, trained on the gold names and
   ``cdn.train_negatives`` retrieved wrong names per gold name;
3. a count classifier (text -> 1, 2, ..., ``cdn.max_names`` or more names).
The prediction is the ``count`` best candidates by cross-encoder probability, joined with "##".
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

from cmedbert.finetune.tasks import ICD_XLSX, read_icd_names, split_names


class TfidfIndex:
    """Cosine similarity of character n-gram TF-IDF vectors (smoothed idf, l2-normalized)."""

    def __init__(self, names: list[str], ngram: int = 2):
        import numpy as np
        from scipy import sparse

        self.names, self.n = names, ngram
        grams = [self._grams(x) for x in names]
        self.vocab: dict[str, int] = {}
        for g in grams:
            for t in g:
                self.vocab.setdefault(t, len(self.vocab))
        df = Counter(t for g in grams for t in set(g))
        N = len(names)
        self.idf = np.ones(len(self.vocab), dtype=np.float32)
        for t, i in self.vocab.items():
            self.idf[i] = math.log((1 + N) / (1 + df[t])) + 1
        self.matrix = self._vectors(grams).T.tocsr()  # [V, N]
        self._sparse = sparse

    def _grams(self, text: str) -> list[str]:
        text = text.lower()
        return [text[i:i + k] for k in range(1, self.n + 1) for i in range(len(text) - k + 1)]

    def _vectors(self, grams: list[list[str]]):
        import numpy as np
        from scipy import sparse

        rows, cols, vals = [], [], []
        for r, g in enumerate(grams):
            c = Counter(self.vocab[t] for t in g if t in self.vocab)
            for j, tf in c.items():
                rows.append(r)
                cols.append(j)
                vals.append(tf * self.idf[j])
        m = sparse.csr_matrix((np.asarray(vals, dtype=np.float32), (rows, cols)), shape=(len(grams), len(self.vocab)))
        norm = np.sqrt(np.asarray(m.multiply(m).sum(1)).ravel())
        norm[norm == 0] = 1
        return sparse.diags(1 / norm) @ m

    def search(self, texts: list[str], k: int, batch: int = 256) -> list[list[int]]:
        import numpy as np

        k = min(k, len(self.names))
        out: list[list[int]] = []
        for i in range(0, len(texts), batch):
            sims = (self._vectors([self._grams(t) for t in texts[i:i + batch]]) @ self.matrix).toarray()
            top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
            for row, cand in zip(sims, top):
                out.append(cand[np.argsort(-row[cand], kind="stable")].tolist())
        return out


def candidate_names(folder, train: list[dict[str, Any]]) -> list[str]:
    names = list(read_icd_names(folder / ICD_XLSX))
    seen = set(names)
    for r in train:
        for n in split_names(r["normalized_result"]):
            if n not in seen:
                seen.add(n)
                names.append(n)
    return names


def _pairs(records, retrieved, names, negatives_per_gold: int):
    a, b, y = [], [], []
    for rec, cands in zip(records, retrieved):
        gold = split_names(rec["normalized_result"])
        for g in gold:
            a.append(rec["text"]), b.append(g), y.append(1)
        neg = [names[c] for c in cands if names[c] not in gold][: negatives_per_gold * max(1, len(gold))]
        for n in neg:
            a.append(rec["text"]), b.append(n), y.append(0)
    return a, b, y


def run_cdn(ctx) -> tuple[list[str], list[str], list[str]]:
    import numpy as np

    from cmedbert.finetune.cls import Encoded, predict_proba, train_classifier

    hp, data, cc = ctx.hp, ctx.data, ctx.cfg.cdn
    names = candidate_names(data.folder, data.train)
    index = TfidfIndex(names, cc.ngram)
    k = cc.recall_k
    tr_ret = index.search([r["text"] for r in data.train], k)
    dev_ret = index.search([r["text"] for r in data.dev], k)
    valid_ret = index.search([r["text"] for r in data.valid], k)
    name_id = {n: i for i, n in enumerate(names)}
    # measured on the validation split: the runner never sees the reported dev labels
    hits = sum(name_id.get(g, -1) in set(c) for r, c in zip(data.valid, valid_ret) for g in split_names(r["normalized_result"]))
    total = sum(len(split_names(r["normalized_result"])) for r in data.valid)
    ctx.extra = {"valid_retrieval_recall_at_k": hits / total if total else 0.0, "recall_k": k, "n_candidates": len(names)}

    encoder2 = _copy(ctx.encoder)  # the cross-encoder starts from the checkpoint too

    # 1) count classifier
    def n_class(rec):
        return min(len(split_names(rec["normalized_result"])), cc.max_names) - 1

    # selection reads the validation split only, never the reported dev split
    valid_counts = np.array([n_class(r) for r in data.valid])
    count_model, _ = train_classifier(
        ctx.encoder, ctx.tokenizer, ([r["text"] for r in data.train], None, [n_class(r) for r in data.train]),
        ([r["text"] for r in data.valid], None, None), cc.max_names, hp, ctx.seed,
        lambda p: float((p.argmax(-1) == valid_counts).mean()), ctx.device, ctx.history, "CHIP-CDN/count")

    # 2) cross-encoder
    tr_pairs = _pairs(data.train, tr_ret, names, cc.train_negatives)
    dv_pairs = _pairs(data.valid, valid_ret, names, cc.train_negatives)
    dv_y = np.array(dv_pairs[2])
    pair_model, _ = train_classifier(
        encoder2, ctx.tokenizer, tr_pairs, (dv_pairs[0], dv_pairs[1], None), 2, hp, ctx.seed,
        lambda p: _binary_f1(p.argmax(-1), dv_y), ctx.device, ctx.history, "CHIP-CDN/match")

    ebs, mx = int(hp["eval_batch_size"]), int(hp["max_len"])

    def predict(records, retrieved) -> list[str]:
        texts = [r["text"] for r in records]
        counts = predict_proba(count_model, Encoded(ctx.tokenizer, texts, None, mx), ebs, ctx.device).argmax(-1) + 1
        a = [t for t, c in zip(texts, retrieved) for _ in c]
        b = [names[i] for c in retrieved for i in c]
        probs = predict_proba(pair_model, Encoded(ctx.tokenizer, a, b, mx), ebs, ctx.device)[:, 1] if a else []
        out, pos = [], 0
        for c, n in zip(retrieved, counts):
            p = probs[pos:pos + len(c)]
            pos += len(c)
            best = [names[c[j]] for j in np.argsort(-np.asarray(p), kind="stable")[: int(n)]]
            out.append("##".join(best))
        return out

    ctx.model = pair_model
    test_ret = index.search([r["text"] for r in data.test], k)
    return predict(data.valid, valid_ret), predict(data.dev, dev_ret), predict(data.test, test_ret)


def _copy(module):
    import copy

    return copy.deepcopy(module)


def _binary_f1(pred, gold) -> float:
    tp = int(((pred == 1) & (gold == 1)).sum())
    p = tp / max(1, int((pred == 1).sum()))
    r = tp / max(1, int((gold == 1).sum()))
    return 2 * p * r / (p + r) if p + r else 0.0
