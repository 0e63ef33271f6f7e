"""The demo's built-in data (cmedbert/demo_data): formats parse, offsets are exact, counts in range,
and the planted problems (PII, duplicates, CBLUE contamination) are really there."""

from __future__ import annotations

import csv
import difflib
import json
import re
from collections import Counter
from pathlib import Path

import pytest

import cmedbert

DEMO = Path(cmedbert.__file__).resolve().parent / "demo_data"

QIC_LABELS = {"病情诊断", "病因分析", "治疗方案", "就医建议", "指标解读", "疾病表述", "后果表述",
              "注意事项", "功效作用", "医疗费用", "其他"}
CMEEE_TYPES = {"dis", "sym", "pro", "equ", "dru", "ite", "bod", "dep", "mic"}
CORPUS_FILES = ["medical/dialogue.csv", "medical/consult.txt", "medical/qa.jsonl"]


def read(rel: str) -> str:
    return (DEMO / rel).read_text(encoding="utf-8")


def load_json(rel: str):
    return json.loads(read(rel))


def corpus_text() -> str:
    return "\n".join(read(f) for f in CORPUS_FILES)


def consult_blocks() -> list[str]:
    return [b for b in re.split(r"\n\s*\n(?=id=\d+\n)", read("medical/consult.txt").strip()) if b.strip()]


def test_every_file_is_utf8_lf_without_bom():
    files = [p for p in DEMO.rglob("*") if p.is_file() and "tools" not in p.parts]
    expected = {"README.md", "medical/dialogue.csv", "medical/consult.txt", "medical/qa.jsonl",
                "kg/triples.json", "kg/disease.txt", "kg/symptom.txt", "kg/drug.txt", "kg/check.txt",
                "general/news.txt"}
    expected |= {f"cblue/{t}/{t}_{s}.json" for t in ("KUAKE-QIC", "CMeEE") for s in ("train", "dev", "test")}
    assert {str(p.relative_to(DEMO)) for p in files} == expected
    for p in files:
        raw = p.read_bytes()
        assert not raw.startswith(b"\xef\xbb\xbf"), p
        assert b"\r" not in raw, p
        raw.decode("utf-8")


