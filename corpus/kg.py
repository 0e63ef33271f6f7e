"""Knowledge-graph inputs: term dictionaries and triples.

Term dictionaries (``kg_dict``: one term per line, category = file stem; ``kg_terms_freq``:
THUOCL ``term<TAB>freq``) are not sentences. By default (``emit = "none"``) they add no
documents: their use is the tokenizer's jieba user dictionary and entity-aware masking, which
read them through :func:`read_terms`. Thousands of template sentences ("X是一种疾病。") would
mostly teach the model the template. ``emit = "sentences"`` verbalizes them anyway, as
documents of ``terms_per_doc`` sentences from one category.

Triples (``kg_triples``: CMeKG-style JSON ``[{text?, spo_list: [[s, p, o], ...]}]``, JSON lines
of the same, CMeIE-style dict triples, or CSV/TSV ``subject,predicate,object``; ``kg_table``: a
CSV with one row per subject and one column per predicate, such as medicalgraph's disease.csv)
are grouped per file by subject, then by predicate in first-seen order, and verbalized with one
deterministic template per predicate: all objects of one (subject, predicate) go into one
sentence, and all sentences of one subject form one document, e.g.
``高血压的相关症状有头痛、头晕和心悸。``
"""

from __future__ import annotations

import csv
import re
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterable, Iterator

from cmedbert.corpus.config import SourceConfig
from cmedbert.errors import CmedbertError
from cmedbert.corpus.readers import Bad, Item, Record, Span, detect_encoding, iter_csv, iter_json_items, iter_lines

# Per-predicate templates: {s} subject, {o} the grouped objects.
PREDICATE_TEMPLATES: dict[str, str] = {
    # CMeKG predicates (kg/cmekg-tools/predicate.json)
    "相关疾病": "{s}的相关疾病有{o}。",
    "相关症状": "{s}的相关症状有{o}。",
    "临床表现": "{s}的临床表现包括{o}。",
    "检查": "{s}的检查项目包括{o}。",
    "用法用量": "{s}的用法用量：{o}。",
    "贮藏": "{s}的贮藏方法：{o}。",
    "性状": "{s}的性状：{o}。",
    "禁忌": "{s}的禁忌：{o}。",
    "不良反应": "{s}的不良反应包括{o}。",
    "有效期": "{s}的有效期为{o}。",
    "注意事项": "使用{s}的注意事项：{o}。",
    "适应症": "{s}的适应症包括{o}。",
    "成份": "{s}的成份包括{o}。",
    "病因": "{s}的病因包括{o}。",
    "治疗": "{s}的治疗方法包括{o}。",
    "规格": "{s}的规格为{o}。",
    "并发症": "{s}的并发症包括{o}。",
    "药物相互作用": "{s}的药物相互作用：{o}。",
    "主治": "{s}主治{o}。",
    "入药部位": "{s}的入药部位是{o}。",
    "功效": "{s}的功效是{o}。",
    "性味": "{s}性味{o}。",
    "功能主治": "{s}的功能主治：{o}。",
    # CMeIE predicates that occur most
    "药物治疗": "{s}的治疗药物有{o}。",
    "影像学检查": "{s}的影像学检查包括{o}。",
    "实验室检查": "{s}的实验室检查包括{o}。",
    "发病部位": "{s}的发病部位是{o}。",
    "同义词": "{s}又称{o}。",
    "辅助治疗": "{s}的辅助治疗包括{o}。",
    "手术治疗": "{s}的手术治疗包括{o}。",
    "病理分型": "{s}的病理分型包括{o}。",
    "多发群体": "{s}多见于{o}。",
    "高危因素": "{s}的高危因素有{o}。",
    "预防": "{s}的预防措施包括{o}。",
    "预后状况": "{s}的预后：{o}。",
    # medicalgraph disease.csv columns (kg_table)
    "alias": "{s}又称{o}。",
    "part": "{s}的发病部位是{o}。",
    "age": "{s}的易感人群：{o}。",
    "infection": "{s}{o}。",
    "insurance": "{s}属于{o}。",
    "department": "{s}的就诊科室是{o}。",
    "checklist": "{s}的检查项目包括{o}。",
    "symptom": "{s}的典型症状有{o}。",
    "complication": "{s}的并发症有{o}。",
    "treatment": "{s}的治疗方法包括{o}。",
    "drug": "{s}的常用药物有{o}。",
    "period": "{s}的治疗周期为{o}。",
    "rate": "{s}的治愈率为{o}。",
    "money": "{s}的治疗费用为{o}。",
}
DEFAULT_PREDICATE_TEMPLATE = "{s}的{p}是{o}。"

