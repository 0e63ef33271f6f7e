"""PII scrubbing: >= 50 planted identifiers of every type inside realistic medical text are all
replaced by their typed placeholder; medical numbers next to them are untouched. The handmade set
in pii_cases.py (>= 300 strings: identifiers in the formats people really write, >= 100 medical
strings that must survive) must score 100 % recall and precision per type."""

from __future__ import annotations

import random
import re
import zlib
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pii_cases import CASES, KEEP, PLANTED

from cmedbert.corpus.clean import normalize
from cmedbert.corpus.pii import (ORDER, PATTERNS, PLACEHOLDERS, Scrubber, _replacer, evaluate, expected_output,
                                 id_check_char, luhn_ok, might_contain_pii, valid_id_card)

N = 60  # planted identifiers per type

# Medical sentences that carry numbers a scrubber must not eat; one is put next to every identifier.
MEDICAL = [
    "阿莫西林胶囊0.5g，每日3次，饭后服用",
    "体重20kg的患儿按10mg/kg计算，每次200mg",
    "复查HbA1c 6.5%，空腹血糖7.1mmol/L",
    "血压140/90mmHg，心率88次/分",
    "2020-03-19在我院复查血常规，WBC 12.5×10^9/L",
    "二甲双胍片500mg bid，格列美脲2mg qd",
    "CA19-9 35U/ml，CEA 4.2ng/ml，均在正常范围",
    "体温38.5℃，已口服布洛芬混悬液5ml",
    "2023年5月12日行胸部CT检查，右肺结节约8mm",
    "左甲状腺素钠片50μg qd，TSH 0.726mIU/L",
]


def _mobile(rng: random.Random) -> str:
    num = "1" + rng.choice("3456789") + "".join(rng.choice("0123456789") for _ in range(9))
    style = rng.randrange(4)
    if style == 0:
        return num
    if style == 1:
        return f"{num[:3]}-{num[3:7]}-{num[7:]}"
    if style == 2:
        return f"{num[:3]} {num[3:7]} {num[7:]}"
    return "+86 " + num


def _landline(rng: random.Random) -> str:
    area = rng.choice(["010", "021", "020", "0755", "0571", "028", "0731", "025"])
    local = rng.choice("2345678") + "".join(rng.choice("0123456789") for _ in range(7 if len(area) == 3 else 6))
    style = rng.randrange(4)
    if style == 0:
        return f"{area}-{local}"
    if style == 1:
        return f"({area}){local}"
    if style == 2:
        return f"（{area}）{local}"
    return f"400-{rng.randrange(100, 999)}-{rng.randrange(1000, 9999)}"


def _id_card(rng: random.Random) -> str:
    region = rng.choice(["110105", "310104", "440305", "510107", "330106", "420111"])
    birth = f"{rng.randrange(1940, 2015)}{rng.randrange(1, 13):02d}{rng.randrange(1, 29):02d}"
    first17 = region + birth + f"{rng.randrange(0, 1000):03d}"
    return first17 + id_check_char(first17)


def _bank_card(rng: random.Random) -> str:
    length = rng.choice([16, 19])
    body = rng.choice(["622202", "621700", "623052", "436742", "622848"]) + "".join(
        rng.choice("0123456789") for _ in range(length - 7))
    for check in "0123456789":
        if luhn_ok(body + check):
            num = body + check
            break
    if rng.random() < 0.5:
        return " ".join(num[i: i + 4] for i in range(0, len(num), 4))
    return num


def _email(rng: random.Random) -> str:
    user = rng.choice(["zhang.san", "lisi88", "wang_doctor", "patient2020", "chen-li"]) + str(rng.randrange(100))
    return f"{user}@{rng.choice(['163.com', 'qq.com', 'sina.com.cn', 'hospital.org.cn', 'gmail.com'])}"


def _url(rng: random.Random) -> str:
    return rng.choice([
        f"https://www.haodf.com/doctor/{rng.randrange(10**6)}.htm",
        f"http://m.120ask.com/askg/posts/{rng.randrange(10**5)}",
        f"www.xywy.com/jib/{rng.randrange(10**4)}",
        f"https://mp.weixin.qq.com/s/{rng.randrange(10**8)}",
        f"dxy.cn/bbs/topic/{rng.randrange(10**6)}",
    ])


def _qq(rng: random.Random) -> tuple[str, str]:
    qq = str(rng.randrange(10**4, 10**10))
    return rng.choice(["QQ：", "qq号", "QQ号码是", "扣扣", "加我QQ "]) + qq, qq


