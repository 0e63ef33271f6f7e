"""Reader details not covered by the end-to-end build tests."""

from __future__ import annotations

import json
from pathlib import Path

from cmedbert.corpus.config import SourceConfig
from cmedbert.corpus.readers import Bad, Record, detect_encoding
from cmedbert.corpus.source_types import reader_for


def _read(kind: str, path: Path, **src) -> list:
    cfg = SourceConfig(name="s", type=kind, paths=[str(path)], **src)
    return list(reader_for(kind)(path, cfg, detect_encoding(path, cfg.encoding)))


def test_kg_table_verbalizes_rows(tmp_path: Path):
    f = tmp_path / "disease.csv"
    f.write_bytes(("name,alias,part,infection,symptom,drug,rate,,\n"
                   '阳痿,"勃起功能障碍,阳萎",阴茎,无传染性,早泄 性欲减退 [详细],枸橼酸西地那非片 [详细],暂无相关资料,,\n'
                   ",无名,,,,,,,\n").encode("gb18030"))
    items = _read("kg_table", f)
    assert isinstance(items[0], Record) and items[0].line == 2
    assert items[0].text == ("阳痿又称勃起功能障碍和阳萎。阳痿的发病部位是阴茎。阳痿无传染性。"
                             "阳痿的典型症状有早泄和性欲减退。阳痿的常用药物有枸橼酸西地那非片。")
    assert isinstance(items[1], Bad) and items[1].reason == "missing_fields" and items[1].line == 3


def test_kg_dict_sentences_mode(tmp_path: Path):
    f = tmp_path / "symptom.txt"
    f.write_text("头痛\n发热\n咳嗽\n", encoding="utf-8")
    assert _read("kg_dict", f) == []  # default: terms feed the tokenizer, not the corpus
    docs = _read("kg_dict", f, emit="sentences", terms_per_doc=2)
    assert [d.text for d in docs] == ["头痛是一种症状。发热是一种症状。", "咳嗽是一种症状。"]
    assert [d.line for d in docs] == [1, 3]


def test_plain_text_paragraph_mode(tmp_path: Path):
    f = tmp_path / "book.txt"
    f.write_text("第一段第一行\n第一段第二行\n\n\n第二段\n", encoding="utf-8")
    assert [(d.text, d.line) for d in _read("plain_text", f, paragraphs=True)] == \
        [("第一段第一行\n第一段第二行", 1), ("第二段", 5)]
    assert len(_read("plain_text", f)) == 3


def test_instruction_layouts(tmp_path: Path):
    f = tmp_path / "mixed.jsonl"
    rows = [{"问": "膺窗穴的定位是什么?", "答": "第3肋间隙，距前正中线4寸。"},
            {"instruct": "孩子发烧41度怎么办", "output": "立即就医。"},
            {"conversations": [{"from": "system", "value": "你是医生"}, {"from": "human", "value": "头痛"},
                               {"from": "gpt", "value": "多休息"}]},
            {"foo": "bar"}, [1, 2]]
    f.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    items = _read("instruction_jsonl", f)
    assert items[0].text == "患者：膺窗穴的定位是什么?\n医生：第3肋间隙，距前正中线4寸。"
    assert items[1].text == "患者：孩子发烧41度怎么办\n医生：立即就医。"
    assert items[2].text == "患者：头痛\n医生：多休息"
    assert [(i.reason, i.line) for i in items[3:]] == [("bad_record", 4), ("bad_record", 5)]
    assert _read("instruction_jsonl", f, labels=False)[0].text == "膺窗穴的定位是什么?\n第3肋间隙，距前正中线4寸。"
    # custom keys
    g = tmp_path / "custom.jsonl"
    g.write_text(json.dumps({"q": "胃痛怎么办", "a": "少食多餐"}, ensure_ascii=False) + "\n", encoding="utf-8")
    assert _read("instruction_jsonl", g, columns={"prompt": "q", "response": "a"})[0].text == "患者：胃痛怎么办\n医生：少食多餐"


def test_encoding_detection(tmp_path: Path):
    a, b, c = tmp_path / "a.txt", tmp_path / "b.txt", tmp_path / "c.txt"
    a.write_bytes("高血压".encode("utf-8"))
    b.write_bytes("\ufeff高血压".encode("utf-8"))
    c.write_bytes("高血压".encode("gb18030"))
    assert [detect_encoding(p) for p in (a, b, c)] == ["utf-8", "utf-8-sig", "gb18030"]
    assert detect_encoding(c, "utf-8") == "utf-8"
    assert [d.text for d in _read("plain_text", b)] == ["高血压"]
