"""Readers: one per source type. Each turns one input file into a stream of :class:`Record`
(a document's raw text and where it starts) or :class:`Bad` (an input record that cannot be
used, with the reason and line, so it is counted and logged instead of lost).

Rendering policy: dialogue and QA records keep their turns, one per line, labelled ``患者：`` /
``医生：`` (MedDialog's ``病人：`` becomes ``患者：``). Instruction records without history are
rendered the same way unless the source sets ``labels = false`` (knowledge-style
instructions, which are not consultations), then as ``instruction\\ninput\\noutput``.
Knowledge-graph records are verbalized in :mod:`corpus.kg`.

A file that cannot be parsed as a whole (a broken JSON array, a CSV without the required
columns, an undecodable header) is a :class:`CmedbertError` naming the file and line; a broken
record inside a file is a :class:`Bad` drop.
"""

from __future__ import annotations

import codecs
import csv
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from cmedbert.errors import CmedbertError
from cmedbert.corpus.config import SourceConfig

csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


@dataclass
class Record:
    text: str
    line: int  # 1-based line where the record starts (JSON arrays: 1-based item number)
    continued: bool = False  # a later segment of a long line (counted like a split piece, not a record read)


@dataclass
class Bad:
    reason: str
    line: int
    detail: str = ""
    continued: bool = False


# A JSON line longer than this is not parsed (it would take ~40x its size in memory): it is a
# counted ``record_too_long`` drop. Plain-text lines of any length are read in segments instead.
MAX_JSON_LINE_BYTES = 16 << 20
SEGMENT_BYTES = 1 << 20  # default segment of a long plain-text line (the build uses 32 x max_chars)


Item = Record | Bad


# --------------------------------------------------------------------------- encoding
def detect_encoding(path: Path, forced: str = "auto", sample_bytes: int = 1 << 20) -> str:
    """``forced`` unless it is "auto"; else utf-8-sig on a UTF-8 BOM, utf-8 if the first MB
    decodes as UTF-8, else gb18030 if it decodes as that, else utf-8 (bad lines become drops)."""
    if forced != "auto":
        try:
            codecs.lookup(forced)
        except LookupError:
            raise CmedbertError(f"{path}: unknown encoding {forced!r}") from None
        return forced
    with open(path, "rb") as fh:
        head = fh.read(sample_bytes)
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise CmedbertError(f"{path}: UTF-16 files are not supported; convert to UTF-8")
    if len(head) == sample_bytes:  # do not judge a character cut at the sample's end
        cut = head.rfind(b"\n")
        head = head[: cut + 1] if cut > 0 else head[:-4]
    for enc in ("utf-8", "gb18030"):
        try:
            head.decode(enc)
            return enc
        except UnicodeDecodeError:
            continue
    return "utf-8"


@dataclass(frozen=True)
class Span:
    """A chunk of a line-based file: bytes [start, end), starting at line ``first_line``
    (start is 0 or just after a newline). Big files are split into spans processed in parallel."""
    start: int
    end: int
    first_line: int


def iter_lines(path: Path, encoding: str, span: Span | None = None) -> Iterator[tuple[int, str | None]]:
    """(1-based line number, decoded line with its newline, or None when it does not decode).
    Lines are split on b"\\n", which is safe for UTF-8 and GB18030. With ``span``, only the
    lines of that chunk (numbered as in the whole file)."""
    codec = "utf-8" if encoding.lower().replace("_", "-") in ("utf-8-sig", "utf8-sig") else encoding
    with open(path, "rb") as fh:
        first, pos, end = 1, 0, None
        if span is not None:
            fh.seek(span.start)
            first, pos, end = span.first_line, span.start, span.end
        for n, raw in enumerate(fh, first):
            if end is not None:
                if pos >= end:
                    break
                pos += len(raw)
            if n == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[3:]
            try:
                yield n, raw.decode(codec)
            except UnicodeDecodeError:
                yield n, None


def _line_pieces(path: Path, span: Span | None, limit: int) -> Iterator[tuple[int, bytes, bool]]:
    """(line number, bytes, last piece of the line): every line in pieces of at most ``limit``
    bytes, so a line of any length is read in bounded memory. With ``span``, that chunk only."""
    with open(path, "rb") as fh:
        n, pos, end = 1, 0, None
        if span is not None:
            fh.seek(span.start)
            n, pos, end = span.first_line, span.start, span.end
        open_line = False
        while end is None or pos < end:
            raw = fh.readline(limit)
            if not raw:
                break
            pos += len(raw)
            last = raw.endswith(b"\n") or len(raw) < limit
            yield n, raw, last
            open_line = not last
            if last:
                n += 1
        if open_line:  # the file ended exactly at a piece boundary
            yield n, b"", True


