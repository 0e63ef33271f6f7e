"""Readers, schema checks and the submission writer/validator on the real CBLUE files."""

from __future__ import annotations

import json

import pytest

from cmedbert.errors import CmedbertError
from cmedbert.finetune.results import read_rows, render
from cmedbert.finetune.tasks import (CTC_LABELS, CMEIE_PREDICATES, TASKS, check_records, dumps_records, make_submission,
                            read_ctc_categories, read_icd_names, read_records, read_schemas, read_split,
                            validate_submission)

REAL = ["CMeEE", "CMeIE", "CHIP-CDN", "CHIP-CTC", "KUAKE-QIC", "KUAKE-QTR", "KUAKE-QQR"]


@pytest.mark.parametrize("task", REAL)
def test_real_dev_and_test_files_read_and_check(task, shared_data):
    folder = shared_data / "cblue" / task
    dev = read_split(task, folder / f"{task}_dev.json", labeled=True)
    test = read_split(task, folder / f"{task}_test.json", labeled=False)
    assert len(dev) > 1000 and len(test) > 1000
    assert all(TASKS[task].target not in r for r in test)


def test_label_dictionaries_match_the_schema(shared_data):
    cblue = shared_data / "cblue"
    assert read_ctc_categories(cblue / "CHIP-CTC" / "category.xlsx") == list(CTC_LABELS)
    schemas = read_schemas(cblue / "CMeIE" / "53_schemas.json")
    assert len(schemas) == 53 and {p for _, p, _ in schemas} == set(CMEIE_PREDICATES)
    names = read_icd_names(cblue / "CHIP-CDN" / "国际疾病分类 ICD-10北京临床版v601.xlsx")
    assert len(names) > 30000 and "霍乱" in names


def test_file_of_another_task_is_named(shared_data):
    qtr = shared_data / "cblue" / "KUAKE-QTR" / "KUAKE-QTR_dev.json"
    with pytest.raises(CmedbertError, match=r"KUAKE-QTR_dev.json: record 0: not a KUAKE-QIC record.*look like a KUAKE-QTR file"):
        read_split("KUAKE-QIC", qtr, labeled=True)
    cmeee = shared_data / "cblue" / "CMeEE" / "CMeEE_dev.json"
    with pytest.raises(CmedbertError, match="not a CHIP-CDN record.*CMeEE"):
        read_split("CHIP-CDN", cmeee, labeled=True)


def test_labels_outside_schema_name_file_and_record(tmp_path):
    p = tmp_path / "KUAKE-QQR_train.json"
    p.write_text(json.dumps([{"id": "s1", "query1": "a", "query2": "b", "label": "1"},
                             {"id": "s2", "query1": "a", "query2": "b", "label": "7"}]))
    with pytest.raises(CmedbertError, match=r"KUAKE-QQR_train.json: record 1: label '7' is not a KUAKE-QQR label"):
        read_split("KUAKE-QQR", p, labeled=True)
    recs = [{"text": "肺炎", "entities": [{"start_idx": 0, "end_idx": 1, "type": "disease"}]}]
    with pytest.raises(CmedbertError, match="record 0: entity 0: type 'disease'"):
        check_records("CMeEE", recs, "f.json")
    recs = [{"text": "x", "spo_list": [{"subject": "x", "predicate": "朋友", "object": {"@value": "y"}}]}]
    with pytest.raises(CmedbertError, match="predicate '朋友' is not in the CMeIE schema"):
        check_records("CMeIE", recs, "f.json")


def test_submission_roundtrip_and_checker_rules(tmp_path):
    spec = TASKS["CMeIE"]
    test = [{"text": "甲@乙"}, {"text": "丙"}]
    sub = make_submission(spec, test, [[{"subject": "甲", "predicate": "病因", "object": {"@value": "乙"}}], []])
    path = tmp_path / spec.submission_name
    path.write_text(dumps_records(spec, sub), encoding="utf-8")
    assert len(path.read_text(encoding="utf-8").splitlines()) == 2  # JSON lines
    assert validate_submission(spec, test, path)[1]["spo_list"] == []
    with pytest.raises(CmedbertError, match="is not in the submission"):
        validate_submission(spec, test + [{"text": "丁"}], path)
    wrong = tmp_path / "CMeIE_pred.json"
    wrong.write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    with pytest.raises(CmedbertError, match="must be named CMeIE_test.json"):
        validate_submission(spec, test, wrong)


def test_table_mean_std_and_average(tmp_path):
    rows = []
    for seed, v in ((1, 0.80), (2, 0.84)):
        rows.append(dict(checkpoint="a", task="KUAKE-QIC", seed=seed, split="dev", metric="accuracy", value=v, config_hash="h"))
    rows.append(dict(checkpoint="a", task="CMeEE", seed=1, split="dev", metric="micro_f1", value=0.5, config_hash="h"))
    rows.append(dict(checkpoint="a", task="CMeEE", seed=1, split="dev", metric="precision", value=0.9, config_hash="h"))
    rows.append(dict(checkpoint="b", task="KUAKE-QIC", seed=1, split="dev", metric="accuracy", value=0.7, config_hash="h"))
    f = tmp_path / "results.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    md, csv_text = render(read_rows([f, f]))  # same file twice: counted once
    lines = md.splitlines()
    assert lines[0].startswith("| checkpoint | CMeEE (micro_f1) | KUAKE-QIC (accuracy) | CBLUE avg")
    assert "| a | 50.00 | 82.00 ± 2.83 | 66.00 | 1/2 |" in md
    assert "| b | – | 70.00 | 70.00* | 1 |" in md
    assert csv_text.splitlines()[1].startswith("a,50.0000,0,1,82.0000,2.8284,2,66.0000,2")