# kg_table columns whose cells are lists (split on spaces / commas); other cells are one value.
LIST_COLUMNS = {"alias", "department", "checklist", "symptom", "complication", "drug"}

CATEGORY_TEMPLATES: dict[str, str] = {
    "disease": "{t}是一种疾病。",
    "symptom": "{t}是一种症状。",
    "drug": "{t}是一种药物。",
    "producer": "{t}是一种药品。",
    "food": "{t}是一种食物。",
    "check": "{t}是一项医学检查。",
    "department": "{t}是医院的一个科室。",
    "medical": "{t}是一个医学术语。",
}


# --------------------------------------------------------------------------- term lists
def category_of(path: str | Path) -> str:
    """Category of a term file: its stem, without a ``THUOCL_`` prefix (THUOCL_medical -> medical)."""
    stem = Path(path).stem
    return stem[len("THUOCL_"):] if stem.startswith("THUOCL_") else stem


def iter_terms(path: str | Path, encoding: str = "auto", span: Span | None = None) -> Iterator[tuple[int, str | None]]:
    """(line, term) for a term file: one term per line, or ``term<TAB>freq``; None = undecodable."""
    path = Path(path)
    enc = detect_encoding(path, encoding)
    for n, line in iter_lines(path, enc, span):
        if line is None:
            yield n, None
            continue
        term = line.strip().lstrip("\ufeff").split("\t")[0].strip()
        if term:
            yield n, term


def read_terms(paths: Iterable[str | Path], encoding: str = "auto") -> dict[str, str]:
    """``{term: category}`` from term files (one term per line, or THUOCL ``term<TAB>freq``;
    UTF-8 with or without BOM, or GB18030, detected), category = file stem (``THUOCL_`` prefix
    removed), in file order; the first file listing a term wins. The one term-list reader: the
    tokenizer stage reads its KG terms (jieba user dictionary, entity masking) through it.
    A missing file or a line that does not decode is a :class:`CmedbertError` naming file:line."""
    out: dict[str, str] = {}
    for p in paths:
        path = Path(p)
        if not path.is_file():
            raise CmedbertError(f"KG term list not found: {path}")
        cat = category_of(path)
        enc = detect_encoding(path, encoding)
        for line, term in iter_terms(path, enc):
            if term is None:
                raise CmedbertError(f"{path}:{line}: does not decode as {enc} (set the encoding explicitly)")
            out.setdefault(term, cat)
    return out


def read_kg_dict(path: Path, src: SourceConfig, enc: str, span: Span | None = None) -> Iterator[Item]:
    cat = category_of(path)
    if src.emit == "none":
        return
    template = src.templates.get(cat) or CATEGORY_TEMPLATES.get(cat) or ("{t}属于" + cat + "。")
    group: list[str] = []
    first = 0
    n = 0
    for line, term in iter_terms(path, enc, span):
        if term is None:
            yield Bad("decode_error", line, f"not {enc}")
            continue
        if not group:
            first = line
        group.append(template.format(t=term))
        if len(group) == src.terms_per_doc:
            n += 1
            yield Record("".join(group), first)
            group = []
            if src.max_records and n >= src.max_records:
                return
    if group:
        yield Record("".join(group), first)


# --------------------------------------------------------------------------- triples
_CLAUSE = re.compile(r"[，。；]")


def join_objects(objs: list[str]) -> str:
    """Short objects -> 'A、B和C'; long ones (clauses) -> 'A；B；C'."""
    objs = [t for t in (o.strip().rstrip("。；;，,") for o in objs) if t]
    if any(len(o) > 30 for o in objs) or _CLAUSE.search("".join(objs)):
        return "；".join(objs)
    if len(objs) == 1:
        return objs[0]
    return "、".join(objs[:-1]) + "和" + objs[-1]


def verbalize(subject: str, preds: "OrderedDict[str, list[str]]", templates: dict[str, str] | None = None) -> str:
    """All (predicate -> objects) of one subject as sentences, one per predicate."""
    templates = templates or {}
    out = []
    for p, objs in preds.items():
        o = join_objects(objs)
        if not o:
            continue
        tpl = templates.get(p) or PREDICATE_TEMPLATES.get(p) or DEFAULT_PREDICATE_TEMPLATE
        out.append(tpl.format(s=subject, p=p, o=o))
    return "".join(out)