_CUT = re.compile(r"[。！？!?；;\s]")


def iter_line_segments(path: Path, encoding: str, span: Span | None = None,
                       segment_bytes: int = SEGMENT_BYTES) -> Iterator[tuple[int, str | None, bool]]:
    """(line number, text, last segment of the line): like :func:`iter_lines`, but a line longer
    than ``segment_bytes`` comes as several segments of about that size, cut after a sentence end
    or white space where there is one (so a phone number or ID is not cut in two), decoded
    incrementally. A segment that does not decode is None and ends the line (rest skipped)."""
    codec = "utf-8" if encoding.lower().replace("_", "-") in ("utf-8-sig", "utf8-sig") else encoding
    carry, broken, decoder = "", False, None
    for n, raw, last in _line_pieces(path, span, max(segment_bytes, 16)):
        if decoder is None:
            decoder = codecs.getincrementaldecoder(codec)()
            carry, broken = "", False
            if n == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[3:]
        if not broken:
            try:
                text = carry + decoder.decode(raw, final=last)
            except UnicodeDecodeError:
                broken = True
                yield n, None, True
        if last:
            if not broken:
                yield n, text, True
            decoder = None
            continue
        if broken:
            continue
        cut = max((m.end() for m in _CUT.finditer(text, max(len(text) - 4096, 0))), default=0)
        cut = cut if cut > len(text) // 2 else len(text)
        carry = text[cut:]
        yield n, text[:cut], False


def read_text(path: Path, encoding: str) -> str:
    data = path.read_bytes()
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise CmedbertError(f"{path}:{line}: cannot decode as {encoding} (set the source's encoding)") from None


# --------------------------------------------------------------------------- speaker labels
_PATIENT = re.compile(r"^(?:病人|患者|用户|病友|咨询者|提问者|问)[：:]\s*", re.M)
_DOCTOR = re.compile(r"^(?:医生|大夫|医师|答)[：:]\s*", re.M)
_HAS_LABEL = re.compile(r"^(?:病人|患者|医生)[：:]", re.M)


def normalize_speakers(text: str) -> str:
    """Line-initial speaker labels -> ``患者：`` / ``医生：``."""
    return _DOCTOR.sub("医生：", _PATIENT.sub("患者：", text))


def render_turns(turns: list[tuple[str, str]], labels: bool = True) -> str:
    """[(speaker 'p'|'d', text)] -> one turn per line, labelled unless ``labels`` is False."""
    out = []
    for who, text in turns:
        text = text.strip()
        if not text:
            continue
        out.append((("患者：" if who == "p" else "医生：") + text) if labels else text)
    return "\n".join(out)


def render_qa(question: str, answer: str, labels: bool = True) -> str:
    """A QA pair. A question that is already a labelled dialogue (``病人：…\\n医生：``) keeps its
    turns and gets the answer appended as the doctor's turn."""
    q = question.strip()
    if labels and _HAS_LABEL.search(q):
        q = normalize_speakers(q)
        q = re.sub(r"\n?医生：\s*$", "", q).rstrip()
        return q + "\n医生：" + answer.strip()
    return render_turns([("p", q), ("d", answer)], labels)


# --------------------------------------------------------------------------- CSV
def iter_csv(path: Path, encoding: str, required: list[str], max_records: int = 0) -> Iterator[tuple[int, dict[str, str] | Bad]]:
    """(start line, row dict | Bad) for a CSV with a header. Missing required columns: error."""
    bad_lines: set[int] = set()

    def lines() -> Iterator[str]:
        for n, line in iter_lines(path, encoding):
            if line is None:
                bad_lines.add(n)
                yield "\n"
            else:
                yield line

    reader = csv.reader(lines())
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as exc:
        raise CmedbertError(f"{path}:1: cannot parse the CSV header: {exc}") from None
    if 1 in bad_lines:
        raise CmedbertError(f"{path}:1: the header does not decode as {encoding} (set the source's encoding, e.g. gb18030)")
    header = [h.strip().lstrip("\ufeff") for h in header]
    missing = [c for c in required if c not in header]
    if missing:
        raise CmedbertError(f"{path}:1: CSV lacks column(s) {missing}; header is {header[:12]}")
    idx = {c: header.index(c) for c in header if c}
    prev = reader.line_num
    n_rows = 0
    while True:
        start = prev + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            prev = reader.line_num
            yield start, Bad("bad_csv_row", start, str(exc))
            continue
        end = prev = reader.line_num
        if not any(cell.strip() for cell in row):
            continue  # blank line, not a record
        n_rows += 1
        if max_records and n_rows > max_records:
            break
        if any(n in bad_lines for n in range(start, end + 1)):
            yield start, Bad("decode_error", start, f"not {encoding}")
            continue
        if len(row) < len(header) and any(idx[c] >= len(row) for c in required):
            yield start, Bad("missing_fields", start, f"{len(row)} of {len(header)} columns")
            continue
        yield start, {c: (row[i] if i < len(row) else "") for c, i in idx.items()}


