"""PII scrubbing with typed placeholders.

=============  ==============  ==========================================================
type           placeholder     what is matched
=============  ==============  ==========================================================
email          ``<EMAIL>``     ``name@host.tld``
url            ``<URL>``       ``http(s)://…``, ``www.…``, bare ``host.com/.cn/.net/.org…``
id_card        ``<ID_CARD>``   18-character resident ID: region, plausible birth date,
                               valid ISO 7064 MOD 11-2 check character
bank_card      ``<BANK_CARD>`` 16–19 digits (spaces/dashes allowed) passing the Luhn check
wechat         ``<WECHAT>``    an ID after 微信/weixin/vx/wx (+号/：): the ID is replaced
qq             ``<QQ>``        5–11 digits after QQ/扣扣/企鹅号 (+号/：)
mobile         ``<MOBILE>``    mainland mobile 1[3-9]x xxxx xxxx, optional +86, separators
landline       ``<PHONE>``     area code 0xx(x) + 7–8 digits (``010-12345678``,
                               ``(0755)1234567``), 400/800 numbers, and 7–8 digits after
                               电话/座机/Tel
=============  ==============  ==========================================================

Digits glued to other digits, decimal points or letters are never matched, so dosages,
lab values, dates and drug codes (``0.5g``, ``HbA1c 6.5%``, ``2020-03-19``) survive. The order
above matters: e-mails before URLs, checksum-validated IDs before bank cards, keyword IDs before
bare phone numbers.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Callable

PLACEHOLDERS = {
    "email": "<EMAIL>", "url": "<URL>", "id_card": "<ID_CARD>", "bank_card": "<BANK_CARD>",
    "wechat": "<WECHAT>", "qq": "<QQ>", "mobile": "<MOBILE>", "landline": "<PHONE>",
}
ORDER = ["email", "url", "id_card", "bank_card", "wechat", "qq", "mobile", "landline"]

_ID_WEIGHTS = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]
_ID_CHECK = "10X98765432"


def id_check_char(first17: str) -> str:
    return _ID_CHECK[sum(int(c) * w for c, w in zip(first17, _ID_WEIGHTS)) % 11]


def valid_id_card(s: str) -> bool:
    return len(s) == 18 and s[:17].isdigit() and id_check_char(s[:17]) == s[17].upper()


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


_B = r"(?<![0-9A-Za-z.])"  # not glued to a preceding digit, letter or decimal point
_A = r"(?![0-9A-Za-z])"
_TLD = r"(?:com|cn|net|org|edu|gov|info|top|xyz|cc|co|io|me|tv|biz|hk|tw)"

PATTERNS: dict[str, re.Pattern[str]] = {
    "email": re.compile(r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,10}(?![A-Za-z])"),
    "url": re.compile(r"(?:(?:https?|ftp)://|www\.)[^\s<>\"'，。！？；、：（）()【】“”《》]+"
                      rf"|(?<![A-Za-z0-9@.-])(?:[A-Za-z0-9-]+\.)+{_TLD}(?![A-Za-z0-9-])(?:/[^\s<>\"'，。！？；、（）()【】“”]*)?"),
    "id_card": re.compile(_B + r"[1-9]\d{5}(?:18|19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{3}[0-9Xx]" + _A),
    "bank_card": re.compile(_B + r"[1-9]\d{3}(?:[ -]?\d{1,4}){3,4}" + r"(?![0-9A-Za-z]|[ -]\d)"),
    "wechat": re.compile(r"(?:微信|威信|薇信|徽信|[Ww]e[Cc]hat|weixin|WEIXIN|[vV][xX]|[vV]信|[wW][xX])(?:号码|账号|号|ID|id)?\s*(?:[:：]|是|为)?\s*"
                         r"([A-Za-z][-_A-Za-z0-9]{5,19}|(?:\+?86)?1[3-9]\d{9}|[1-9]\d{4,10})(?![-_A-Za-z0-9])"),
    "qq": re.compile(r"(?:QQ|qq|Qq|扣扣|企鹅号)(?:号码|号|群)?\s*(?:[:：]|是|为)?\s*([1-9]\d{4,10})(?![0-9])"),
    "mobile": re.compile(r"(?<![0-9A-Za-z.+])(?:(?:\+|00)?86[- ]?)?1[3-9]\d(?:[- ]?\d{4}){2}(?![0-9A-Za-z])"),
    "landline": re.compile(
        r"(?<![0-9A-Za-z.\-/])(?:(?:\(0\d{2,3}\)|（0\d{2,3}）)\s?|0\d{2,3}[- ])[2-9]\d{6,7}(?:-\d{1,4})?(?![0-9A-Za-z])"
        r"|(?<![0-9A-Za-z.\-/])[48]00[- ]?\d{3}[- ]?\d{4}(?![0-9A-Za-z])"
        r"|(?:电话|座机|[Tt]el|TEL)(?:号码|号)?\s*[:：]?\s*([2-9]\d{6,7})(?![0-9A-Za-z])"),
}

# Cheap pre-checks: skip a pattern when the text cannot contain a match.
_NEEDS: dict[str, Callable[[str], bool]] = {
    "email": lambda t: "@" in t,
    "url": lambda t: "." in t,
    "id_card": lambda t: _DIGITS.search(t) is not None,
    "bank_card": lambda t: _DIGITS.search(t) is not None,
    "wechat": lambda t: _WX.search(t) is not None,
    "qq": lambda t: _QQ.search(t) is not None,
    "mobile": lambda t: _DIGITS.search(t) is not None,
    "landline": lambda t: _DIGITS7.search(t) is not None,
}
_DIGITS = re.compile(r"\d{4}")
_DIGITS7 = re.compile(r"\d{3}")
_WX = re.compile(r"微信|威信|薇信|徽信|[Ww]e[Cc]hat|weixin|WEIXIN|[vV][xX]|[vV]信|[wW][xX]")
_QQ = re.compile(r"QQ|qq|Qq|扣扣|企鹅号")


_TRIGGER_DIGITS = re.compile(r"\d{3}[- )）]?\d{4}")
_TRIGGER_WORDS = ("@", "://", "www.", ".com", ".cn", ".net", ".org", ".edu", ".gov", ".info", ".top", ".xyz", ".cc",
                  ".co", ".io", ".me", ".tv", ".biz", ".hk", ".tw", "微信", "威信", "薇信", "徽信", "QQ", "qq", "Qq",
                  "扣扣", "企鹅号", "电话", "座机", "vx", "VX", "vX", "Vx", "wx", "WX", "wX", "Wx", "weixin", "WEIXIN",
                  "V信", "v信", "Tel", "tel", "TEL", "echat")


def might_contain_pii(text: str) -> bool:
    """Cheap pre-check: every pattern needs 7 near digits, '@', a URL/domain marker or a keyword."""
    return _TRIGGER_DIGITS.search(text) is not None or any(w in text for w in _TRIGGER_WORDS)


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

    def repl(m: re.Match) -> str:
        s = m.group(0)
        if kind == "id_card" and not valid_id_card(s):
            return s
        if kind == "bank_card":
            digits = re.sub(r"[ -]", "", s)
            if not (16 <= len(digits) <= 19 and luhn_ok(digits)):
                return s
        if counts is not None:
            counts[kind] += 1
        if m.re.groups and m.group(1) is not None:  # keyword kept, identifier replaced
            return s[: m.start(1) - m.start(0)] + ph + s[m.end(1) - m.start(0):]
        return ph

    return repl
