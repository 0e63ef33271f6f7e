"""The eight CBLUE 1.0 tasks: what their files hold, how to read them, how to check them and
how to write a submission in the official name and format.

Everything here is plain Python (no torch), so scoring and validation stay fast.

File facts this module copes with (see ../shared/data/SOURCES.md and each task's README.txt):
* most files are one JSON array; CMeIE files (and 53_schemas.json) are JSON lines despite the
  ``.json`` name and use CRLF line endings;
* CMeEE ``end_idx`` is inclusive (``text[start_idx:end_idx + 1] == entity``);
* CHIP-CDN joins several ICD-10 names with ``"##"``; its label dictionary is an xlsx;
* CHIP-CTC's 44 labels are defined in ``category.xlsx``;
* test files carry no labels; the submission adds the label field to every test record and keeps
  everything else as it was (the official checker keys records by ``id`` or by ``text``).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from cmedbert.errors import CmedbertError

CTC_LABELS = (
    "Disease", "Symptom", "Sign", "Pregnancy-related Activity", "Neoplasm Status",
    "Non-Neoplasm Disease Stage", "Allergy Intolerance", "Organ or Tissue Status", "Life Expectancy",
    "Oral related", "Pharmaceutical Substance or Drug", "Therapy or Surgery", "Device", "Nursing",
    "Diagnostic", "Laboratory Examinations", "Risk Assessment", "Receptor Status", "Age",
    "Special Patient Characteristic", "Literacy", "Gender", "Education", "Address", "Ethnicity",
    "Consent", "Enrollment in other studies", "Researcher Decision", "Capacity", "Ethical Audit",
    "Compliance with Protocol", "Addictive Behavior", "Bedtime", "Exercise", "Diet",
    "Alcohol Consumer", "Sexual related", "Smoking Status", "Blood Donation", "Encounter",
    "Disabilities", "Healthy", "Data Accessible", "Multiple",
)
QIC_LABELS = ("病情诊断", "病因分析", "治疗方案", "就医建议", "指标解读", "疾病表述", "后果表述",
              "注意事项", "功效作用", "医疗费用", "其他")
CMEEE_TYPES = ("dis", "sym", "pro", "equ", "dru", "ite", "bod", "dep", "mic")
# The 44 predicates of CMeIE (53 (subject type, predicate, object type) schemas in 53_schemas.json).
CMEIE_PREDICATES = (
    "预防", "阶段", "就诊科室", "同义词", "辅助治疗", "化疗", "放射治疗", "手术治疗", "实验室检查",
    "影像学检查", "辅助检查", "组织学检查", "内窥镜检查", "筛查", "多发群体", "发病率", "发病年龄",
    "多发地区", "发病性别倾向", "死亡率", "多发季节", "传播途径", "并发症", "病理分型", "相关（导致）",
    "鉴别诊断", "相关（转化）", "相关（症状）", "临床表现", "治疗后症状", "侵及周围组织转移的症状",
    "病因", "高危因素", "风险评估因素", "病史", "遗传因素", "发病机制", "病理生理", "药物治疗",
    "发病部位", "转移部位", "外侵部位", "预后状况", "预后生存率",
)
ICD_XLSX = "国际疾病分类 ICD-10北京临床版v601.xlsx"


@dataclass(frozen=True)
class TaskSpec:
    name: str
    kind: str                     # "cls" (one text), "pair" (two texts), "ner", "ie", "cdn"
    inputs: tuple[str, ...]       # input fields every record has (train, dev and test)
    target: str                   # the field a submission adds
    labels: tuple[str, ...] | None  # closed label set (classification, NER types, predicates)
    metric: str                   # primary metric name, as reported in results.jsonl
    key: str                      # how the official checker matches records: "id" or "text"
    jsonl: bool = False           # files are JSON lines (CMeIE)

    @property
    def submission_name(self) -> str:
        return f"{self.name}_test.json"

    def split_file(self, split: str) -> str:
        return f"{self.name}_{split}.json"


TASKS: dict[str, TaskSpec] = {t.name: t for t in [
    TaskSpec("CMeEE", "ner", ("text",), "entities", CMEEE_TYPES, "micro_f1", "text"),
    TaskSpec("CMeIE", "ie", ("text",), "spo_list", CMEIE_PREDICATES, "micro_f1", "text", jsonl=True),
    TaskSpec("CHIP-CDN", "cdn", ("text",), "normalized_result", None, "micro_f1", "text"),
    TaskSpec("CHIP-CTC", "cls", ("id", "text"), "label", CTC_LABELS, "macro_f1", "id"),
    TaskSpec("CHIP-STS", "pair", ("id", "text1", "text2"), "label", ("0", "1"), "macro_f1", "id"),
    TaskSpec("KUAKE-QIC", "cls", ("id", "query"), "label", QIC_LABELS, "accuracy", "id"),
    TaskSpec("KUAKE-QTR", "pair", ("id", "query", "title"), "label", ("0", "1", "2", "3"), "accuracy", "id"),
    TaskSpec("KUAKE-QQR", "pair", ("id", "query1", "query2"), "label", ("0", "1", "2"), "accuracy", "id"),
]}
TASK_ORDER = tuple(TASKS)


def get_task(name: str) -> TaskSpec:
    if name not in TASKS:
        raise CmedbertError(f"unknown CBLUE task {name!r} (known: {', '.join(TASK_ORDER)})")
    return TASKS[name]


# --------------------------------------------------------------------------- reading

def read_records(path: str | Path) -> list[dict[str, Any]]:
    """Read a CBLUE file: a JSON array, or JSON lines (CMeIE), LF or CRLF, with or without BOM."""
    path = Path(path)
    if not path.is_file():
        raise CmedbertError(f"file not found: {path}")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CmedbertError(f"{path}: not UTF-8 ({exc})") from None
    stripped = text.lstrip()
    if not stripped:
        raise CmedbertError(f"{path}: empty file")
    if stripped.startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CmedbertError(f"{path}: invalid JSON at line {exc.lineno}: {exc.msg}") from None
        records = data
    else:
        records = []
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise CmedbertError(f"{path}: line {lineno}: invalid JSON: {exc.msg}") from None
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            raise CmedbertError(f"{path}: record {i} is a {type(rec).__name__}, expected a JSON object")
    return records


def guess_task(record: dict[str, Any]) -> str | None:
    """The task a record's fields point to (None when they fit several, e.g. a bare ``text``)."""
    f = set(record)
    if {"query1", "query2"} <= f:
        return "KUAKE-QQR"
    if {"query", "title"} <= f:
        return "KUAKE-QTR"
    if "query" in f:
        return "KUAKE-QIC"
    if {"text1", "text2"} <= f:
        return "CHIP-STS"
    if "entities" in f:
        return "CMeEE"
    if "spo_list" in f:
        return "CMeIE"
    if "normalized_result" in f:
        return "CHIP-CDN"
    if {"id", "text"} <= f:
        return "CHIP-CTC"
    return None