def _col(src: SourceConfig, role: str, default: str) -> str:
    return src.columns.get(role, default)


def _labels(src: SourceConfig) -> bool:
    return src.labels


def read_toyhom_csv(path: Path, src: SourceConfig, enc: str) -> Iterator[Item]:
    cols = {r: _col(src, r, r) for r in ("title", "ask", "answer")}
    for line, row in iter_csv(path, enc, list(cols.values()), src.max_records):
        if isinstance(row, Bad):
            yield row
            continue
        title, ask, answer = (row[cols[r]].strip() for r in ("title", "ask", "answer"))
        if not answer or not (ask or title):
            yield Bad("missing_fields", line, "empty ask/answer")
            continue
        question = ask if title and ask.startswith(title) else "\n".join(x for x in (title, ask) if x)
        yield Record(render_qa(question, answer, _labels(src)), line)


def read_qa_csv(path: Path, src: SourceConfig, enc: str) -> Iterator[Item]:
    q, a = _col(src, "question", "question"), _col(src, "answer", "answer")
    for line, row in iter_csv(path, enc, [q, a], src.max_records):
        if isinstance(row, Bad):
            yield row
            continue
        # Literal "\n" escapes in cells (BianQue's cMedialog) are line breaks between turns.
        question, answer = row[q].replace("\\n", "\n"), row[a].replace("\\n", "\n")
        if not question.strip() or not answer.strip():
            yield Bad("missing_fields", line, "empty question/answer")
            continue
        yield Record(render_qa(question, answer, _labels(src)), line)


# --------------------------------------------------------------------------- block text formats
def _blocks(path: Path, enc: str, starts: Callable[[str], bool] | None = None) -> Iterator[tuple[int, list[str]] | Bad]:
    """Blocks of lines: separated by blank lines, or (with ``starts``) starting at a marker line."""
    block: list[str] = []
    first = 0
    for n, line in iter_lines(path, enc):
        if line is None:
            yield Bad("decode_error", n, f"not {enc}")
            continue
        line = line.rstrip("\r\n")
        boundary = starts(line) if starts else not line.strip()
        if boundary:
            if block:
                yield first, block
            block, first = ([line], n) if starts else ([], 0)
            continue
        if not block and not line.strip():
            continue
        if not block:
            first = n
        block.append(line)
    if block:
        yield first, block


def read_toyhom_txt(path: Path, src: SourceConfig, enc: str) -> Iterator[Item]:
    """Blocks of ``title,ask`` then the answer line(s), separated by blank lines."""
    n = 0
    for blk in _blocks(path, enc):
        if isinstance(blk, Bad):
            yield blk
            continue
        line, lines = blk
        n += 1
        if src.max_records and n > src.max_records:
            break
        if len(lines) < 2:
            yield Bad("bad_record", line, "block without an answer line")
            continue
        title, _, ask = lines[0].partition(",")
        question = ask if ask.startswith(title) else "\n".join(x for x in (title, ask) if x.strip())
        yield Record(render_qa(question, "\n".join(lines[1:]), _labels(src)), line)


_TURN = re.compile(r"^(病人|患者|医生)[：:]\s*(.*)$")


