"""Normalization policy, boilerplate, filters, splitting, speaker labels, KG verbalization."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import pytest

from cmedbert.corpus.clean import Boilerplate, Filters, normalize, split_long
from cmedbert.corpus.config import CleaningConfig
from cmedbert.corpus.kg import read_terms, verbalize
from cmedbert.corpus.pii import Scrubber
from cmedbert.corpus.readers import normalize_speakers, render_qa

# Must pass normalization + PII scrubbing byte for byte.
MEDICAL_STRINGS = [
    "0.5g", "10mg/kg", "HbA1c 6.5%", "2020-03-19", "2023年5月12日", "140/90mmHg", "38.5℃",
    "5×10⁹/L", "WBC 12.5×10^9/L", "阿莫西林（Amoxicillin）0.25g", "Vitamin B12", "COVID-19", "IL-6",
    "PD-1抑制剂", "HER2阳性", "CA19-9 35U/ml", "左甲状腺素钠片50μg", "β受体阻滞剂", "1:1000肾上腺素",
    "24h尿蛋白定量0.15g", "3次/日", "Ⅱ型糖尿病", "Ⅲ期", "①②③", "HBV-DNA 1.35E+04 IU/ml",
    "CT值<35", "血糖<7.0mmol/L", "eGFR 60ml/min/1.73m²", "孕12+3周", "SpO2 95%", "T2DM", "ALT:183U/L",
]


def test_medical_strings_survive_normalize_and_scrub():
    s = Scrubber()
    for m in MEDICAL_STRINGS:
        text = f"患者：检查结果{m}，请问需要注意什么？"
        assert m in s.scrub(normalize(text)), m


def test_width_compat_and_punctuation_policy():
    assert normalize("ＣＴ检查０．５ｍｇ，ＨｂＡ１ｃ６．５％") == "CT检查0.5mg，HbA1c6.5%"
    assert normalize("剂量5㎎，体温37℃") == "剂量5mg，体温37℃"
    assert normalize("你好,我头痛!怎么办?") == "你好，我头痛！怎么办？"
    assert normalize("朋友你好.先天性心脏病有很多种.谢谢.") == "朋友你好。先天性心脏病有很多种。谢谢。"
    assert normalize("剂量0.5g.每日3次，维生素C.") == "剂量0.5g.每日3次，维生素C."
    assert normalize("病人: 头痛") == "病人：头痛"
    assert normalize("value 1,000 and a:b") == "value 1,000 and a:b"  # ASCII context untouched
    assert normalize("患者\u3000 头 痛\t\t厉害") == "患者头痛厉害"
    assert normalize("line1\r\n\r\n  line2  \r") == "line1\nline2"
    assert normalize("a\u200bb\u0007c\ufeffd\u00ade") == "abcde"


def test_traditional_to_simplified():
    assert normalize("傳染病是指由病原微生物引起的疾病，醫生建議") == "传染病是指由病原微生物引起的疾病，医生建议"
    assert normalize("傳染病", t2s=False) == "傳染病"
    assert normalize("简体中文不变") == "简体中文不变"


def test_html_remnants():
    assert normalize("建议<br/>多喝水&nbsp;注意休息<p>复查</p>") == "建议\n多喝水注意休息\n复查"
    assert normalize("<span style='x'>头痛</span>&amp;发热") == "头痛&发热"
    assert normalize("结节<5mm，a<b") == "结节<5mm，a<b"


def test_boilerplate_removed_and_labels_kept():
    b = Boilerplate()
    text = ("患者：如果您是医生，请根据患者的描述回答医学问题。\n我头痛三天了。\n"
            "医生：感谢您的信任，病情资料我已详细阅读。建议查血压，期望上述的答案可以帮助到你，谢谢！")
    out, n = b.strip(text)
    assert n == 3
    assert out == "患者：我头痛三天了。\n医生：建议查血压。"
    assert b.strip("医生：注意休息，多喝水。")[1] == 0


def test_filters():
    f = Filters(CleaningConfig())
    assert f.reason("太短了") == "too_short"
    assert f.reason("This sentence is long enough but has no Chinese at all, so it goes.") == "low_cjk"
    assert f.reason("哈" * 20 + "，这是一段正常的文字吗") == "char_repetition"
    assert f.reason("患者：医生您好，我最近经常头痛，血压140/90mmHg，需要吃药吗？") is None


def test_split_long_at_sentence_ends():
    sent = "这是一个用于测试长文档切分的句子。"
    text = sent * 50
    pieces = split_long(text, 100)
    assert all(len(p) <= 100 for p in pieces)
    assert all(p.endswith("。") for p in pieces)
    assert "".join(pieces) == text
    assert split_long("短文本。", 100) == ["短文本。"]


def test_speaker_labels():
    assert normalize_speakers("病人：头痛\n医生：多休息") == "患者：头痛\n医生：多休息"
    assert render_qa("头痛怎么办", "多休息") == "患者：头痛怎么办\n医生：多休息"
    assert render_qa("病人：我头痛\n医生：多久了？\n病人：三天\n医生：", "去医院") == \
        "患者：我头痛\n医生：多久了？\n患者：三天\n医生：去医院"
    assert render_qa("头痛怎么办", "多休息", labels=False) == "头痛怎么办\n多休息"


def test_kg_verbalization_groups_objects():
    preds = OrderedDict([("相关症状", ["头痛", "头晕", "心悸"]), ("治疗", ["降压药物治疗"]), ("奇怪关系", ["某物"])])
    assert verbalize("高血压", preds) == \
        "高血压的相关症状有头痛、头晕和心悸。高血压的治疗方法包括降压药物治疗。高血压的奇怪关系是某物。"
    assert verbalize("X", OrderedDict([("相关疾病", ["甲"])]), {"相关疾病": "{s}与{o}有关。"}) == "X与甲有关。"


def test_read_terms(tmp_path: Path):
    (tmp_path / "disease.txt").write_text("高血压\n糖尿病\n\n", encoding="utf-8")
    (tmp_path / "THUOCL_medical.txt").write_text("糖尿病\t100\n阿司匹林\t50\n", encoding="utf-8")
    (tmp_path / "drug.txt").write_bytes("\ufeff布洛芬\r\n".encode("utf-8"))
    terms = read_terms([tmp_path / "disease.txt", tmp_path / "THUOCL_medical.txt", tmp_path / "drug.txt"])
    assert terms == {"高血压": "disease", "糖尿病": "disease", "阿司匹林": "medical", "布洛芬": "drug"}


def test_read_terms_detects_gb18030_for_corpus_and_tokenizer(tmp_path: Path):
    from cmedbert.tokenizer.base import read_terms as tokenizer_terms

    (tmp_path / "THUOCL_medical.txt").write_bytes("高血压\t100\n阿司匹林\t50\n".encode("gb18030"))
    (tmp_path / "disease.txt").write_text("糖尿病\n", encoding="utf-8")
    paths = [tmp_path / "THUOCL_medical.txt", tmp_path / "disease.txt"]
    assert read_terms(paths) == {"高血压": "medical", "阿司匹林": "medical", "糖尿病": "disease"}
    assert tokenizer_terms(paths) == ["高血压", "阿司匹林", "糖尿病"]


def test_read_terms_names_missing_file_and_undecodable_line(tmp_path: Path):
    from cmedbert.errors import CmedbertError

    with pytest.raises(CmedbertError, match="KG term list not found"):
        read_terms([tmp_path / "nope.txt"])
    bad = tmp_path / "bad.txt"
    bad.write_bytes("高血压\n".encode("utf-8") + b"\xff\xfe\xfa\n")
    with pytest.raises(CmedbertError, match=r"bad.txt:2: does not decode as utf-8"):
        read_terms([bad], encoding="utf-8")
