"""Packed data → training batches, as a pure function of the step.

Every batch is addressed, not iterated: optimizer step ``s`` of phase ``p`` uses the global
sample indices ``k*G .. k*G+G-1`` (``k = s - phase start``, ``G`` = global batch); sample ``g``
is row ``perm_e[g mod n]`` of the split with ``e = g div n`` and ``perm_e`` a permutation
seeded by (seed, phase, epoch). Rank ``r``'s micro-batch ``m`` takes block ``b = r*A + m``
(``A`` = accumulation steps) of ``micro`` samples. Masks use one generator per global sample
index. So resuming at step ``s`` needs only ``s`` (no skipped batches are read), and 2 ranks x
1 micro-batch see exactly the samples and masks of 1 rank x 2 accumulation steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from cmedbert.errors import ArtifactError, CmedbertError
from cmedbert.paths import resolve
from cmedbert.pretrain.masking import mask_tokens, row_generators
from cmedbert.tokenizer.packed import PackedData, PackedSplit, open_packed


@dataclass
class Phase:
    index: int
    packed: PackedData
    train: PackedSplit
    valid: PackedSplit | None
    start_step: int  # first optimizer step of the phase (inclusive)
    end_step: int  # exclusive

    @property
    def seq_len(self) -> int:
        return self.packed.seq_len


def open_phases(cfg: Any, tokenizer_hash: str, vocab_size: int, special_ids: dict[str, int]) -> list[PackedData]:
    """Open every phase's packed folder, refusing data packed with another tokenizer."""
    out = []
    for ph in cfg.data.resolved_phases():
        packed = open_packed(resolve(ph.path), expect_tokenizer_hash=tokenizer_hash)
        meta = packed.meta
        if int(meta.get("vocab_size", -1)) != vocab_size:
            raise ArtifactError(f"{ph.path}: packed for a vocab of {meta.get('vocab_size')} tokens, the tokenizer "
                                f"has {vocab_size}")
        for key, tid in special_ids.items():
            if key in meta and int(meta[key]) != tid:
                raise ArtifactError(f"{ph.path}: packed {key}={meta[key]}, the tokenizer says {tid}")
        out.append(packed)
    return out


def plan_steps(cfg: Any, seq_lens: list[int]) -> int:
    """Total optimizer steps from ``train.max_steps`` and/or the token budget ``train.train_tokens``
    (the smaller wins). A step of phase i covers global_batch x seq_len_i token positions."""
    fractions = [p.fraction for p in cfg.data.resolved_phases()]
    steps = []
    if cfg.train.max_steps is not None:
        steps.append(cfg.train.max_steps)
    if cfg.train.train_tokens is not None:
        per_step = cfg.batch.global_batch * sum(f * L for f, L in zip(fractions, seq_lens))
        steps.append(max(1, math.ceil(cfg.train.train_tokens / per_step)))
    return min(steps)


def phase_bounds(fractions: list[float], total_steps: int) -> list[int]:
    """Optimizer-step bounds of the phases: phase i runs steps [bounds[i], bounds[i + 1])."""
    bounds = [0] + [round(sum(fractions[: i + 1]) * total_steps) for i in range(len(fractions))]
    bounds[-1] = total_steps
    return bounds


def build_phases(cfg: Any, packed: list[PackedData], total_steps: int) -> list[Phase]:
    bounds = phase_bounds([p.fraction for p in cfg.data.resolved_phases()], total_steps)
    phases = []
    for i, pk in enumerate(packed):
        train = pk.split(cfg.data.train_split)
        if len(train) == 0:
            raise ArtifactError(f"{pk.folder}: split {cfg.data.train_split!r} is empty")
        valid = pk.split(cfg.data.valid_split) if cfg.data.valid_split in pk.meta["splits"] else None
        phases.append(Phase(i, pk, train, valid, bounds[i], bounds[i + 1]))
    return phases


def phase_at(phases: list[Phase], step: int) -> Phase:
    for ph in phases:
        if ph.start_step <= step < ph.end_step:
            return ph
    return phases[-1]


