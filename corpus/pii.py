"""PII scrubbing with typed placeholders.

=============  ==============  ==========================================================
type           placeholder     what is matched
=============  ==============  ==========================================================
email          ``<EMAIL>``     ``name@host.tld``
url            ``<URL>``       ``http(s)://…``, ``www.…``, bare ``host.com/.cn/.net/.org…``;
                               ASCII characters only, so a URL ends at the first CJK
                               character or full-width punctuation, and trailing ``.,;:!?)``
                               stay outside it
id_card        ``<ID_CARD>``   18-character resident ID (province code, real birth date,
                               ISO 7064 MOD 11-2 check character), contiguous or grouped
                               (``110105 19800101 123X``); 15-digit first-generation ID
                               (province code + yymmdd + 3 digits)
bank_card      ``<BANK_CARD>`` 16–19 digits with a card-scheme prefix (UnionPay 62/60,
                               Visa 4, Mastercard 51–55/22–27, JCB 35, domestic 94/95)
                               passing the Luhn check; contiguous, 4-4-4-4(-n) or 6-n
wechat         ``<WECHAT>``    an ID after 微信/威信/薇信/徽信/WeChat/weixin/vx/wx/V信/加V/V：
                               (+号/：): the ID is replaced, the keyword kept; ``wxid_…``
qq             ``<QQ>``        5–11 digits after QQ/扣扣/企鹅号/加(我)扣/扣：/Q：/Q号/Q群
mobile         ``<MOBILE>``    mainland mobile 1[3-9]x + 8 digits, optional +86/0086,
                               written 11, 3-4-4, 4-3-4, 3-8 or 7-4 with ``-``, ``.`` or space
landline       ``<PHONE>``     area code (010/02x + 8-digit local, 0xxx + 7–8 digits) with
                               separator, brackets or +86 without the leading zero; local
                               numbers start 2–8 and may hold one space/dash
                               (``021-5488 6191``); 400/800 numbers; after
                               电话/座机/固话/Tel/热线/拨打/致电 also a bare 7–8-digit local
                               number or any 9–16 contiguous digits
=============  ==============  ==========================================================

Digits alone are not enough. Every candidate must fit a real number plan (above) and is then
judged by its **context**: the nearest keyword in the 16 characters before it, within the same
sentence. A phone/card/ID keyword (电话, 手机, 联系, 卡号, 身份证, …: :data:`POSITIVE`) keeps it an
identifier; a record/measurement keyword (单号, 编号, 标本, 检验, 尿量, 血压, …: :data:`NEGATIVE`)
makes the digits data and they stay. With no keyword, a candidate followed by a unit (``ml``,
``次``, ``%`` …) stays, anything else is scrubbed. Checksum-valid 18-character IDs are scrubbed
whatever the context. Digits glued to other digits, decimal points or letters are never
matched, so dosages, lab values, dates and drug codes (``0.5g``, ``HbA1c 6.5%``,
``2020-03-19``) survive. The order of :data:`ORDER` matters: e-mails before URLs,
checksum-validated IDs before bank cards, keyword IDs (WeChat, QQ) before bare phone numbers.

Out of reach (corpus/README.md, "Personal data: recall and precision"): person names (need NER),
postal addresses, free-form identifiers (medical record numbers, licence plates, passport
numbers) and anything spelled out in Chinese numerals.
"""

from __future__ import annotations

import datetime
import difflib
import re
from collections import Counter
from typing import Callable, Iterable, Sequence

PLACEHOLDERS = {
    "email": "<EMAIL>", "url": "<URL>", "id_card": "<ID_CARD>", "bank_card": "<BANK_CARD>",
    "wechat": "<WECHAT>", "qq": "<QQ>", "mobile": "<MOBILE>", "landline": "<PHONE>",
}
ORDER = ["email", "url", "id_card", "bank_card", "wechat", "qq", "mobile", "landline"]