def _where(path: Any, i: int) -> str:
    return f"{path}: record {i}"


def check_records(task: str | TaskSpec, records: list[dict[str, Any]], path: Any = "<records>",
                  labeled: bool = True, schemas: Iterable[tuple[str, str, str]] | None = None) -> None:
    """Raise a CmedbertError naming the file and record index if ``records`` are not ``task``'s.

    Checks: the input fields are present, the file is not another task's (by its fields), and with
    ``labeled`` the target field is present and inside the task's schema (labels, entity types
    and spans, predicates)."""
    spec = task if isinstance(task, TaskSpec) else get_task(task)
    for i, rec in enumerate(records):
        missing = [f for f in spec.inputs if f not in rec]
        guess = guess_task(rec)
        if missing or (guess is not None and guess != spec.name):
            hint = f"; its fields {sorted(rec)} look like a {guess} file" if guess and guess != spec.name else ""
            what = f"missing field(s) {missing}" if missing else "has fields of another task"
            raise CmedbertError(f"{_where(path, i)}: not a {spec.name} record: {what}{hint}")
        for f in spec.inputs:
            if not isinstance(rec[f], str):
                raise CmedbertError(f"{_where(path, i)}: field {f!r} must be a string, got {rec[f]!r}")
        if labeled:
            check_target(spec, rec, f"{_where(path, i)}", schemas=schemas)


