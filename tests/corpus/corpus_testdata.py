"""Tiny input files of every source type, written into a temporary folder for the build tests."""

from __future__ import annotations

import json
from pathlib import Path

DISEASES = ["高血压", "糖尿病", "慢性胃炎", "支气管哮喘", "偏头痛", "甲状腺功能亢进", "类风湿关节炎", "缺铁性贫血"]
SYMPTOMS = ["头痛头晕", "口干多饮", "胃部隐痛", "夜间咳嗽", "单侧搏动性头痛", "心慌手抖", "晨起关节僵硬", "乏力面色苍白"]
ADVICE = ["按时服药并监测血压", "控制饮食并规律运动", "少食多餐避免辛辣", "避免接触过敏原", "保证睡眠减少咖啡因",
          "定期复查甲功五项", "坚持关节功能锻炼", "补充铁剂并多吃瘦肉"]

# A KUAKE-QIC-style dev query that also occurs in one plain-text document (-> decontaminated).
CONTAMINATED = "小孩子发烧三十九度怎么办才能快速退烧呢"


def qa(i: int) -> tuple[str, str]:
    d, s, a = DISEASES[i % 8], SYMPTOMS[i % 8], ADVICE[i % 8]
    return (f"我今年{30 + i}岁，最近{s}，医院诊断是{d}，第{i}次来咨询，请问应该怎么办？",
            f"你好，{d}需要长期管理，根据你{30 + i}岁的情况，建议{a}，第{i}周后来门诊复查。")


def write_sources(root: Path) -> dict[str, Path]:
    root.mkdir(parents=True, exist_ok=True)
    p: dict[str, Path] = {}

    rows = ["department,title,ask,answer"]
    for i in range(4):
        q, a = qa(i)
        rows.append(f"内科,{DISEASES[i]}怎么办,{q},{a}")
    p["toyhom_csv"] = root / "dialog.csv"
    p["toyhom_csv"].write_text("\n".join(rows) + "\n", encoding="utf-8")

    blocks = []
    for i in range(4, 6):
        q, a = qa(i)
        blocks.append(f"{DISEASES[i]}的问题,{q}\n{a}\n\n")
    p["toyhom_txt"] = root / "toyhom.txt"
    p["toyhom_txt"].write_bytes("".join(blocks).encode("gb18030"))

    dlg = []
    for i in range(6, 8):
        q, a = qa(i)
        dlg.append(f"id={i}\nhttps://www.haodf.com/x{i}.htm\n\nDoctor faculty\n某医院 内科\n\nDescription\n"
                   f"疾病：{DISEASES[i]}\n病情描述：{q}\n\nDialogue\n病人：\n{q}\n医生：\n{a}\n病人：\n好的谢谢医生\n\n")
    p["meddialog"] = root / "covid.txt"
    p["meddialog"].write_text("".join(dlg), encoding="utf-8")

    rows = ["question,answer"]
    for i in range(8, 10):
        q, a = qa(i)
        rows.append(f'"{q}","{a}"')
    p["qa_csv"] = root / "qa.csv"
    p["qa_csv"].write_text("\n".join(rows) + "\n", encoding="utf-8")

    lines = []
    q, a = qa(10)
    lines.append(json.dumps({"instruction": q, "input": "", "output": a}, ensure_ascii=False))
    q, a = qa(11)
    lines.append(json.dumps({"conversations": [{"from": "human", "value": q}, {"from": "gpt", "value": a}]}, ensure_ascii=False))
    q, a = qa(12)
    lines.append(json.dumps({"query": f"<s>问：\n{q}\n答：\n", "response": a}, ensure_ascii=False))
    lines.append('{"instruction": "截断的一行", "output": "没有结')  # truncated JSON line -> bad_json
    p["instruction_jsonl"] = root / "sft.jsonl"
    p["instruction_jsonl"].write_text("\n".join(lines) + "\n", encoding="utf-8")

    q, a = qa(13)
    q2, a2 = qa(14)
    arr = [{"id": "j1", "instruction": "谢谢医生，我知道了，会按时复查的。", "input": "", "output": "不客气，祝你早日康复，有问题随时来问。",
            "history": [[q, a]]},
           {"id": "", "instruction": [q2], "input": "", "output": [a2]}]
    p["instruction_array"] = root / "arr.json"
    p["instruction_array"].write_text(json.dumps(arr, ensure_ascii=False, indent=2), encoding="utf-8")

    triples = [{"text": "x", "spo_list": [["高血压", "相关症状", "头痛"], ["高血压", "相关症状", "头晕"],
                                         ["高血压", "相关症状", "心悸"], ["高血压", "治疗", "降压药物治疗"],
                                         ["阿司匹林", "不良反应", "胃肠道出血"], ["阿司匹林", "不良反应", "过敏反应"]]}]
    p["kg_triples"] = root / "kg" / "triples.json"
    p["kg_triples"].parent.mkdir(exist_ok=True)
    p["kg_triples"].write_text(json.dumps(triples, ensure_ascii=False), encoding="utf-8")
    p["kg_triples_csv"] = root / "kg" / "triples.csv"
    p["kg_triples_csv"].write_text("subject,predicate,object\n糖尿病,并发症,糖尿病肾病\n糖尿病,并发症,视网膜病变\n"
                                   "糖尿病,检查,空腹血糖\n", encoding="utf-8")
    p["kg_dict"] = root / "kg" / "disease.txt"
    p["kg_dict"].write_text("\n".join(DISEASES) + "\n", encoding="utf-8")

    plain = [f"{DISEASES[i]}是一种常见病，典型表现为{SYMPTOMS[i]}，治疗上应当{ADVICE[i]}，并注意随访。" for i in range(8)]
    plain.append(f"家长提问：{CONTAMINATED}？医生回答：物理降温并及时就医。")
    p["plain_text"] = root / "plain.txt"
    p["plain_text"].write_text("\n".join(plain) + "\n", encoding="utf-8")

    dev = root / "cblue" / "KUAKE-QIC" / "KUAKE-QIC_dev.json"
    dev.parent.mkdir(parents=True)
    dev.write_text(json.dumps([{"id": "s1", "query": CONTAMINATED, "label": "治疗方案"},
                               {"id": "s2", "query": "短问题", "label": "其他"}], ensure_ascii=False), encoding="utf-8")
    p["cblue_dev"] = dev
    return p


def config_dict(p: dict[str, Path], **extra) -> dict:
    """A CorpusConfig as plain data using every source type (absolute paths)."""
    src = [
        {"name": "toyhom_csv", "type": "toyhom_csv", "paths": [str(p["toyhom_csv"])]},
        {"name": "toyhom_txt", "type": "toyhom_txt", "paths": [str(p["toyhom_txt"])]},
        {"name": "meddialog", "type": "meddialog", "paths": [str(p["meddialog"])]},
        {"name": "qa_csv", "type": "qa_csv", "paths": [str(p["qa_csv"])]},
        {"name": "sft", "type": "instruction_jsonl", "paths": [str(p["instruction_jsonl"]), str(p["instruction_array"])]},
        {"name": "triples", "type": "kg_triples", "paths": [str(p["kg_triples"]), str(p["kg_triples_csv"])]},
        {"name": "terms", "type": "kg_dict", "paths": [str(p["kg_dict"])]},
        {"name": "plain", "type": "plain_text", "paths": [str(p["plain_text"])]},
    ]
    cfg = {"sources": src, "workers": 1, "progress": False,
           "decontam": {"files": [str(p["cblue_dev"])]}}
    cfg.update(extra)
    return cfg