_ID_WEIGHTS = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]
_ID_CHECK = "10X98765432"
# Province codes of resident IDs (GB/T 2260 first two digits; 71 Taiwan, 81/82 HK/Macao).
_PROVINCE = r"(?:1[1-5]|2[1-3]|3[1-7]|4[1-6]|5[0-4]|6[1-5]|71|8[12])"


def id_check_char(first17: str) -> str:
    return _ID_CHECK[sum(int(c) * w for c, w in zip(first17, _ID_WEIGHTS)) % 11]


def valid_id_card(s: str) -> bool:
    """18-character resident ID with a valid check character (separators not allowed here)."""
    return len(s) == 18 and s[:17].isdigit() and id_check_char(s[:17]) == s[17].upper()


def _real_date(year: int, month: int, day: int) -> bool:
    try:
        datetime.date(year, month, day)
    except ValueError:
        return False
    return True


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


# --------------------------------------------------------------------------- context
POSITIVE = ("电话", "手机", "联系", "致电", "拨打", "打给", "热线", "座机", "固话", "卡号", "银行卡", "信用卡",
            "储蓄卡", "账号", "帐号", "转账", "汇款", "打款", "身份证", "证件", "Tel", "tel", "TEL", "Phone",
            "phone", "Mobile", "mobile", "微信", "QQ", "qq")
NEGATIVE = ("单号", "编号", "标本", "样本", "检验", "化验", "条码", "条形码", "订单", "流水号", "批号", "批次",
            "文号", "住院号", "门诊号", "病历号", "病案号", "床号", "登记号", "报告号", "申请号", "检查号",
            "影像号", "序列号", "货号", "型号", "尿量", "入量", "出量", "血压", "心率", "血糖", "体温", "脉搏",
            "测量", "读数", "计数", "数值", "监测", "记录", "步数")
_CONTEXT = re.compile("(?P<pos>" + "|".join(POSITIVE) + ")|(?P<neg>" + "|".join(NEGATIVE) + ")")
_NEG_GAP = re.compile(r"(?:码|码号|号码|号)?[\s\d.,:：/、-]*(?:分别为|分别是|为|是|约)?[\s:：]*")
_SENTENCE_END = re.compile(r"[。！？!?；;\n]")
CONTEXT_CHARS = 16
# A unit right after the digits makes them a measurement (only consulted without a keyword).
# Chinese units only when attached (``13911027365 周经理`` is a phone number and a surname).
_UNIT_AFTER = re.compile(r"[%‰℃]|次|个|毫升|毫克|克|例|人|岁|元|天|周|月|年|日|片|粒|支|袋|瓶|拷贝"
                         r"|\s?(?:ml|mL|ML|mg|μg|ug|kg|cm|mm|mmHg|mmol|μmol|umol|IU|U/|copies|CFU)")


# After an explicit WeChat/QQ keyword only money and measurement units count (QQ群223729351个人中心).
_AMOUNT_AFTER = re.compile(r"[%‰]|元|块|次|步|\s?(?:ml|mL|mg|kg|IU|copies)")


def context(text: str, start: int) -> str | None:
    """'pos', 'neg' or None: the nearest keyword before ``start`` in the same sentence.

    A record/measurement keyword only counts when nothing but digits, separators and a short
    connective (为/是/分别为) stands between it and the candidate: in ``血糖7.1mmol/L，1649255…`` the
    血糖 belongs to 7.1mmol/L, not to the 11 digits after the comma.
    """
    window = text[max(0, start - CONTEXT_CHARS):start]
    cut = None
    for cut in _SENTENCE_END.finditer(window):
        pass
    if cut is not None:
        window = window[cut.end():]
    found = None
    for m in _CONTEXT.finditer(window):
        if m.lastgroup == "pos" or _NEG_GAP.fullmatch(window, m.end()):
            found = m.lastgroup
    return found


