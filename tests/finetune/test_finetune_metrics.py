"""Official metrics on hand-made pairs with known answers and on the shipped example files."""

from __future__ import annotations

import json

import pytest

from cmedbert.cli import main as cli_main
from cmedbert.errors import CmedbertError
from cmedbert.finetune.metrics import score, score_files
from cmedbert.finetune.tasks import read_records


def _cls(labels, key="id"):
    return [{"id": f"s{i}", "query": "q", "label": lab} for i, lab in enumerate(labels)]


def test_accuracy_hand_made_and_missing_prediction_counts_wrong():
    gold = _cls(["治疗方案", "其他", "病因分析", "其他"])
    pred = _cls(["治疗方案", "其他", "其他", "其他"])
    assert score("KUAKE-QIC", gold, pred)["value"] == pytest.approx(0.75)
    res = score("KUAKE-QIC", gold, pred[:2])  # s2, s3 missing
    assert res["value"] == pytest.approx(0.5) and res["n_missing_pred"] == 2


def test_accuracy_matches_by_id_not_position():
    gold = [{"id": "a", "label": "0"}, {"id": "b", "label": "1"}]
    pred = [{"id": "b", "label": "1"}, {"id": "a", "label": "0"}]
    assert score("KUAKE-QQR", gold, pred)["value"] == 1.0


def test_macro_f1_hand_made():
    gold = [{"id": str(i), "text1": "x", "text2": "y", "label": g} for i, g in enumerate("0011")]
    pred = [{"id": str(i), "text1": "x", "text2": "y", "label": p} for i, p in enumerate("0111")]
    # label 0: P=1, R=.5, F1=2/3; label 1: P=2/3, R=1, F1=.8 -> macro 0.7333
    assert score("CHIP-STS", gold, pred)["value"] == pytest.approx((2 / 3 + 0.8) / 2)


def test_macro_f1_counts_labels_only_predicted():
    gold = [{"id": "1", "text": "t", "label": "Disease"}, {"id": "2", "text": "t", "label": "Disease"}]
    pred = [{"id": "1", "text": "t", "label": "Disease"}, {"id": "2", "text": "t", "label": "Age"}]
    # Disease: P=1 R=.5 F1=2/3; Age: F1=0 -> 1/3 (sklearn macro over the label union)
    assert score("CHIP-CTC", gold, pred)["value"] == pytest.approx(1 / 3)


def _ent(s, e, t):
    return {"start_idx": s, "end_idx": e, "type": t}


def test_cmeee_strict_micro_f1_nested_and_inclusive_end():
    text = "患者肺内病变明显"
    gold = [{"text": text, "entities": [_ent(2, 2, "bod"), _ent(2, 5, "sym")]}]
    pred = [{"text": text, "entities": [_ent(2, 2, "bod"), _ent(2, 4, "sym"), _ent(2, 5, "dis")]}]
    res = score("CMeEE", gold, pred)
    # only (2,2,bod) is exact: P=1/3, R=1/2 -> F1=0.4
    assert res["value"] == pytest.approx(0.4)
    assert res["precision"] == pytest.approx(1 / 3) and res["recall"] == pytest.approx(0.5)


def test_cmeee_span_outside_text_is_an_error_naming_record():
    gold = [{"text": "ab", "entities": [_ent(0, 2, "dis")]}]
    with pytest.raises(CmedbertError, match=r"record 0: entity 0: span \[0, 2\]"):
        score("CMeEE", gold, gold)


def _spo(s, p, o):
    return {"subject": s, "predicate": p, "object": {"@value": o}}


def test_cmeie_micro_f1_normalizes_case_book_marks_and_duplicates():
    text = "HPV@感染 可引起 宫颈癌，见《指南》"
    gold = [{"text": text, "spo_list": [_spo("HPV", "病因", "宫颈癌"), _spo("宫颈癌", "并发症", "感染")]}]
    pred = [{"text": text, "spo_list": [_spo("hpv", "病因", "《宫颈癌》"), _spo("hpv", "病因", "宫颈癌"),
                                        _spo("宫颈癌", "病因", "感染")]}]
    res = score("CMeIE", gold, pred)
    # pred dedups to 2 triples, 1 correct; gold 2 -> P=R=F1=0.5
    assert res["value"] == pytest.approx(0.5) and res["n_pred_items"] == 2