def _wechat(rng: random.Random) -> tuple[str, str]:
    wid = rng.choice([
        "wxid_" + "".join(rng.choice("abcdefghijk0123456789") for _ in range(10)),
        rng.choice("abcdefgh") + "".join(rng.choice("abcdefghijklmnop0123456789_-") for _ in range(rng.randrange(6, 15))),
        "1" + rng.choice("3589") + "".join(rng.choice("0123456789") for _ in range(9)),
    ])
    return rng.choice(["微信：", "微信号", "加微信", "vx:", "VX ", "weixin: "]) + wid, wid


TEMPLATES = [
    "患者：医生您好，{med}。我的联系方式{pii}，方便的话请回复。",
    "医生：{med}，如有不适请联系{pii}咨询。",
    "患者：我妈妈{med}，{pii}，麻烦您看一下报告。",
    "病情描述：{med}。家属留言：{pii}。",
]


def planted(kind: str, rng: random.Random) -> tuple[str, str]:
    """(identifier as written in the text, the part that must disappear)."""
    if kind == "qq":
        return _qq(rng)
    if kind == "wechat":
        return _wechat(rng)
    make = {"mobile": _mobile, "landline": _landline, "id_card": _id_card, "bank_card": _bank_card,
            "email": _email, "url": _url}[kind]
    s = make(rng)
    return s, s


@pytest.mark.parametrize("kind", ["mobile", "landline", "id_card", "bank_card", "email", "url", "qq", "wechat"])
def test_planted_identifiers_are_all_scrubbed(kind):
    rng = random.Random(zlib.crc32(kind.encode()))
    scrubber = Scrubber()
    for i in range(N):
        written, secret = planted(kind, rng)
        med = MEDICAL[i % len(MEDICAL)]
        text = TEMPLATES[i % len(TEMPLATES)].format(med=med, pii=written)
        counts: Counter = Counter()
        out = scrubber.scrub(text, counts)
        assert secret not in out, f"{kind} {secret!r} survived in {out!r}"
        digits = re.sub(r"\D", "", secret)
        if len(digits) >= 7:
            assert digits not in re.sub(r"\D", "", out.replace(med, "")), (kind, out)
        assert PLACEHOLDERS[kind] in out, (kind, out)
        assert counts[kind] == 1 and sum(counts.values()) == 1, (kind, text, out, counts)
        assert med in out, f"medical text damaged: {med!r} -> {out!r}"


def test_checksums_are_required():
    rng = random.Random(5)
    good = _id_card(rng)
    bad = good[:17] + ("0" if good[17] != "0" else "1")
    assert valid_id_card(good) and not valid_id_card(bad)
    s = Scrubber()
    assert "<ID_CARD>" in s.scrub(f"身份证{good}。")
    assert bad in s.scrub(f"编号{bad}。")  # neither a valid ID nor (by construction) a phone
    card = _bank_card(rng).replace(" ", "")
    wrong = card[:-1] + str((int(card[-1]) + 1) % 10)
    assert "<BANK_CARD>" in s.scrub(f"卡号{card}")
    assert wrong in s.scrub(f"卡号{wrong}")


def test_medical_numbers_are_not_pii():
    s = Scrubber()
    for med in MEDICAL + ["检验单号20200319，标本号 123456", "心电图QT间期440ms", "每日饮水2000ml以上",
                          "HBV-DNA 1.35E+04 IU/ml", "孕12+3周，NT 1.8mm", "身高170cm，体重65.5kg"]:
        counts: Counter = Counter()
        assert s.scrub(med, counts) == med
        assert not counts


# ------------------------------------------------------------------ the handmade set (pii_cases.py)
def _case_id(case) -> str:
    kinds = "+".join(k for k, _ in case.planted) or "keep"
    return f"{kinds}[{case.category}]:{case.text[:24]}"


def test_case_set_is_large_and_covers_every_type_alone_and_in_text():
    assert len(CASES) >= 300 and len(KEEP) >= 100
    assert len({c.text for c in CASES}) == len(CASES), "duplicate test strings"
    for kind in ORDER:
        cats = {c.category for c in PLANTED if any(k == kind for k, _ in c.planted)}
        assert len([c for c in PLANTED if any(k == kind for k, _ in c.planted)]) >= 8, kind
        assert "in text" in cats, kind
    for kind in ("mobile", "landline", "id_card", "bank_card", "email", "url"):
        assert any(c.category == "alone" and c.planted[0][0] == kind for c in PLANTED), kind
    assert {"dose", "lab", "date", "time", "icd", "record number", "measurement list"} <= {c.category for c in KEEP}