def _identifier_here(m: re.Match) -> bool:
    """Context decision for a candidate that fits its number plan."""
    ctx = context(m.string, m.start())
    if ctx is not None:
        return ctx == "pos"
    return _UNIT_AFTER.match(m.string, m.end()) is None


# --------------------------------------------------------------------------- patterns
_B = r"(?<![0-9A-Za-z.])"  # not glued to a preceding digit, letter or decimal point
_A = r"(?![0-9A-Za-z])"
_TLD = r"(?:com|cn|net|org|edu|gov|info|top|xyz|cc|co|io|me|tv|biz|hk|tw)"
_URL_CHAR = r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]"
_URL_END = r"[A-Za-z0-9\-_~/#=&%]"  # a URL does not end with . , ; : ! ? ) ' ]

# Mainland mobile 1[3-9]x + 8 digits: 11 | 3-4-4 | 4-3-4 | 3-8 | 7-4, one separator kind.
_MOBILE_BODY = (r"1[3-9]\d(?:\d{8}|(?P<s1>[-. ])\d{4}(?P=s1)\d{4}|\d(?P<s2>[-. ])\d{3}(?P=s2)\d{4}"
                r"|[-. ]\d{8}|\d{4}[-. ]\d{4})")
_MOBILE_BODY_PLAIN = re.sub(r"\(\?P<s\d>|\(\?P=s\d\)", lambda m: "(" if m.group().startswith("(?P<") else "[-. ]",
                            _MOBILE_BODY)
_CC = r"(?:\(?(?:\+|00)86\)?[-. ]?|86[- ])"  # country code


def _landline_re() -> str:
    local8 = r"[2-8]\d{3}[- ]?\d{4}"
    local78 = r"(?:[2-8]\d{2,3}[- ]?\d{4}|[2-8]\d{3}[- ]\d{3})"
    ext = r"(?:(?:-|转)\d{1,5})?"
    big, small = r"(?:10|2\d)", r"(?:[3-9]\d{2})"
    with_zero = (rf"(?:\(0{big}\)|（0{big}）)\s?{local8}|0{big}[- ]?{local8}"
                 rf"|(?:\(0{small}\)|（0{small}）)\s?{local78}|0{small}[- ]?{local78}")
    intl = (rf"(?:\+|00)86[- ]?(?:\(0\)\s?)?(?:\(0?{big}\)|0?{big})[- ]?{local8}"
            rf"|(?:\+|00)86[- ]?(?:\(0\)\s?)?(?:\(0?{small}\)|0?{small})[- ]?{local78}")
    service = r"[48]00[- ]?\d{3}[- ]?\d{4}"
    keyword = (r"(?:电话|座机|固话|[Tt]el|TEL|热线|拨打|致电)(?:号码|号)?\s*(?:[:：]|是|为)?\s*"
               r"(?P<id>[2-8]\d{2,3}[- ]?\d{4}" + ext + r"|\d{9,16})")  # local, or digits with country code/extension
    lead = r"(?<![0-9A-Za-z.\-/+])"
    return rf"{lead}(?:{intl}|{with_zero}|{service}){ext}(?![0-9A-Za-z])(?!-\d)|{keyword}(?![0-9A-Za-z])(?![- ]\d)"


_WX_KEY = (r"(?:微信|威信|薇信|徽信|[Ww]e[Cc]hat|[Ww]eixin|WEIXIN|(?<![A-Za-z])(?:[vV][xX]|[wW][xX]|[vV]信)"
           r"|加[vV](?![A-Za-z])|(?<![A-Za-z])[vV](?=[:：]))")
# Between keyword and ID: spaces and ：/是/为, or up to 4 Chinese characters before a colon
# (加我微信吧：…, QQ群号码：…, 微信公众号：…).
_KEY_GAP = r"(?:[\u4e00-\u9fff]{1,4}[:：]\s*|\s*(?:[:：]|是|为)?\s*)"
_QQ_KEY = r"(?:QQ|qq|Qq|扣扣|企鹅号|加我?扣|扣(?=[:：])|(?<![A-Za-z])[Qq](?=[:：]|号|群))"

