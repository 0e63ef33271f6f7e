"""Paired bootstrap on hand-made predictions with known answers, and per-example statistics that
reproduce the official metrics exactly."""

from __future__ import annotations

import random

import numpy as np
import pytest

from cmedbert.finetune.metrics import score
from cmedbert.finetune.predictions import example_stats, load_run_stats, read_predictions, write_predictions
from cmedbert.finetune.significance import (arm_pairs, compare_pair, paired_bootstrap, score_from_stats)
from cmedbert.finetune.tasks import QIC_LABELS, get_task


def _qic(n: int, correct: list[bool], seed: int = 0) -> tuple[list[dict], list[dict]]:
    rng = random.Random(seed)
    gold = [{"id": f"s{i}", "query": f"q{i}", "label": rng.choice(QIC_LABELS)} for i in range(n)]
    pred = [dict(g, label=g["label"] if ok else next(lab for lab in QIC_LABELS if lab != g["label"]))
            for g, ok in zip(gold, correct)]
    return gold, pred


def _stats(task, gold, pred, tmp_path, name="p"):
    path = write_predictions(tmp_path / f"{name}.jsonl.gz", get_task(task), gold, pred)
    return load_run_stats(path)


def test_identical_predictions_give_delta_zero_and_a_ci_containing_zero(tmp_path):
    rng = random.Random(1)
    gold, pred = _qic(200, [rng.random() < 0.6 for _ in range(200)])
    _, _, s = _stats("KUAKE-QIC", gold, pred, tmp_path)
    c = compare_pair("a", "b", "KUAKE-QIC", "accuracy", [s, s], [s, s], n_resamples=2000)
    assert c.delta == 0.0
    assert c.ci_low <= 0.0 <= c.ci_high
    assert c.p == 1.0 and not c.significant
    assert c.n_examples == 200 and c.n_seeds == 2


def test_a_strictly_better_system_has_a_ci_above_zero(tmp_path):
    rng = random.Random(2)
    base = [rng.random() < 0.5 for _ in range(300)]
    better = [b or rng.random() < 0.5 for b in base]  # right wherever b is right, and on more examples
    gold, pred_b = _qic(300, base)
    _, pred_a = _qic(300, better)
    _, _, sa = _stats("KUAKE-QIC", gold, pred_a, tmp_path, "a")
    _, _, sb = _stats("KUAKE-QIC", gold, pred_b, tmp_path, "b")
    c = compare_pair("better", "base", "KUAKE-QIC", "accuracy", [sa], [sb], n_resamples=2000)
    assert c.delta == pytest.approx(score_from_stats("accuracy", sa) - score_from_stats("accuracy", sb))
    assert c.delta > 0.15
    assert c.ci_low > 0 and c.significant
    assert c.p < 0.002  # every resample favours a: (0 + 1) / 2001 * 2
    # the same comparison the other way round is the mirror image
    r = compare_pair("base", "better", "KUAKE-QIC", "accuracy", [sb], [sa], n_resamples=2000)
    assert r.delta == pytest.approx(-c.delta) and r.ci_high < 0


def test_the_interval_narrows_with_more_examples_and_reflects_seed_spread(tmp_path):
    rng = np.random.default_rng(0)
    small = [np.c_[rng.random(100) < 0.6, np.ones(100)].astype(float)]
    big = [np.c_[rng.random(3000) < 0.6, np.ones(3000)].astype(float)]
    other_small = [np.c_[rng.random(100) < 0.6, np.ones(100)].astype(float)]
    other_big = [np.c_[rng.random(3000) < 0.6, np.ones(3000)].astype(float)]
    w_small = np.subtract(*paired_bootstrap("accuracy", np.stack(small), np.stack(other_small))[2:0:-1])
    w_big = np.subtract(*paired_bootstrap("accuracy", np.stack(big), np.stack(other_big))[2:0:-1])
    assert w_big < w_small / 3
    # seeds that disagree widen the interval compared with one seed repeated
    n = 500
    x = (rng.random(n) < 0.6).astype(float)
    seeds_a = np.stack([np.c_[x, np.ones(n)], np.c_[np.roll(x, 7) * (rng.random(n) < 0.7), np.ones(n)]])
    same = np.stack([seeds_a[0], seeds_a[0]])
    ref = np.stack([np.c_[x, np.ones(n)]])
    lo1, hi1 = paired_bootstrap("accuracy", same, ref)[1:3]
    lo2, hi2 = paired_bootstrap("accuracy", seeds_a, ref)[1:3]
    assert hi2 - lo2 > hi1 - lo1


def _ner_doc(i: int, n_ent: int) -> dict:
    text = "患者出现发热咳嗽症状" * 2
    ents = [{"start_idx": 2 * k, "end_idx": 2 * k + 1, "type": "sym", "entity": text[2 * k:2 * k + 2]} for k in range(n_ent)]
    return {"text": f"{i}:{text}", "entities": [dict(e, start_idx=e["start_idx"] + len(str(i)) + 1,
                                                         end_idx=e["end_idx"] + len(str(i)) + 1) for e in ents]}