def read_meddialog(path: Path, src: SourceConfig, enc: str) -> Iterator[Item]:
    """COVID-Dialogue / MedDialog-zh blocks: ``id=N``, URL, optional ``Doctor faculty`` (skipped),
    ``Description`` lines, ``Dialogue`` with ``病人：`` / ``医生：`` turns (label alone on its line or
    followed by the text), optional ``Diagnosis and suggestions`` (kept after the dialogue)."""
    n = 0
    for blk in _blocks(path, enc, starts=lambda s: s.startswith("id=")):
        if isinstance(blk, Bad):
            yield blk
            continue
        line, lines = blk
        if not lines[0].startswith("id="):
            continue  # preamble before the first block
        n += 1
        if src.max_records and n > src.max_records:
            break
        desc: list[str] = []
        turns: list[tuple[str, str]] = []
        summary: list[str] = []
        section = ""
        for s in lines[1:]:
            t = s.strip()
            if t in ("Description", "Dialogue", "Doctor faculty", "Diagnosis and suggestions"):
                section = t
                continue
            if not t or (not section and t.startswith("http")):
                continue
            if section == "Dialogue":
                m = _TURN.match(t)
                if m:
                    turns.append(("d" if m.group(1) == "医生" else "p", m.group(2)))
                elif turns:
                    who, prev = turns[-1]
                    turns[-1] = (who, (prev + "\n" + t) if prev else t)
            elif section == "Description":
                desc.append(t)
            elif section == "Diagnosis and suggestions":  # the doctor's summary
                summary.append(t)
            # "Doctor faculty" (hospital and department) is not text of the consultation
        if not turns and not desc:
            yield Bad("bad_record", line, "dialogue block without Description or Dialogue")
            continue
        body = render_turns(turns, _labels(src))
        yield Record("\n".join(desc + ([body] if body else []) + summary), line)


# --------------------------------------------------------------------------- JSON
def is_json_array(path: Path) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(4096)
    return head.lstrip(codecs.BOM_UTF8).lstrip().startswith(b"[")


def _json_lines(path: Path, enc: str, span: Span | None, max_records: int) -> Iterator[tuple[int, str] | Bad]:
    """(line number, line) of the non-empty lines (at most ``max_records``, 0 = all); an
    undecodable line is a ``decode_error`` drop, a line over :data:`MAX_JSON_LINE_BYTES` is
    skipped unread as a ``record_too_long`` drop."""
    n, skipping = 0, None
    for lineno, raw, last in _line_pieces(path, span, MAX_JSON_LINE_BYTES):
        if skipping is not None:
            skipping += len(raw)
            if last:
                n += 1
                if max_records and n > max_records:
                    return
                yield Bad("record_too_long", lineno, f"JSON line of {skipping} bytes > {MAX_JSON_LINE_BYTES}")
                skipping = None
            continue
        if not last:
            skipping = len(raw)
            continue
        if lineno == 1 and raw.startswith(codecs.BOM_UTF8):
            raw = raw[3:]
        codec = "utf-8" if enc.lower().replace("_", "-") in ("utf-8-sig", "utf8-sig") else enc
        try:
            line = raw.decode(codec)
        except UnicodeDecodeError:
            line = None
        if line is not None and not line.strip():
            continue
        n += 1
        if max_records and n > max_records:
            return
        yield Bad("decode_error", lineno, f"not {enc}") if line is None else (lineno, line)


def iter_json_items(path: Path, enc: str, max_records: int = 0, span: Span | None = None) -> Iterator[tuple[int, Any] | Bad]:
    """Items of a JSON array file (whole-file parse; error names the line) or of JSON lines
    (all of them, or those of one ``span``)."""
    if span is None and is_json_array(path):
        text = read_text(path, enc).lstrip("\ufeff")
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CmedbertError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg}); a JSON array file must parse as a whole") from None
        for i, item in enumerate(data, 1):
            if max_records and i > max_records:
                break
            yield i, item
        return
    for it in _json_lines(path, enc, span, max_records):
        if isinstance(it, Bad):
            yield it
            continue
        lineno, line = it
        try:
            yield lineno, json.loads(line)
        except json.JSONDecodeError as exc:
            yield Bad("bad_json", lineno, exc.msg)


def _s(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, list):
        return "\n".join(_s(x) for x in v if _s(x))
    return str(v)


_CHATML = re.compile(r"^\s*(?:<s>)?\s*(?:问|Q|问题)[：:]\s*|\s*(?:答|A)[：:]\s*(?:</s>)?\s*$")
_HUMAN = {"human", "user", "patient", "患者", "病人"}
_BOT = {"gpt", "assistant", "bot", "doctor", "医生", "model"}