PATTERNS: dict[str, re.Pattern[str]] = {
    "email": re.compile(r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,10}(?![A-Za-z])"),
    "url": re.compile(rf"(?:(?:https?|ftp)://(?=[A-Za-z0-9])|www\.){_URL_CHAR}*{_URL_END}"
                      rf"|(?<![A-Za-z0-9@.-])(?:[A-Za-z0-9-]+\.)+{_TLD}(?![A-Za-z0-9-])(?:/(?:{_URL_CHAR}*{_URL_END})?)?"),
    # 18 characters or 15 digits, one optional space/dash between any two (grouped as people write them).
    "id_card": re.compile(_B + r"(?<!\d[ -])" + _PROVINCE + r"(?:(?:[ -]?\d){15}[ -]?[0-9Xx]|(?:[ -]?\d){13})"
                          + _A + r"(?![ -]\d)"),
    "bank_card": re.compile(_B + r"(?<!\d[ -])(?:\d{16,19}|\d{4}(?P<sep>[ -])\d{4}(?:(?P=sep)\d{4}){2}(?:(?P=sep)\d{1,4})?"
                            r"|\d{6}[ -]\d{10,13})" + _A + r"(?![ -]\d)"),
    "wechat": re.compile(
        r"(?<![A-Za-z0-9_])wxid_[A-Za-z0-9_-]{4,30}"
        rf"|{_WX_KEY}(?:号码|账号|号|ID|id)?{_KEY_GAP}"
        rf"(?P<id>[A-Za-z][-_A-Za-z0-9]{{5,19}}|{_CC}?{_MOBILE_BODY_PLAIN}|[1-9]\d{{4,10}})(?![-_A-Za-z0-9])"),
    "qq": re.compile(rf"{_QQ_KEY}(?:号码|号|群)?{_KEY_GAP}(?P<id>[1-9]\d{{4,10}})(?![0-9年月日岁])"),
    "mobile": re.compile(rf"(?<![0-9A-Za-z.+])(?<!\d[-.]){_CC}?{_MOBILE_BODY}(?![0-9A-Za-z])(?![-.]\d)"),
    "landline": re.compile(_landline_re()),
}

_BANK_IIN = re.compile(r"62|60|65|4|5[1-5]|2[2-7]|35|9[45]")


def _valid_id(m: re.Match) -> bool:
    s = m.group().replace(" ", "").replace("-", "")
    if len(s) == 18:
        return valid_id_card(s) and _real_date(int(s[6:10]), int(s[10:12]), int(s[12:14])) and 1880 <= int(s[6:10])
    # First generation: no check character, so the context decides as for phone numbers.
    return _real_date(1900 + int(s[6:8]), int(s[8:10]), int(s[10:12])) and _identifier_here(m)


def _valid_bank_card(m: re.Match) -> bool:
    digits = m.group().replace(" ", "").replace("-", "")
    if not (16 <= len(digits) <= 19 and _BANK_IIN.match(digits) is not None and luhn_ok(digits)):
        return False
    groups = m.group().replace("-", " ").split()
    if len(groups) > 2 and all(g.endswith("0") for g in groups) and context(m.string, m.start()) != "pos":
        return False  # 4520 3180 2760 3090: rounded values of a list, not a card
    return _identifier_here(m)


def _valid_keyword_id(m: re.Match) -> bool:
    """A numeric WeChat/QQ ID is data when a unit follows or a record/measurement keyword stands
    between keyword and number (微信运动步数：12345)."""
    ident = m.group("id")
    if ident is None or not ident[0].isdigit():
        return True
    gap = m.string[m.start():m.start("id")]
    if any(k.lastgroup == "neg" for k in _CONTEXT.finditer(gap)):
        return False
    return _AMOUNT_AFTER.match(m.string, m.end()) is None


