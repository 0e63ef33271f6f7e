"""Normalization, boilerplate removal, splitting and quality filters.

Normalization policy (applied in this order, same for every source):

1. Line breaks ``\\r\\n`` / ``\\r`` / U+2028/9 -> ``\\n``; Unicode NFC.
2. HTML remnants: known tags (``<br>``, ``<p>``, ``<div>``, ``<span>`` …, comments) are removed
   (block tags become line breaks) and entities are unescaped; ``<5mm``-style text is untouched.
3. One character table (built once from NFKC): compatibility characters are folded
   (full-width Latin letters and digits -> ASCII, ``㎎`` -> ``mg``, ``µ`` -> ``μ``, ideographic and
   no-break spaces -> space, CJK compatibility ideographs -> unified ones), EXCEPT what Chinese
   medical text needs as is: full-width Chinese punctuation ``，。！？：；（）～`` (kept full-width),
   ``℃``, circled numbers ``①…⑳``, Roman numerals ``Ⅱ期``, super-/subscript digits (``10⁹/L``),
   vulgar fractions, ``…``.
   Control characters (except newline), zero-width characters, BOMs and soft hyphens are removed;
   tabs become spaces.
4. Traditional -> simplified with OpenCC ``t2s`` (only documents that contain a
   traditional-only character are converted: the pure-Python converter is slow).
5. Whitespace: spaces collapsed, removed between two CJK characters/punctuation, lines stripped,
   empty lines dropped. ASCII ``, : ; ? !`` next to a CJK character become full-width, and a
   ``.`` after a CJK character (before CJK, space or line end) becomes ``。``.

Dosages (``0.5g``, ``10mg/kg``), lab values (``HbA1c 6.5%``), Latin drug names and dates pass
through unchanged (tested in tests/corpus/test_corpus_clean.py).
"""

from __future__ import annotations

import html
import re
import unicodedata
from functools import lru_cache

from cmedbert.corpus.config import CleaningConfig

_KEEP = set("，。！？：；（）～℃…") | {chr(c) for c in range(0x2460, 0x2474)} | {chr(c) for c in range(0x2160, 0x2180)} | set("⁰¹²³⁴⁵⁶⁷⁸⁹₀₁₂₃₄₅₆₇₈₉⁺⁻") \
    | set("½⅓⅔¼¾⅛⅜⅝⅞")
_REMOVE = {0x200B, 0x200C, 0x200D, 0x200E, 0x200F, 0x2060, 0xFEFF, 0x00AD}


@lru_cache(maxsize=1)
def char_table() -> dict[int, str | None]:
    table: dict[int, str | None] = {}
    for c in range(0x10000):
        if 0xD800 <= c <= 0xDFFF:
            continue
        ch = chr(c)
        if c in _REMOVE:
            table[c] = None
        elif ch == "\t":
            table[c] = " "
        elif ch == "\n":
            continue
        elif unicodedata.category(ch) == "Cc":
            table[c] = None
        elif ch not in _KEEP:
            n = unicodedata.normalize("NFKC", ch)
            if n != ch:
                table[c] = n
    return table


def _char_class(codes: list[int]) -> str:
    """A regex character class body for a set of code points, as ranges."""
    codes = sorted(codes)
    parts = []
    i = 0
    while i < len(codes):
        j = i
        while j + 1 < len(codes) and codes[j + 1] == codes[j] + 1:
            j += 1
        a, b = re.escape(chr(codes[i])), re.escape(chr(codes[j]))
        parts.append(a if i == j else f"{a}-{b}")
        i = j + 1
    return "".join(parts)


@lru_cache(maxsize=1)
def _table_re() -> re.Pattern[str]:
    """Runs of characters the table changes: translating only those is ~6x faster than
    str.translate over the whole text."""
    return re.compile(f"[{_char_class(list(char_table()))}]+")


def _translate_run(m: re.Match) -> str:
    return m.group(0).translate(char_table())