class Batches:
    """Micro-batches of one rank for any step, with the row permutation of the current epoch cached."""

    def __init__(self, cfg: Any, phases: list[Phase], rank: int, world_size: int, accumulation: int,
                 specials: list[int], mask_id: int, pad_id: int, vocab_size: int):
        self.cfg, self.phases, self.rank, self.world, self.accum = cfg, phases, rank, world_size, accumulation
        self.micro, self.global_batch = cfg.batch.micro_batch, cfg.batch.global_batch
        self.specials, self.mask_id, self.pad_id, self.vocab_size = specials, mask_id, pad_id, vocab_size
        self._perm_key: tuple[int, int] | None = None
        self._perm: np.ndarray | None = None

    def _permutation(self, phase: int, epoch: int, n: int) -> np.ndarray:
        if self._perm_key != (phase, epoch):
            self._perm = np.random.default_rng([self.cfg.seed, phase, epoch]).permutation(n)
            self._perm_key = (phase, epoch)
        return self._perm  # type: ignore[return-value]

    def sample_indices(self, step: int, micro_index: int) -> tuple[Phase, np.ndarray]:
        """Global sample indices (within the phase) of this rank's micro-batch."""
        ph = phase_at(self.phases, step)
        block = self.rank * self.accum + micro_index
        first = (step - ph.start_step) * self.global_batch + block * self.micro
        return ph, np.arange(first, first + self.micro)

    def rows(self, ph: Phase, samples: np.ndarray) -> np.ndarray:
        n = len(ph.train)
        out = np.empty(len(samples), dtype=np.int64)
        for i, g in enumerate(samples):  # a micro-batch may straddle an epoch boundary
            out[i] = self._permutation(ph.index, int(g) // n, n)[int(g) % n]
        return out

    def micro_batch(self, step: int, micro_index: int) -> dict[str, np.ndarray]:
        ph, samples = self.sample_indices(step, micro_index)
        rows = self.rows(ph, samples)
        order = np.argsort(rows)  # memmap reads in file order
        ids = np.empty((len(rows), ph.seq_len), dtype=np.int64)
        flags = np.empty((len(rows), ph.seq_len), dtype=np.uint8)
        ids[order] = ph.train.ids[rows[order]]
        flags[order] = ph.train.flags[rows[order]]
        rngs = row_generators(self.cfg.seed, samples, salt=1 + ph.index)
        input_ids, labels = mask_tokens(ids, flags, rngs, self.cfg.masking, special_ids=self.specials,
                                        mask_id=self.mask_id, vocab_size=self.vocab_size)
        return {"input_ids": input_ids, "labels": labels, "attention_mask": (ids != self.pad_id),
                "block": np.array(self.rank * self.accum + micro_index), "n_tokens": np.array(int((ids != self.pad_id).sum()))}

    def position(self, step: int) -> dict[str, Any]:
        """Where the next step reads (for checkpoints / logs): phase, epoch, offset in the epoch."""
        ph = phase_at(self.phases, step)
        g = (step - ph.start_step) * self.global_batch
        n = len(ph.train)
        return {"phase": ph.index, "packed": str(ph.packed.folder), "epoch": g // n, "offset": g % n}


def eval_batches(phase: Phase, cfg: Any, rank: int, world_size: int, specials: list[int], mask_id: int,
                 pad_id: int, vocab_size: int):
    """This rank's evaluation micro-batches on the valid split: the first ``eval.max_sequences``
    rows, a fixed 15% whole-word mask from ``eval.seed`` (independent of the training masking
    config, so runs compare). Every rank yields the same number of batches (weights 0 pad
    the short ones) so collectives stay matched under ZeRO-3."""
    from cmedbert.pretrain.config import MaskingConfig

    if phase.valid is None or len(phase.valid) == 0:
        return
    fixed = MaskingConfig(mlm_probability=0.15, whole_word=True, entity_probability=0.0)
    n = min(len(phase.valid), cfg.eval.max_sequences)
    micro = cfg.eval.micro_batch or cfg.batch.micro_batch
    mine = np.arange(rank, n, world_size)
    n_batches = math.ceil(math.ceil(n / world_size) / micro)
    for b in range(n_batches):
        rows = mine[b * micro:(b + 1) * micro]
        weight = 1.0
        if len(rows) == 0:
            rows, weight = np.array([0]), 0.0
        ids = np.asarray(phase.valid.ids[rows], dtype=np.int64)
        flags = np.asarray(phase.valid.flags[rows])
        input_ids, labels = mask_tokens(ids, flags, row_generators(cfg.eval.seed, rows, salt=0), fixed,
                                        special_ids=specials, mask_id=mask_id, vocab_size=vocab_size)
        yield {"input_ids": input_ids, "labels": labels, "attention_mask": ids != pad_id, "weight": weight,
               "rows": rows}


def check_ids_fit(phases: list[Phase], model_vocab: int) -> None:
    """Refuse packed ids the model has no embedding for (checked on a sample of rows)."""
    for ph in phases:
        sample = np.asarray(ph.train.ids[: min(len(ph.train), 256)])
        if sample.size and int(sample.max()) >= model_vocab:
            raise CmedbertError(f"{ph.packed.folder}: token id {int(sample.max())} >= model vocab {model_vocab}")


class Prefetcher:
    """Builds the next micro-batch on a background thread while the current one trains.
    Batches are pure functions of (step, micro index), so prefetching never changes results."""

    def __init__(self, batches: Batches, total_steps: int):
        from concurrent.futures import ThreadPoolExecutor

        self.batches, self.total = batches, total_steps
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pretrain-data")
        self.pending: dict[tuple[int, int], Any] = {}

    def _next_key(self, step: int, m: int) -> tuple[int, int] | None:
        if m + 1 < self.batches.accum:
            return step, m + 1
        return (step + 1, 0) if step + 1 < self.total else None

    def get(self, step: int, m: int) -> dict[str, np.ndarray]:
        fut = self.pending.pop((step, m), None)
        b = fut.result() if fut is not None else self.batches.micro_batch(step, m)
        nxt = self._next_key(step, m)
        if nxt is not None and nxt not in self.pending:
            self.pending = {nxt: self.pool.submit(self.batches.micro_batch, *nxt)}
        return b

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