class _Grouper:
    """subject -> predicate -> unique objects, in first-seen order (per file)."""

    def __init__(self) -> None:
        self.subjects: OrderedDict[str, tuple[int, OrderedDict[str, list[str]]]] = OrderedDict()

    def add(self, s: str, p: str, o: str, line: int) -> None:
        s, p, o = s.strip(), p.strip(), o.strip()
        if not (s and p and o):
            return
        _, preds = self.subjects.setdefault(s, (line, OrderedDict()))
        objs = preds.setdefault(p, [])
        if o not in objs:
            objs.append(o)

    def records(self, templates: dict[str, str], max_records: int = 0) -> Iterator[Record]:
        for i, (s, (line, preds)) in enumerate(self.subjects.items(), 1):
            if max_records and i > max_records:
                return
            text = verbalize(s, preds, templates)
            if text:
                yield Record(text, line)


def _spo(t: Any) -> tuple[str, str, str] | None:
    if isinstance(t, (list, tuple)) and len(t) == 3:
        return str(t[0]), str(t[1]), str(t[2])
    if isinstance(t, dict) and {"subject", "predicate", "object"} <= set(t):
        o = t["object"]
        if isinstance(o, dict):
            o = o.get("@value", "")
        return str(t["subject"]), str(t["predicate"]), str(o)
    return None


def read_kg_triples(path: Path, src: SourceConfig, enc: str) -> Iterator[Item]:
    g = _Grouper()
    if path.suffix.lower() in (".csv", ".tsv", ".txt"):
        yield from _read_triple_table(path, enc, g)
    else:
        for it in iter_json_items(path, enc):
            if isinstance(it, Bad):
                yield it
                continue
            line, obj = it
            spos = obj.get("spo_list") if isinstance(obj, dict) else None
            if spos is None and _spo(obj):
                spos = [obj]
            if not isinstance(spos, list):
                yield Bad("bad_record", line, "no spo_list")
                continue
            for t in spos:
                spo = _spo(t)
                if spo is None:
                    yield Bad("bad_record", line, f"bad triple {t!r:.60}")
                    break
                g.add(*spo, line)
    yield from g.records(src.templates, src.max_records)


def _read_triple_table(path: Path, enc: str, g: _Grouper) -> Iterator[Item]:
    delim = "\t" if path.suffix.lower() in (".tsv", ".txt") else ","

    for n, line in iter_lines(path, enc):
        if line is None:
            yield Bad("decode_error", n, f"not {enc}")
            continue
        if not line.strip():
            continue
        row = next(csv.reader([line], delimiter=delim))
        if n == 1 and [c.strip().lower() for c in row[:3]] == ["subject", "predicate", "object"]:
            continue
        if len(row) != 3:
            yield Bad("missing_fields", n, f"{len(row)} fields, expected subject,predicate,object")
            continue
        g.add(row[0], row[1], row[2], n)


_DETAIL = re.compile(r"\s*\[详细\]\s*$")
_LIST_SEP = re.compile(r"[\s,，]+")
NULL_VALUES = {"暂无相关资料", "暂无资料", "暂无", "不详", "未知", "无相关资料", "-", "--", "null", "None"}


def read_kg_table(path: Path, src: SourceConfig, enc: str) -> Iterator[Item]:
    """One row per subject, one column per predicate (header names are the predicates)."""
    subj = src.columns.get("subject", "name")
    n = 0
    for line, row in iter_csv(path, enc, [subj]):
        if isinstance(row, Bad):
            yield row
            continue
        s = row[subj].strip()
        if not s:
            yield Bad("missing_fields", line, f"empty {subj}")
            continue
        n += 1
        if src.max_records and n > src.max_records:
            break
        preds: OrderedDict[str, list[str]] = OrderedDict()
        for col, val in row.items():
            if col == subj or not col:
                continue
            if "详细" in val:
                val = _DETAIL.sub("", val)
            val = val.strip()
            if not val or val in NULL_VALUES:
                continue
            vals = [v for v in _LIST_SEP.split(val) if v] if col in LIST_COLUMNS else [val]
            preds[col] = list(OrderedDict.fromkeys(vals))
        text = verbalize(s, preds, src.templates)
        if text:
            yield Record(text, line)
        else:
            yield Bad("missing_fields", line, "no predicate values")