@lru_cache(maxsize=1)
def _t2s():
    """(lookup table: code point -> is a traditional-only character, OpenCC t2s converter).
    A numpy lookup is ~40x faster than a regex with 2,800 scattered characters."""
    import os

    import numpy as np
    import opencc

    path = os.path.join(os.path.dirname(opencc.__file__), "dictionary", "TSCharacters.txt")
    lut = np.zeros(0x110000, dtype=bool)
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            parts = line.rstrip("\n").split("\t")
            if len(parts) == 2 and len(parts[0]) == 1 and parts[0] not in parts[1].split(" "):
                lut[ord(parts[0])] = True
    return lut, opencc.OpenCC("t2s")


@lru_cache(maxsize=1)
def _trad_set() -> frozenset[str]:
    import numpy as np

    return frozenset(chr(c) for c in np.flatnonzero(_t2s()[0]))


def has_traditional(text: str) -> bool:
    if text.isascii():
        return False
    if len(text) < 256:  # set test: cheaper than numpy's per-call overhead on short texts
        return not _trad_set().isdisjoint(text)
    import numpy as np

    lut, _ = _t2s()
    return bool(lut[np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)].any())


_BLOCK_TAGS = "br|p|div|li|tr|h[1-6]|hr|table|ul|ol|section|article|header|footer"
_INLINE_TAGS = "span|a|img|font|b|i|u|strong|em|sup|sub|center|td|th|tbody|thead|nav|iframe|small|big|label"
_TAG = re.compile(rf"<!--.*?-->|<\s*/?\s*(?:({_BLOCK_TAGS})|(?:{_INLINE_TAGS}))\b[^<>]{{0,300}}/?\s*>", re.I | re.S)
_SCRIPT = re.compile(r"<(script|style)\b[^>]*>.*?</\1\s*>", re.I | re.S)
_ENTITY = re.compile(r"&(?:[a-zA-Z]{2,8}|#\d{2,6}|#x[0-9a-fA-F]{2,5});")

_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_CJKP = _CJK + "，。！？：；（）、“”‘’《》【】…"
_SPACES = re.compile(r"[ \u00a0]{2,}")
_CJK_SPACE = re.compile(rf"(?<=[{_CJKP}]) +(?=[{_CJKP}])")
_HALF_PUNCT = re.compile(rf"(?<=[{_CJK}])([,:;?!])|([,:;?!])(?=[{_CJK}])")
_CJK_PERIOD = re.compile(rf"(?<=[{_CJK}])\.(?=[{_CJK}]|\s|$)", re.M)  # 你好.我 / 谢谢. -> 。 (never 0.5g)
_FULL = {",": "，", ":": "：", ";": "；", "?": "？", "!": "！"}
_CJK_RUN = re.compile(rf"[{_CJK}]+")
_WS = re.compile(r"\s+")


def _tag_sub(m: re.Match) -> str:
    return "\n" if m.group(1) else ""


def normalize(text: str, t2s: bool = True) -> str:
    """The normalization policy of the module docstring."""
    if "\r" in text or "\u2028" in text or "\u2029" in text:
        text = re.sub(r"\r\n?|[\u2028\u2029]", "\n", text)
    if not text.isascii() and not unicodedata.is_normalized("NFC", text):
        text = unicodedata.normalize("NFC", text)
    if "<" in text:
        text = _TAG.sub(_tag_sub, _SCRIPT.sub("", text))
    if "&" in text:
        text = _ENTITY.sub(lambda m: html.unescape(m.group(0)), text)
    text = _table_re().sub(_translate_run, text)
    if t2s and has_traditional(text):
        text = _t2s()[1].convert(text)
    if any(c in text for c in ",:;?!"):
        text = _HALF_PUNCT.sub(lambda m: _FULL[m.group(1) or m.group(2)], text)
    if "." in text:
        text = _CJK_PERIOD.sub("。", text)
    lines = []
    for line in text.split("\n"):
        line = line.strip()
        if not line:
            continue
        if "  " in line or "\u00a0" in line:
            line = _SPACES.sub(" ", line)
        if " " in line:
            line = _CJK_SPACE.sub("", line)
        lines.append(line)
    return "\n".join(lines)