@pytest.mark.parametrize("case", PLANTED, ids=_case_id)
def test_planted_identifier_is_scrubbed_with_its_type(case):
    counts: Counter = Counter()
    out = Scrubber().scrub(case.text, counts)
    assert out == expected_output(case.text, case.planted)
    assert counts == Counter(k for k, _ in case.planted)


@pytest.mark.parametrize("case", KEEP, ids=_case_id)
def test_medical_string_survives_unchanged(case):
    counts: Counter = Counter()
    assert Scrubber().scrub(case.text, counts) == case.text
    assert not counts


def test_same_result_after_the_corpus_normalization():
    """The build scrubs normalized text (full-width digits, ASCII colons next to CJK, spaces)."""
    s = Scrubber()
    for case in CASES:
        assert s.scrub(normalize(case.text)) == normalize(expected_output(case.text, case.planted)), case.text


def test_recall_and_precision_per_type_are_100_percent():
    result = evaluate(CASES)
    assert result["planted_exact"] == result["planted_cases"] == len(PLANTED)
    assert result["keep_intact"] == result["keep_cases"] == len(KEEP)
    for kind, row in result["per_type"].items():
        assert row["planted"] >= 8 and row["recall"] == 1.0 and row["precision"] == 1.0, (kind, row)


def test_evaluate_counts_misses_false_alarms_and_damage():
    """The scoring itself: a scrubber that does nothing, one that eats everything."""

    class Nothing:
        def scrub(self, text, counts=None):
            return text

    class Everything:
        def scrub(self, text, counts=None):
            counts["mobile"] += 1
            return "<MOBILE>"

    r = evaluate(CASES, Nothing())
    assert r["keep_intact"] == len(KEEP) and r["planted_exact"] == 0
    assert all(row["recall"] in (0.0, None) and row["fp"] == 0 for row in r["per_type"].values())
    r = evaluate(CASES, Everything())
    assert r["keep_intact"] == 0 and r["per_type"]["mobile"]["fp"] >= len(KEEP)
    assert r["per_type"]["mobile"]["precision"] < 0.2 and r["per_type"]["landline"]["recall"] == 0.0


_PIECES = ["1", "3", "8", "0", "2", "5", "9", "13", "86", "010", "021", "400", " ", "-", ".", "(", ")", "（", "）", "+",
           "：", ":", "@", "V", "v", "Q", "q", "x", "X", "w", "号", "信", "加", "微信", "QQ", "电话", "Tel", "com", "www",
           "/", "卡号", "单号", "尿量", "，", "。", "患者", "a", "_", "id"]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(_PIECES), max_size=40).map("".join))
def test_the_cheap_precheck_never_hides_a_match(text):
    """might_contain_pii is only a shortcut: where it says no, the full patterns find nothing."""
    if might_contain_pii(text):
        return
    full = text
    for kind in ORDER:
        full = PATTERNS[kind].sub(_replacer(kind, None), full)
    assert full == text


def test_precheck_fires_on_every_planted_case():
    assert all(might_contain_pii(c.text) for c in PLANTED)


def test_corpus_build_scrubs_the_set_and_counts_each_type_in_the_manifest(tmp_path):
    """The same scrubber inside `corpus build`: manifest counts.pii per type, no secret in the shards."""
    from cmedbert.config import from_dict
    from cmedbert.corpus import build
    from cmedbert.corpus.config import CorpusConfig
    from cmedbert.corpus.io import iter_texts

    src = tmp_path / "cases.txt"
    src.write_text("\n".join(c.text for c in CASES) + "\n", encoding="utf-8")
    cfg = from_dict(CorpusConfig, {
        "sources": [{"name": "cases", "type": "plain_text", "paths": [str(src)]}], "workers": 1, "progress": False,
        "cleaning": {"min_chars": 4, "min_cjk_fraction": 0.0}, "dedup": {"exact": False, "near": False}})
    manifest = build.main(cfg, tmp_path / "corpus")
    counts = manifest["counts"]
    assert counts["records_out"] == len(CASES), counts["dropped"]
    expected = Counter(k for c in PLANTED for k, _ in c.planted)
    assert counts["pii"] == {k: expected[k] for k in cfg.pii.types}
    texts = list(iter_texts(tmp_path / "corpus"))
    assert texts == [normalize(expected_output(c.text, c.planted)) for c in CASES]