def test_span_f1_resamples_documents_and_recomputes_corpus_f1(tmp_path):
    """One long document with many entities and many short ones: corpus-level micro-F1 is not the
    mean of per-document F1s, and the statistics are per document (one row per text)."""
    gold = [_ner_doc(0, 9)] + [_ner_doc(i, 1) for i in range(1, 9)]
    pred = [dict(gold[0])] + [dict(g, entities=[]) for g in gold[1:]]  # the long one right, short ones missed
    header, ids, s = _stats("CMeEE", gold, pred, tmp_path)
    assert s.shape == (9, 3) and len(set(ids)) == 9 and header["metric"] == "micro_f1"
    official = score("CMeEE", gold, pred)["value"]
    assert score_from_stats("micro_f1", s) == pytest.approx(official)
    per_doc_mean = np.mean([1.0] + [0.0] * 8)
    assert abs(official - per_doc_mean) > 0.3  # corpus F1 (9 of 17 found) is far from the per-doc mean
    # resampling documents: a resample without the long document scores 0, one with it > 0
    empty = [dict(g, entities=[]) for g in gold]
    _, _, s0 = _stats("CMeEE", gold, empty, tmp_path, "empty")
    delta, lo, hi, p = paired_bootstrap("micro_f1", s[None], s0[None], n_resamples=2000)
    assert delta == pytest.approx(official)
    assert lo == 0.0  # ~ (8/9)^9 = 35 % of resamples leave the long document out
    assert hi > 0.5


@pytest.mark.parametrize("task", ["KUAKE-QIC", "CHIP-CTC", "CMeEE", "CMeIE", "CHIP-CDN"])
def test_statistics_reproduce_the_official_metric(task, tmp_path):
    rng = random.Random(3)
    spec = get_task(task)
    gold, pred = [], []
    for i in range(60):
        if spec.kind == "cls":
            g = {"id": f"s{i}", spec.inputs[-1]: f"t{i}", "label": rng.choice(spec.labels[:6])}
            p = dict(g, label=rng.choice(spec.labels[:8]))
        elif spec.kind == "ner":
            g = _ner_doc(i, rng.randint(0, 4))
            p = dict(g, entities=[e for e in g["entities"] if rng.random() < 0.6]
                     + [{"start_idx": 0, "end_idx": 0, "type": "dis", "entity": g["text"][0]}] * (rng.random() < 0.3))
        elif spec.kind == "ie":
            spo = [{"subject": f"病{k}", "predicate": "预防", "object": {"@value": f"《药{k}》"}} for k in range(rng.randint(0, 3))]
            g = {"text": f"text {i % 50}", "spo_list": spo}
            p = dict(g, spo_list=[dict(s, subject=s["subject"].upper()) for s in spo if rng.random() < 0.7])
        else:
            g = {"text": f"诊断 {i}", "normalized_result": "##".join(rng.sample(["肺炎", "高血压", "糖尿病"], rng.randint(1, 2)))}
            p = dict(g, normalized_result=rng.choice(["肺炎", "高血压##糖尿病", "糖尿病"]))
        gold.append(g)
        pred.append(p)
    header, ids, s = _stats(task, gold, pred, tmp_path)
    assert header["task"] == task and len(ids) == 60 and len(set(ids)) == 60  # repeated texts get #k
    assert score_from_stats(spec.metric, s) == pytest.approx(score(task, gold, pred)["value"])


def test_predictions_file_is_deterministic_and_checked(tmp_path):
    gold, pred = _qic(5, [True, False, True, True, False])
    a = write_predictions(tmp_path / "a.jsonl.gz", get_task("KUAKE-QIC"), gold, pred, data={"d.json": "x"})
    b = write_predictions(tmp_path / "b.jsonl.gz", get_task("KUAKE-QIC"), gold, pred, data={"d.json": "x"})
    assert a.read_bytes() == b.read_bytes()
    header, rows = read_predictions(a)
    assert header["data"] == {"d.json": "x"} and rows[0] == {"id": "s0", "gold": gold[0]["label"], "pred": pred[0]["label"]}
    assert example_stats("KUAKE-QIC", rows)[:, 0].tolist() == [1, 0, 1, 1, 0]
    (tmp_path / "bad.jsonl.gz").write_bytes(b"not gzip")
    from cmedbert.errors import CmedbertError

    with pytest.raises(CmedbertError, match="bad.jsonl.gz"):
        read_predictions(tmp_path / "bad.jsonl.gz")


def test_pairs_put_the_earlier_arm_second():
    assert arm_pairs(["untrained", "general", "continual"]) == [
        ("general", "untrained"), ("continual", "untrained"), ("continual", "general")]