# --------------------------------------------------------------------------- boilerplate
# Platform greetings and signatures seen in the shared corpus (xywy/haodf/120ask answers and
# instruction templates). Each removes a clause/sentence including its closing punctuation.
DEFAULT_BOILERPLATE = [
    r"(?:如果|假如|假设)(?:您|你)是(?:一名|一位|一个)?(?:医生|大夫)[，,]?请根据患者的描述回答(?:医学)?问题[。.]?",
    r"感谢(?:您|你)的信任[，,]病情资料我已详细阅读[。.]?",
    r"(?:期望|希望)上述的?答案(?:可以|能够|能)(?:协助|帮助)到(?:您|你)[，,]?谢谢[。！!.]?",
    r"上述的?答案(?:期望|希望)(?:可以|能够|能)(?:协助|帮助)到(?:您|你)[，,]?谢谢[。！!.]?",
    r"以上是对“[^”\n]{0,300}”这个问题的建议[，,](?:期望|希望)对(?:您|你)(?:有所)?(?:帮助|有帮助)[，,]祝(?:您|你)健康[。！!.]?",
    r"希望我的回答(?:对(?:您|你)有所?帮助|能(?:够)?帮(?:助)?到(?:您|你))[，, ]?(?:祝(?:您|你)健康)?[。！!.]?",
    r"(?:本回答|以上回答|以上建议)仅供参考[，,]?(?:具体请遵医嘱|如有疑问请咨询医生)?[。！!.]?",
]


class Boilerplate:
    def __init__(self, extra: list[str] | None = None) -> None:
        pats = DEFAULT_BOILERPLATE + list(extra or [])
        self.re = re.compile(r"(?:(?<=^)|(?<=[。！？，；：!?\n]))\s*(?:" + "|".join(f"(?:{p})" for p in pats) + r")", re.M)

    def strip(self, text: str) -> tuple[str, int]:
        new, n = self.re.subn("", text)
        if n:
            new = re.sub(r"[，,；]\s*(?=\n|$)", "。", new)
            new = re.sub(r"(?m)^((?:患者|医生)：)\s*\n(?!(?:患者|医生)：)", r"\1", new)  # label left alone: join next line
            new = "\n".join(line for line in new.split("\n") if line.strip() and not re.fullmatch(r"(?:患者|医生)：\s*", line))
        return new, n


# --------------------------------------------------------------------------- split + filters
_SENT_END = re.compile(r"(?<=[。！？!?；\n])")


def split_long(text: str, max_chars: int) -> list[str]:
    """Split at sentence ends into pieces of at most ``max_chars`` (a longer sentence is cut)."""
    if len(text) <= max_chars:
        return [text]
    pieces: list[str] = []
    cur = ""
    for sent in _SENT_END.split(text):
        while len(sent) > max_chars:
            if cur:
                pieces.append(cur)
                cur = ""
            pieces.append(sent[:max_chars])
            sent = sent[max_chars:]
        if len(cur) + len(sent) > max_chars:
            pieces.append(cur)
            cur = ""
        cur += sent
    if cur:
        pieces.append(cur)
    return [p.strip() for p in pieces if p.strip()]


_ALNUM_RUN = re.compile(r"[A-Za-z0-9.%+\-]+")


def cjk_fraction(text: str) -> float:
    """Share of CJK characters among the non-space units of ``text``, where a run of Latin
    letters/digits (a drug name, a lab value) is one unit, as it is for a word-piece tokenizer:
    a Chinese sentence listing English drug names is still Chinese text."""
    dense = _ALNUM_RUN.sub("a", _WS.sub("", text))
    if not dense:
        return 0.0
    return 1.0 - len(_CJK_RUN.sub("", dense)) / len(dense)


class Filters:
    """Document-level filters; :meth:`reason` returns the drop reason or None."""

    def __init__(self, cfg: CleaningConfig) -> None:
        self.cfg = cfg
        self.run = re.compile(r"(.)\1{%d,}" % (cfg.max_char_run - 1), re.S)

    def reason(self, text: str) -> str | None:
        """too_short, low_cjk or char_repetition (ngram_repetition is computed in batches,
        see corpus.hashing.Batch.dup_fraction)."""
        cfg = self.cfg
        if len(text) < cfg.min_chars:
            return "too_short"
        if cjk_fraction(text) < cfg.min_cjk_fraction:
            return "low_cjk"
        if self.run.search(text):
            return "char_repetition"
        return None