def _valid_landline(m: re.Match) -> bool:
    return m.group("id") is not None or _identifier_here(m)


_VALID: dict[str, Callable[[re.Match], bool]] = {
    "id_card": _valid_id, "bank_card": _valid_bank_card, "wechat": _valid_keyword_id, "qq": _valid_keyword_id,
    "mobile": _identifier_here, "landline": _valid_landline,
}

# Cheap pre-checks: skip a pattern when the text cannot contain a match. Plain alternations of
# literals (supersets of the keyword patterns): Python's re scans those ~10x faster than
# alternatives with classes and look-behinds.
_WX_WORDS = ["微信", "威信", "薇信", "徽信", "WeChat", "Wechat", "weChat", "wechat", "eixin", "WEIXIN", "wxid_",
             "vx", "VX", "vX", "Vx", "wx", "WX", "wX", "Wx", "V信", "v信", "加V", "加v", "V:", "V：", "v:", "v："]
_QQ_WORDS = ["QQ", "qq", "Qq", "扣扣", "企鹅号", "加扣", "我扣", "扣:", "扣：", "Q:", "Q：", "q:", "q：", "Q号", "q号", "Q群", "q群"]
_DIGITS = re.compile(r"\d{4}")
_WX = re.compile("|".join(map(re.escape, _WX_WORDS)))
_QQ = re.compile("|".join(map(re.escape, _QQ_WORDS)))
_NEEDS: dict[str, Callable[[str], bool]] = {
    "email": lambda t: "@" in t,
    "url": lambda t: "." in t,
    "id_card": lambda t: _DIGITS.search(t) is not None,
    "bank_card": lambda t: _DIGITS.search(t) is not None,
    "wechat": lambda t: _WX.search(t) is not None,
    "qq": lambda t: _QQ.search(t) is not None,
    "mobile": lambda t: _DIGITS.search(t) is not None,
    "landline": lambda t: _DIGITS.search(t) is not None,
}

# Every pattern needs 7 digits (groups of 3+ and 4, at most one separator between them), '@', a
# URL/domain marker or one of its keywords. Literal alternatives only: Python's re scans a plain
# alternation of literals ~10x faster than one with classes and look-behinds, and the pre-check
# runs on every record.
_TRIGGER_DIGITS = re.compile(r"\d{3}[-. )）]?\d{4}")
_TRIGGER_WORDS = (
    ["@", "://", "www."] + ["." + t for t in _TLD[3:-1].split("|")] + _WX_WORDS + _QQ_WORDS
    + ["电话", "座机", "固话", "热线", "拨打", "致电", "Tel", "tel", "TEL"])
_TRIGGER_WORD = re.compile("|".join(map(re.escape, _TRIGGER_WORDS)))


def might_contain_pii(text: str) -> bool:
    """Cheap pre-check: no pattern can match a text this finds nothing in."""
    return _TRIGGER_DIGITS.search(text) is not None or _TRIGGER_WORD.search(text) is not None


class Scrubber:
    def __init__(self, types: list[str] | None = None) -> None:
        types = list(types if types is not None else ORDER)
        unknown = sorted(set(types) - set(ORDER))
        if unknown:
            from cmedbert.errors import ConfigError

            raise ConfigError(f"pii.types: unknown type(s) {unknown} (known: {ORDER})")
        self.types = [t for t in ORDER if t in types]

    def scrub(self, text: str, counts: Counter | None = None) -> str:
        """Replace identifiers with placeholders; add per-type counts to ``counts``."""
        if not might_contain_pii(text):
            return text
        for kind in self.types:
            if not _NEEDS[kind](text):
                continue
            text = PATTERNS[kind].sub(_replacer(kind, counts), text)
        return text


