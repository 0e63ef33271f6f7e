"""Deduplication: paraphrased copies (a few characters edited) are removed, distinct answers that
share a template are kept, exact duplicates are removed across sources."""

from __future__ import annotations

import json
import random
from pathlib import Path

from cmedbert.config import from_dict
from cmedbert.corpus import build
from cmedbert.corpus.config import CorpusConfig
from cmedbert.corpus.hashing import Batch, MinHasher, jaccard_estimate
from cmedbert.corpus.io import iter_documents

DISEASES = ["高血压", "2型糖尿病", "慢性胃炎", "支气管哮喘", "偏头痛", "甲状腺功能亢进", "类风湿关节炎", "缺铁性贫血",
            "过敏性鼻炎", "腰椎间盘突出", "慢性咽炎", "湿疹", "痛风", "脂肪肝", "骨质疏松", "失眠症", "尿路感染", "带状疱疹",
            "冠心病", "胆囊结石"]
SYMPTOMS = ["头晕头痛", "口干多饮多尿", "上腹隐痛反酸", "夜间喘息咳嗽", "单侧搏动性头痛", "心慌手抖消瘦", "晨起关节僵硬",
            "乏力面色苍白", "鼻痒打喷嚏", "腰痛向下肢放射", "咽部异物感", "皮肤瘙痒渗出", "足趾关节红肿", "右上腹胀满",
            "腰背酸痛", "入睡困难早醒", "尿频尿急尿痛", "胸背部簇状水疱", "活动后胸闷", "进食油腻后右上腹痛"]
ADVICE = ["低盐饮食、规律服用降压药并每天早晚测量血压", "控制主食总量、坚持每天快走三十分钟并监测空腹血糖",
          "三餐定时定量、戒烟戒酒、避免浓茶咖啡", "随身携带吸入剂、远离花粉和尘螨", "记录头痛日记、保证七小时睡眠",
          "遵医嘱服用抗甲状腺药物并每月复查甲功", "坚持关节功能锻炼、注意保暖", "补充铁剂并多吃红肉和动物肝脏",
          "使用鼻用激素喷剂、外出戴口罩", "睡硬板床、避免久坐和弯腰搬重物", "多喝温水、少说话、忌辛辣",
          "保持皮肤湿润、穿纯棉衣物", "多饮水、少吃海鲜和动物内脏", "减重、清淡饮食并戒酒",
          "补充钙和维生素D、多晒太阳", "固定作息时间、睡前不看手机", "多喝水勤排尿并完成抗生素疗程",
          "尽早抗病毒治疗并注意神经痛", "随身携带硝酸甘油并避免剧烈运动", "低脂饮食并评估是否需要手术"]

TEMPLATE = ("患者：医生您好，我最近一段时间总是{s}，去医院检查后诊断为{d}，想问一下平时生活中需要注意什么？"
            "医生：您好，根据您描述的{s}的情况以及{d}的诊断，建议您{a}。如果症状持续不缓解或者加重，请及时到医院复诊。")

STORY = ("患者：医生您好，我父亲今年{age}岁，{y}年前体检发现{d}，最近半个月出现了{s}，还伴有{s2}，"
         "请问需要住院吗？医生：您好，{d}合并新出现的{s}需要重视，建议{a}；另外{a2}；{a3}。")


def story(i: int) -> str:
    return STORY.format(age=50 + i, y=i % 7 + 2, d=DISEASES[i], s=SYMPTOMS[i], s2=SYMPTOMS[(i + 5) % 20],
                        a=ADVICE[i], a2=ADVICE[(i + 11) % 20], a3=ADVICE[(i + 13) % 20])


def edit(text: str, n: int, rng: random.Random) -> str:
    """Paraphrase-like copy: n characters replaced at random positions (n=2 on ~140 characters
    gives an estimated Jaccard of 0.81-0.86 on 5-gram shingles)."""
    chars = list(text)
    for pos in rng.sample(range(len(chars)), n):
        chars[pos] = rng.choice("的了吗呢啊吧很也都还就")
    return "".join(chars)


def _build(tmp_path: Path, files: dict[str, list[str]], threshold: float = 0.7) -> tuple[dict, list[dict]]:
    sources = []
    for name, texts in files.items():
        (tmp_path / f"{name}.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
        sources.append({"name": name, "type": "plain_text", "paths": [str(tmp_path / f"{name}.txt")]})
    cfg = from_dict(CorpusConfig, {"sources": sources, "workers": 1, "progress": False,
                                   "dedup": {"threshold": threshold}})
    out = tmp_path / "out"
    manifest = build.main(cfg, out)
    return manifest, list(iter_documents(out))


def test_paraphrases_removed_template_answers_kept(tmp_path: Path):
    rng = random.Random(0)
    originals = [story(i) for i in range(20)]
    paraphrases = [edit(t, 2, rng) for t in originals]
    templated = [TEMPLATE.format(d=DISEASES[i], s=SYMPTOMS[i], a=ADVICE[i]) for i in range(20)]
    manifest, docs = _build(tmp_path, {"a": originals + templated, "b": paraphrases})
    texts = [d["text"] for d in docs]
    assert all(t in texts for t in originals)  # the earliest copy is the one kept
    assert not any(p in texts for p in paraphrases)
    assert all(t in texts for t in templated)
    assert manifest["counts"]["dropped"] == {"near_duplicate": 20}
    drops = [json.loads(x) for x in (tmp_path / "out" / "drops.jsonl").read_text().splitlines()]
    assert {d["duplicate_of"].split(":")[0] for d in drops} == {"a"}
    assert all(d["source"] == "b" for d in drops)


def test_exact_duplicates_ignore_case_space_punctuation(tmp_path: Path):
    base = [story(i) for i in range(5)]
    variants = [t.replace("，", ",").replace("医生：", "医生: ") for t in base]
    manifest, docs = _build(tmp_path, {"a": base, "b": variants + base[:2]})
    assert manifest["counts"]["dropped"] == {"exact_duplicate": 7}
    assert manifest["counts"]["per_source"]["b"]["records_out"] == 0


def test_minhash_estimates_similarity():
    m = MinHasher(128, 5, 1)
    rng = random.Random(1)
    a = story(0)
    b = edit(a, 2, rng)
    c = TEMPLATE.format(d=DISEASES[1], s=SYMPTOMS[1], a=ADVICE[1])
    d = TEMPLATE.format(d=DISEASES[2], s=SYMPTOMS[2], a=ADVICE[2])
    sig = m.signatures(Batch([a, b, c, d]))
    assert jaccard_estimate(sig[0], sig[1]) > 0.75
    assert jaccard_estimate(sig[2], sig[3]) < 0.6
    assert jaccard_estimate(sig[0], sig[2]) < 0.3
    # batching does not change a signature
    assert (m.signature(c) == sig[2]).all()