def test_dialogue_csv_shape_pii_and_duplicates():
    with open(DEMO / "medical/dialogue.csv", encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        assert reader.fieldnames == ["department", "title", "ask", "answer"]
        rows = list(reader)
    assert 130 <= len(rows) <= 170
    assert all(all(r[k].strip() for k in r) for r in rows)
    depts = Counter(r["department"] for r in rows)
    for dept in ("内科", "儿科", "妇产科", "外科", "皮肤科", "心血管科"):
        assert depts[dept] > 0, dept
    text = "\n".join(r["ask"] + r["answer"] for r in rows)
    assert re.search(r"(?<!\d)1[3-9]\d{9}(?!\d)", text), "a planted phone number"
    assert re.search(r"[\w.]+@[\w.]+\.\w+", text), "a planted email"
    for needle in ("0.5g", "mg/kg", "HbA1c 6.5%", "2型糖尿病", "糖化血红蛋白", "冠状动脉粥样硬化"):
        assert needle in text, needle
    exact = sum(n - 1 for n in Counter(tuple(r.values()) for r in rows).values())
    assert exact >= 2
    # near duplicates: same title, different but very similar answer
    by_title: dict[str, list[str]] = {}
    for r in rows:
        by_title.setdefault(r["title"], []).append(r["ask"] + r["answer"])
    near = 0
    for texts in by_title.values():
        uniq = sorted(set(texts))
        near += sum(1 for i in range(len(uniq)) for j in range(i + 1, len(uniq))
                    if difflib.SequenceMatcher(None, uniq[i], uniq[j]).ratio() > 0.9)
    assert near >= 2


def test_consult_blocks_follow_the_dialogue_format():
    blocks = consult_blocks()
    assert 25 <= len(blocks) <= 40
    for i, block in enumerate(blocks, start=1):
        lines = block.split("\n")
        assert lines[0] == f"id={i}"
        assert lines[1].startswith("https://")
        for head in ("Description", "疾病：", "病情描述：", "希望获得的帮助：", "Dialogue"):
            assert head in block, (i, head)
        dialogue = lines[lines.index("Dialogue") + 1:]
        speakers = dialogue[0::2]
        assert set(speakers) == {"病人：", "医生："}, (i, speakers)
        assert all(t.strip() for t in dialogue[1::2])
        assert len(dialogue) >= 8


def test_qa_jsonl_mixes_instruction_and_sharegpt_records():
    inst = share = 0
    for n, line in enumerate(read("medical/qa.jsonl").splitlines(), start=1):
        rec = json.loads(line)
        if "conversations" in rec:
            turns = rec["conversations"]
            assert [t["from"] for t in turns][:2] == ["human", "gpt"], n
            assert all(t["value"].strip() for t in turns)
            share += 1
        else:
            assert set(rec) == {"instruction", "input", "output"}, n
            assert rec["instruction"].strip() and rec["output"].strip()
            inst += 1
    assert 130 <= inst <= 170
    assert 3 <= share <= 10


def test_kg_triples_and_term_lists():
    recs = load_json("kg/triples.json")
    assert 15 <= len(recs) <= 30
    preds = Counter()
    for rec in recs:
        for s, p, o in rec["spo_list"]:
            assert s in rec["text"] and o in rec["text"], (s, p, o)
            preds[p] += 1
    assert 30 <= sum(preds.values()) <= 300
    assert {"临床表现", "药物治疗", "相关疾病", "检查", "发病部位", "并发症"} <= set(preds)
    corpus = corpus_text()
    for name in ("disease", "symptom", "drug", "check"):
        terms = read(f"kg/{name}.txt").splitlines()
        assert 30 <= len(terms) <= 80, name
        assert len(set(terms)) == len(terms) and all(t.strip() == t and t for t in terms), name
        used = sum(t in corpus for t in terms)
        assert used >= 0.6 * len(terms), (name, used)
    assert {"2型糖尿病", "冠状动脉粥样硬化"} <= set(read("kg/disease.txt").splitlines())
    assert "糖化血红蛋白" in read("kg/check.txt").splitlines()


def test_general_text_is_mostly_non_medical():
    lines = read("general/news.txt").splitlines()
    assert 250 <= len(lines) <= 350
    assert all(line.strip() for line in lines)
    diseases = read("kg/disease.txt").splitlines() + ["医院", "医生"]
    medical = sum(any(t in line for t in diseases) for line in lines)
    assert medical <= 5
    # many characters of the medical corpus are absent: what vocab extension is for
    missing = set(corpus_text()) - set("".join(lines))
    assert len({c for c in missing if "\u4e00" <= c <= "\u9fff"}) >= 300


@pytest.mark.parametrize("split,lo,hi", [("train", 200, 280), ("dev", 45, 75), ("test", 30, 50)])
def test_kuake_qic_files(split, lo, hi):
    recs = load_json(f"cblue/KUAKE-QIC/KUAKE-QIC_{split}.json")
    assert lo <= len(recs) <= hi
    assert [r["id"] for r in recs] == [f"s{i}" for i in range(1, len(recs) + 1)]
    if split == "test":
        assert all(list(r) == ["id", "query"] for r in recs)
    else:
        assert all(list(r) == ["id", "query", "label"] for r in recs)
        labels = Counter(r["label"] for r in recs)
        assert set(labels) <= QIC_LABELS
        assert len([lab for lab, n in labels.items() if n >= 5]) >= 5
    queries = [r["query"] for r in recs]
    assert len(set(queries)) == len(queries)


@pytest.mark.parametrize("split,lo,hi", [("train", 130, 170), ("dev", 35, 50), ("test", 25, 40)])
def test_cmeee_files_have_exact_inclusive_offsets(split, lo, hi):
    recs = load_json(f"cblue/CMeEE/CMeEE_{split}.json")
    assert lo <= len(recs) <= hi
    if split == "test":
        assert all(list(r) == ["text"] for r in recs)
        return
    types = Counter()
    for r in recs:
        assert list(r) == ["text", "entities"] and r["entities"]
        for e in r["entities"]:
            assert list(e) == ["start_idx", "end_idx", "type", "entity"]
            assert r["text"][e["start_idx"]:e["end_idx"] + 1] == e["entity"], (r["text"], e)
            types[e["type"]] += 1
    assert set(types) <= CMEEE_TYPES
    if split == "train":
        assert set(types) == CMEEE_TYPES
        assert any(a is not b and a["start_idx"] <= b["start_idx"] and b["end_idx"] <= a["end_idx"]
                   for r in recs for a in r["entities"] for b in r["entities"]), "some nested entities"


def test_cblue_texts_stay_out_of_the_corpus_except_the_planted_ones():
    corpus = corpus_text()
    dev = [r["query"] for r in load_json("cblue/KUAKE-QIC/KUAKE-QIC_dev.json")]
    dev += [r["text"] for r in load_json("cblue/CMeEE/CMeEE_dev.json")]
    test = [r["query"] for r in load_json("cblue/KUAKE-QIC/KUAKE-QIC_test.json")]
    test += [r["text"] for r in load_json("cblue/CMeEE/CMeEE_test.json")]
    leaked = [t for t in dev if t in corpus]
    assert 2 <= len(leaked) <= 3, leaked
    assert [t for t in test if t in corpus] == []
    train = {r["query"] for r in load_json("cblue/KUAKE-QIC/KUAKE-QIC_train.json")}
    assert not train & set(dev) and not train & set(test)


def test_readme_counts_match_files():
    readme = read("README.md")
    n_qic_train = len(load_json("cblue/KUAKE-QIC/KUAKE-QIC_train.json"))
    n_rows = len(list(csv.DictReader(open(DEMO / "medical/dialogue.csv", encoding="utf-8", newline=""))))
    assert f"{n_qic_train}" in readme and f"{n_rows}" in readme
    assert "not for clinical" in readme.lower() or "不能用于" in readme


def test_matches_the_official_cblue_shapes(shared_file):
    official = json.loads(shared_file("cblue/KUAKE-QIC/KUAKE-QIC_train.json").read_text(encoding="utf-8"))
    assert {r["label"] for r in official} == QIC_LABELS
    off_test = json.loads(shared_file("cblue/KUAKE-QIC/KUAKE-QIC_test.json").read_text(encoding="utf-8"))
    assert list(off_test[0]) == list(load_json("cblue/KUAKE-QIC/KUAKE-QIC_test.json")[0])
    off_ner = json.loads(shared_file("cblue/CMeEE/CMeEE_test.json").read_text(encoding="utf-8"))
    assert list(off_ner[0]) == list(load_json("cblue/CMeEE/CMeEE_test.json")[0])