def check_target(spec: TaskSpec, rec: dict[str, Any], where: str,
                 schemas: Iterable[tuple[str, str, str]] | None = None) -> None:
    """Check a record's target field against the task's schema (used for gold and predictions)."""
    if spec.target not in rec:
        raise CmedbertError(f"{where}: no {spec.target!r} field (fields: {sorted(rec)})")
    value = rec[spec.target]
    if spec.kind in ("cls", "pair"):
        if not isinstance(value, str) or value not in spec.labels:
            shown = ", ".join(spec.labels[:12]) + (", ..." if len(spec.labels) > 12 else "")
            raise CmedbertError(f"{where}: label {value!r} is not a {spec.name} label ({shown})")
    elif spec.kind == "ner":
        if not isinstance(value, list):
            raise CmedbertError(f"{where}: 'entities' must be a list, got {type(value).__name__}")
        n = len(rec.get("text", ""))
        for j, ent in enumerate(value):
            if not isinstance(ent, dict) or not all(k in ent for k in ("start_idx", "end_idx", "type")):
                raise CmedbertError(f"{where}: entity {j} needs start_idx, end_idx and type: {ent!r}")
            s, e, t = ent["start_idx"], ent["end_idx"], ent["type"]
            if not isinstance(s, int) or not isinstance(e, int) or isinstance(s, bool) or isinstance(e, bool):
                raise CmedbertError(f"{where}: entity {j}: start_idx/end_idx must be integers: {ent!r}")
            if t not in spec.labels:
                raise CmedbertError(f"{where}: entity {j}: type {t!r} is not a CMeEE type {list(spec.labels)}")
            if not 0 <= s <= e < n:
                raise CmedbertError(f"{where}: entity {j}: span [{s}, {e}] (end inclusive) is outside the text (length {n})")
    elif spec.kind == "ie":
        if not isinstance(value, list):
            raise CmedbertError(f"{where}: 'spo_list' must be a list, got {type(value).__name__}")
        allowed = {p for _, p, _ in schemas} if schemas else set(spec.labels)
        for j, spo in enumerate(value):
            if not isinstance(spo, dict) or not all(k in spo for k in ("subject", "predicate", "object")):
                raise CmedbertError(f"{where}: spo {j} needs subject, predicate and object: {spo!r}")
            if not isinstance(spo["subject"], str):
                raise CmedbertError(f"{where}: spo {j}: subject must be a string")
            obj = spo["object"]
            if not isinstance(obj, dict) or not isinstance(obj.get("@value"), str):
                raise CmedbertError(f"{where}: spo {j}: object must be {{\"@value\": string}}, got {obj!r}")
            if spo["predicate"] not in allowed:
                raise CmedbertError(f"{where}: spo {j}: predicate {spo['predicate']!r} is not in the CMeIE schema")
    elif spec.kind == "cdn":
        if not isinstance(value, str):
            raise CmedbertError(f"{where}: 'normalized_result' must be a string (names joined by '##'), got {value!r}")


def read_split(task: str | TaskSpec, path: str | Path, labeled: bool,
               schemas: Iterable[tuple[str, str, str]] | None = None) -> list[dict[str, Any]]:
    """Read and check one split file of ``task``."""
    spec = task if isinstance(task, TaskSpec) else get_task(task)
    records = read_records(path)
    check_records(spec, records, path, labeled=labeled, schemas=schemas)
    return records


# --------------------------------------------------------------------------- label dictionaries

def read_ctc_categories(path: str | Path) -> list[str]:
    """The 44 English label names of category.xlsx (column 'Label Name')."""
    import openpyxl

    path = Path(path)
    if not path.is_file():
        raise CmedbertError(f"file not found: {path}")
    wb = openpyxl.load_workbook(path, read_only=True)
    rows = list(wb.worksheets[0].iter_rows(values_only=True))
    header = [str(c).strip() if c is not None else "" for c in rows[0]]
    if "Label Name" not in header:
        raise CmedbertError(f"{path}: no 'Label Name' column (header {header})")
    col = header.index("Label Name")
    return [str(r[col]).strip() for r in rows[1:] if r[col]]