def _replacer(kind: str, counts: Counter | None) -> Callable[[re.Match], str]:
    ph = PLACEHOLDERS[kind]
    valid = _VALID.get(kind)
    keyword_group = "id" in PATTERNS[kind].groupindex

    def repl(m: re.Match) -> str:
        if valid is not None and not valid(m):
            return m.group(0)
        if counts is not None:
            counts[kind] += 1
        if keyword_group and m.group("id") is not None:  # keyword kept, identifier replaced
            s = m.group(0)
            return s[: m.start("id") - m.start(0)] + ph + s[m.end("id") - m.start(0):]
        return ph

    return repl


def expected_output(text: str, planted: Sequence[tuple[str, str]]) -> str:
    """``text`` with each planted (type, secret), in order, replaced by the type's placeholder."""
    out, pos = [], 0
    for kind, secret in planted:
        i = text.index(secret, pos)
        out += [text[pos:i], PLACEHOLDERS[kind]]
        pos = i + len(secret)
    return "".join(out) + text[pos:]


_PLACEHOLDER_KIND = {ph: kind for kind, ph in PLACEHOLDERS.items()}
_ANY_PLACEHOLDER = re.compile("|".join(map(re.escape, PLACEHOLDERS.values())))


def _damaged_next_to(out: str, expected: str) -> set[str]:
    """Types of the placeholders in ``out`` that touch a stretch where it differs from ``expected``."""
    spans = [(m.start(), m.end(), _PLACEHOLDER_KIND[m.group()]) for m in _ANY_PLACEHOLDER.finditer(out)]
    kinds = set()
    for tag, i1, i2, _, _ in difflib.SequenceMatcher(None, out, expected, autojunk=False).get_opcodes():
        if tag != "equal":
            kinds.update(k for s, e, k in spans if s <= i2 and i1 <= e)
    return kinds


def evaluate(cases: Iterable, scrubber: Scrubber | None = None) -> dict:
    """Recall and precision per type on labelled cases (``.text``, ``.planted`` = [(type, secret)],
    empty for text that must stay unchanged).

    Per case and type: true positives = min(planted, counted, planted secrets gone from the
    output); the rest of the planted are false negatives; extra counts are false positives. Where
    the output differs from the expected text right next to a placeholder (a URL that swallowed
    the words after it), that placeholder's type gets one false positive (once per case).
    """
    scrubber = scrubber or Scrubber()
    per_type = {k: Counter() for k in ORDER}
    summary = Counter()
    failures = []
    for case in cases:
        counts: Counter = Counter()
        out = scrubber.scrub(case.text, counts)
        expected = expected_output(case.text, case.planted)
        exact = out == expected
        summary["planted_cases" if case.planted else "keep_cases"] += 1
        summary[("planted_exact" if case.planted else "keep_intact")] += exact
        if not exact:
            failures.append((case.text, expected, out))
        planted = Counter(kind for kind, _ in case.planted)
        for kind in set(planted) | set(counts):
            gone = sum(1 for k, secret in case.planted if k == kind and secret not in out)
            tp = min(planted[kind], counts[kind], gone)
            fp = max(0, counts[kind] - planted[kind])
            if not exact and case.planted and not fp and kind in _damaged_next_to(out, expected):
                fp = 1
            per_type[kind].update(planted=planted[kind], tp=tp, fn=planted[kind] - tp, fp=fp)
    table = {}
    for kind, c in per_type.items():
        table[kind] = {"planted": c["planted"], "tp": c["tp"], "fn": c["fn"], "fp": c["fp"],
                       "recall": c["tp"] / c["planted"] if c["planted"] else None,
                       "precision": c["tp"] / (c["tp"] + c["fp"]) if c["tp"] + c["fp"] else None}
    return {"per_type": table, **{k: summary[k] for k in ("planted_cases", "planted_exact", "keep_cases",
                                                             "keep_intact")}, "failures": failures}
