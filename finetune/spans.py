"""Character-level encoding and a GlobalPointer span head, shared by CMeEE and CMeIE.

CBLUE span offsets count characters, so texts are encoded one token per character (the
character's own vocabulary entry, its lower-case form, or [UNK]; whitespace becomes [unused1]):
token ``i + 1`` is character ``i`` ([CLS] is token 0), and offsets map back exactly. Texts longer
than ``max_len - 2`` characters are cut into consecutive windows; every character is covered once.

GlobalPointer (Su Jianlin, 2021): for each type, score(i, j) = <q_i, k_j> with rotary position
encoding, over all spans i <= j; trained with the multi-label categorical cross-entropy, so nested
spans of different types are independent decisions. A span is predicted where the score is > 0.
"""

from __future__ import annotations

from typing import Any


class CharEncoder:
    def __init__(self, tokenizer):
        self.vocab = tokenizer.get_vocab()
        self.unk = tokenizer.unk_token_id if tokenizer.unk_token_id is not None else 0
        self.cls = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
        self.sep = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
        self.pad = tokenizer.pad_token_id or 0
        self.space = self.vocab.get("[unused1]", self.unk)
        self._cache: dict[str, int] = {}

    def char_id(self, ch: str) -> int:
        got = self._cache.get(ch)
        if got is None:
            if ch.isspace():
                got = self.space
            else:
                got = self.vocab.get(ch, self.vocab.get(ch.lower(), self.unk))
            self._cache[ch] = got
        return got

    def encode(self, text: str) -> list[int]:
        """[CLS] + one id per character + [SEP]."""
        return [self.cls] + [self.char_id(c) for c in text] + [self.sep]


def windows(n_chars: int, max_len: int) -> list[tuple[int, int]]:
    """Consecutive [start, end) character windows of at most ``max_len - 2`` characters."""
    size = max(1, max_len - 2)
    return [(s, min(n_chars, s + size)) for s in range(0, max(n_chars, 1), size)]


def build_global_pointer(hidden: int, n_types: int, head_size: int = 64):
    import torch
    from torch import nn

    class GlobalPointer(nn.Module):
        def __init__(self):
            super().__init__()
            self.n_types, self.head_size = n_types, head_size
            self.dense = nn.Linear(hidden, n_types * head_size * 2)

        def _rope(self, x):  # x: [B, L, T, D]
            L, D = x.shape[1], x.shape[-1]
            pos = torch.arange(L, dtype=torch.float, device=x.device)[:, None]
            freq = torch.pow(10000.0, -torch.arange(0, D // 2, dtype=torch.float, device=x.device) * 2 / D)
            ang = pos * freq  # [L, D/2]
            sin = torch.sin(ang).repeat_interleave(2, -1)[None, :, None, :]
            cos = torch.cos(ang).repeat_interleave(2, -1)[None, :, None, :]
            x2 = torch.stack([-x[..., 1::2], x[..., ::2]], -1).reshape(x.shape)
            return x * cos + x2 * sin

        def forward(self, h, mask):
            B, L, _ = h.shape
            x = self.dense(h).view(B, L, self.n_types, 2, self.head_size)
            q, k = self._rope(x[..., 0, :]), self._rope(x[..., 1, :])
            logits = torch.einsum("bmtd,bntd->btmn", q, k) / self.head_size ** 0.5
            pair = (mask[:, None, :, None] * mask[:, None, None, :]).bool()
            upper = torch.ones(L, L, dtype=torch.bool, device=h.device).triu()
            return logits.masked_fill(~(pair & upper), -1e12)

    return GlobalPointer()


def multilabel_ce(logits, labels):
    """Multi-label categorical cross-entropy over all spans of each (sample, type)."""
    import torch

    B, T = logits.shape[:2]
    y_pred = logits.reshape(B * T, -1)
    y_true = labels.reshape(B * T, -1).float()
    y_pred = (1 - 2 * y_true) * y_pred
    y_neg = y_pred - y_true * 1e12
    y_pos = y_pred - (1 - y_true) * 1e12
    zeros = torch.zeros_like(y_pred[:, :1])
    loss = torch.logsumexp(torch.cat([y_neg, zeros], -1), -1) + torch.logsumexp(torch.cat([y_pos, zeros], -1), -1)
    return loss.mean()


def span_batch(encoded: list[list[int]], spans: list[list[tuple[int, int, int]]] | None, n_types: int,
               pad: int) -> dict[str, Any]:
    """Pad char-encoded windows; ``spans`` are (type, start_char, end_char) per window (inclusive,
    window-local), turned into a [B, T, L, L] 0/1 tensor (token = char + 1)."""
    import torch

    from cmedbert.finetune.train import pad_batch

    ids = pad_batch(encoded, pad)
    mask = pad_batch([[1] * len(e) for e in encoded], 0)
    batch = {"input_ids": ids, "attention_mask": mask}
    if spans is not None:
        L = ids.shape[1]
        lab = torch.zeros(len(encoded), n_types, L, L, dtype=torch.uint8)
        for b, sp in enumerate(spans):
            for t, s, e in sp:
                lab[b, t, s + 1, e + 1] = 1
        batch["labels"] = lab
    return batch


def decode_spans(logits, n_chars: list[int], threshold: float = 0.0) -> list[list[tuple[int, int, int, float]]]:
    """(type, start_char, end_char, score) with score > threshold per window, inside the text.

    At most ``n_chars`` spans (the best-scoring ones) are kept per window: an untrained head can
    score most of the L*L*T cells positive, and no real text has more entities than characters."""
    out: list[list[tuple[int, int, int, float]]] = []
    for b, n in enumerate(n_chars):
        sub = logits[b, :, 1:n + 1, 1:n + 1]
        cnt = int((sub > threshold).sum())
        spans = []
        if cnt and n:
            vals, flat = sub.reshape(-1).topk(min(cnt, n))
            for v, f in zip(vals.tolist(), flat.tolist()):
                t, rem = divmod(f, n * n)
                i, j = divmod(rem, n)
                spans.append((t, i, j, v))
        out.append(spans)
    return out