def instruction_text(obj: Any, src: SourceConfig) -> str | None:
    """Render one instruction-style record, or None if no known layout fits."""
    if not isinstance(obj, dict):
        return None
    labels = _labels(src)
    conv_key = _col(src, "conversations", "conversations")
    if isinstance(obj.get(conv_key), list):
        turns = []
        for t in obj[conv_key]:
            if not isinstance(t, dict):
                return None
            who = str(t.get("from", t.get("role", ""))).lower()
            if who in _HUMAN:
                turns.append(("p", _s(t.get("value", t.get("content")))))
            elif who in _BOT:
                turns.append(("d", _s(t.get("value", t.get("content")))))
        return render_turns(turns, True) if turns else None
    pk, rk = src.columns.get("prompt"), src.columns.get("response")
    if pk and rk:
        if pk not in obj or rk not in obj:
            return None
        return render_qa(_s(obj[pk]), _s(obj[rk]), labels)
    ikey = "instruction" if "instruction" in obj else "instruct"  # CMtMedQA has both spellings
    if ikey in obj and "output" in obj:
        prompt = "\n".join(x for x in (_s(obj[ikey]).strip(), _s(obj.get("input")).strip()) if x)
        turns: list[tuple[str, str]] = []
        for pair in obj.get("history") or []:
            if isinstance(pair, (list, tuple)) and len(pair) == 2:
                turns += [("p", _s(pair[0])), ("d", _s(pair[1]))]
        turns += [("p", prompt), ("d", _s(obj["output"]))]
        return render_turns(turns, labels)
    for qk, ak in (("query", "response"), ("问", "答"), ("question", "answer"), ("prompt", "response")):
        if qk in obj and ak in obj:
            return render_qa(_CHATML.sub("", _s(obj[qk])), _s(obj[ak]), labels)
    return None


def read_instruction_jsonl(path: Path, src: SourceConfig, enc: str, span: Span | None = None) -> Iterator[Item]:
    for it in iter_json_items(path, enc, src.max_records, span):
        if isinstance(it, Bad):
            yield it
            continue
        line, obj = it
        text = instruction_text(obj, src)
        if text is None:
            yield Bad("bad_record", line, "no instruction/output, conversations or question/answer fields")
        else:
            yield Record(text, line)


# --------------------------------------------------------------------------- plain text
def read_plain_text(path: Path, src: SourceConfig, enc: str, span: Span | None = None,
                    segment_bytes: int = SEGMENT_BYTES) -> Iterator[Item]:
    """One record per non-empty line (or per paragraph with ``paragraphs``). A line longer than
    ``segment_bytes`` is read in segments: the first is the record, the others come with
    ``continued=True`` (pieces of the same document), so memory does not grow with the line."""
    n = 0
    if src.paragraphs:
        for blk in _blocks(path, enc):
            if isinstance(blk, Bad):
                yield blk
                continue
            n += 1
            if src.max_records and n > src.max_records:
                break
            yield Record("\n".join(blk[1]), blk[0])
        return
    started = False  # a segment of the current line was yielded
    for lineno, text, last in iter_line_segments(path, enc, span, segment_bytes):
        if text is None:
            if not started:
                n += 1
                if src.max_records and n > src.max_records:
                    return
            yield Bad("decode_error", lineno, f"not {enc}", continued=started)
        elif text.strip():
            if not started:
                n += 1
                if src.max_records and n > src.max_records:
                    return
            yield Record(text.rstrip("\r\n") if last else text, lineno, continued=started)
            started = True
        if last:
            started = False


# --------------------------------------------------------------------------- text fields of JSON records
def read_json_text(path: Path, src: SourceConfig, enc: str, span: Span | None = None) -> Iterator[Item]:
    """Generic JSON array / JSON lines: the document is the string at ``columns.text`` (several
    keys separated by commas are joined by newlines), e.g. the general-domain CLUE files."""
    keys = [k.strip() for k in src.columns.get("text", "text").split(",") if k.strip()]
    for it in iter_json_items(path, enc, src.max_records, span):
        if isinstance(it, Bad):
            yield it
            continue
        line, obj = it
        if not isinstance(obj, dict) or not any(isinstance(obj.get(k), str) for k in keys):
            yield Bad("bad_record", line, f"no string field {keys}")
            continue
        yield Record("\n".join(obj[k] for k in keys if isinstance(obj.get(k), str) and obj[k].strip()), line)


def chunkable(src: SourceConfig, path: Path) -> bool:
    """Line-based inputs whose readers accept a :class:`Span` (one record per line)."""
    if src.type in ("kg_dict", "kg_terms_freq"):
        return True
    if src.type == "plain_text":
        return not src.paragraphs
    if src.type in ("instruction_jsonl", "json_text"):
        return not is_json_array(path)
    return False