def read_schemas(path: str | Path) -> list[tuple[str, str, str]]:
    """53_schemas.json (JSON lines, CRLF) -> [(subject_type, predicate, object_type)]."""
    out = []
    for i, rec in enumerate(read_records(path)):
        try:
            out.append((rec["subject_type"], rec["predicate"], rec["object_type"]))
        except KeyError as exc:
            raise CmedbertError(f"{path}: record {i}: missing {exc}") from None
    return out


_ICD_CACHE: dict[str, list[str]] = {}


def read_icd_names(path: str | Path) -> list[str]:
    """Distinct diagnosis names (column 2) of the ICD-10 Beijing clinical v601 xlsx, in file order."""
    import openpyxl

    path = Path(path)
    key = str(path.resolve())
    if key in _ICD_CACHE:
        return _ICD_CACHE[key]
    if not path.is_file():
        raise CmedbertError(f"ICD-10 dictionary not found: {path}")
    wb = openpyxl.load_workbook(path, read_only=True)
    seen: dict[str, None] = {}
    for row in wb.worksheets[0].iter_rows(values_only=True, max_col=2):
        if len(row) > 1 and row[1]:
            seen.setdefault(str(row[1]).strip(), None)
    wb.close()
    _ICD_CACHE[key] = list(seen)
    return _ICD_CACHE[key]


def split_names(value: str) -> list[str]:
    """CHIP-CDN ``normalized_result`` -> distinct names (``"##"``-joined, blanks dropped)."""
    return list(dict.fromkeys(n.strip() for n in value.split("##") if n.strip()))


# --------------------------------------------------------------------------- submissions

def record_keys(spec: TaskSpec, records: list[dict[str, Any]]) -> list[tuple[str, int]]:
    """Match keys: (id or text, occurrence number), so repeated texts still pair up in order."""
    seen: Counter = Counter()
    keys = []
    for rec in records:
        k = str(rec.get(spec.key))
        keys.append((k, seen[k]))
        seen[k] += 1
    return keys


def dumps_records(spec: TaskSpec, records: list[dict[str, Any]]) -> str:
    if spec.jsonl:
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    return json.dumps(records, ensure_ascii=False, indent=2) + "\n"


def make_submission(spec: TaskSpec, test_records: list[dict[str, Any]], predictions: list[Any]) -> list[dict[str, Any]]:
    """Copy every test record and add the predicted target field (official README rule)."""
    if len(predictions) != len(test_records):
        raise ValueError(f"{len(predictions)} predictions for {len(test_records)} test records")
    out = []
    for rec, pred in zip(test_records, predictions):
        new = dict(rec)
        new[spec.target] = pred
        out.append(new)
    return out


def validate_submission(task: str | TaskSpec, source_records: list[dict[str, Any]], path: str | Path,
                        schemas: Iterable[tuple[str, str, str]] | None = None) -> list[dict[str, Any]]:
    """The official format checker's rules: file name, every source record present (by id/text),
    target field present and well-formed for every record. Returns the parsed submission."""
    spec = task if isinstance(task, TaskSpec) else get_task(task)
    path = Path(path)
    if path.name != spec.submission_name:
        raise CmedbertError(f"{path}: submission file must be named {spec.submission_name}")
    records = read_records(path)
    if spec.jsonl and path.read_text(encoding="utf-8").lstrip().startswith("["):
        raise CmedbertError(f"{path}: {spec.name} submissions are JSON lines, not a JSON array")
    got = set(record_keys(spec, records))
    for i, key in enumerate(record_keys(spec, source_records)):
        if key not in got:
            raise CmedbertError(f"{path}: source record {i} ({spec.key}={key[0][:40]!r}) is not in the submission")
    for i, rec in enumerate(records):
        check_target(spec, rec, _where(path, i), schemas=schemas)
    return records