def test_cdn_micro_f1_over_hash_joined_names():
    gold = [{"text": "a", "normalized_result": "高血压##糖尿病"}, {"text": "b", "normalized_result": "骨折"}]
    pred = [{"text": "a", "normalized_result": "糖尿病##高血压##肥胖"}, {"text": "b", "normalized_result": ""}]
    res = score("CHIP-CDN", gold, pred)
    # tp=2, pred=3, gold=3 -> 2/3
    assert res["value"] == pytest.approx(2 / 3)


EXPECTED_EXAMPLES = {
    # task: (gold file name, primary value) -- worked out by hand from the shipped files
    "CMeEE": ("example_gold.json", 5 / 9),        # tp 5, gold 10, pred 8 -> 2*5/18
    "CMeIE": ("example_gold.json", 10 / 14),      # tp 5, gold 8, pred 6
    "CHIP-CDN": ("example_gold.json", 12 / 16),   # tp 6, gold 9, pred 7
    "CHIP-CTC": ("example_gold.json", 0.2),       # 1 of 5 labels in the union has F1 1
    "KUAKE-QIC": ("example_gold.json", 1 / 3),    # s1 right, s2 wrong, s3 missing (pred has s4)
    "KUAKE-QTR": ("example_gold.json", 1 / 3),
    "KUAKE-QQR": ("example_gold.json", 1 / 3),
}


@pytest.mark.parametrize("task", sorted(EXPECTED_EXAMPLES))
def test_shipped_example_files(task, shared_data):
    folder = shared_data / "cblue" / task
    gold_name, expected = EXPECTED_EXAMPLES[task]
    gold = folder / gold_name
    if not gold.exists():
        gold = folder / "example_golden.json"
    res = score_files(task, str(gold), str(folder / "example_pred.json"))
    assert res["value"] == pytest.approx(expected)
    # the gold scored against itself is perfect
    assert score_files(task, str(gold), str(gold))["value"] == pytest.approx(1.0)


def test_score_cli_prints_official_metric(shared_data, capsys):
    folder = shared_data / "cblue" / "CMeEE"
    rc = cli_main(["finetune", "score", "--task", "CMeEE", "--gold", str(folder / "example_gold.json"),
                   "--pred", str(folder / "example_pred.json")])
    assert rc == 0
    assert "CMeEE micro_f1=0.5556" in capsys.readouterr().out


def test_score_cli_bad_inputs(tmp_path, capsys):
    gold = tmp_path / "g.json"
    gold.write_text(json.dumps([{"id": "s1", "query": "q", "label": "治疗方案"}], ensure_ascii=False))
    assert cli_main(["finetune", "score", "--task", "NOPE", "--gold", str(gold), "--pred", str(gold)]) == 2
    assert "unknown CBLUE task 'NOPE'" in capsys.readouterr().err
    # a QIC file scored as CMeEE: no 'text' key
    assert cli_main(["finetune", "score", "--task", "CMeEE", "--gold", str(gold), "--pred", str(gold)]) == 2
    assert "record 0 has no 'text' field" in capsys.readouterr().err
    bad = tmp_path / "p.json"
    bad.write_text(json.dumps([{"id": "s1", "query": "q", "label": "不存在"}], ensure_ascii=False))
    assert cli_main(["finetune", "score", "--task", "KUAKE-QIC", "--gold", str(gold), "--pred", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}: record 0: label '不存在' is not a KUAKE-QIC label" in err


def test_reader_handles_crlf_jsonl_and_bom(tmp_path):
    p = tmp_path / "x.json"
    p.write_bytes(b'\xef\xbb\xbf{"text": "a", "spo_list": []}\r\n{"text": "b", "spo_list": []}\r\n\r\n')
    assert [r["text"] for r in read_records(p)] == ["a", "b"]
    bad = tmp_path / "bad.json"
    bad.write_text('{"text": "a"}\n{oops\n')
    with pytest.raises(CmedbertError, match="line 2: invalid JSON"):
        read_records(bad)
