"""Property-based: whatever bytes a source file holds (random bytes, text in a random encoding,
truncated JSON / CSV / dialogue blocks, very long lines), every reader and the cleaning chain
either count each record (kept or dropped with a reason) or stop with one clear line
(:class:`CmedbertError` without a newline), and ``records_in == records_out + sum(dropped)``.

Each example is a real build (:func:`corpus.build.main`) of the fuzzed file next to a small
well-formed file (so a build whose fuzzed file yields nothing still has output to count).
Bounded for CI: a few examples per source type, no deadline (a build takes ~0.1 s).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cmedbert.config import from_dict
from cmedbert.corpus import build
from cmedbert.corpus.clean import CleaningConfig, Filters, normalize, split_long
from cmedbert.corpus.config import CorpusConfig
from cmedbert.errors import CmedbertError
from long_text import long_line

TYPES = ["toyhom_csv", "toyhom_txt", "meddialog", "qa_csv", "instruction_jsonl", "plain_text", "json_text",
         "kg_dict", "kg_terms_freq", "kg_triples", "kg_table"]
SUFFIX = {"toyhom_csv": ".csv", "qa_csv": ".csv", "kg_table": ".csv", "instruction_jsonl": ".jsonl",
          "json_text": ".jsonl", "kg_triples": ".json"}
ENCODINGS = ["utf-8", "utf-8-sig", "gb18030", "big5", "latin-1", "shift_jis", "utf-16"]
GOOD = "高血压患者应当低盐饮食，按时服用降压药物，并且每周测量血压两到三次。\n" * 2
QA = ("我最近头痛头晕，血压160/100mmHg，应该怎么办？", "建议低盐饮食，规律服用降压药，两周后复查。")

# text that looks like the formats: CJK, ASCII punctuation that matters to CSV/JSON, newlines
ALPHABET = st.sampled_from(list("患者医生高血压糖尿病头痛发热咳嗽：，。？！\"',{}[]:\n\r\t =idDialogueDescription病人")
                           + ["\u3000", "\ufeff", "\x00", "\ud7ff", "😀"])
fuzz_text = st.text(alphabet=ALPHABET, max_size=400)


def well_formed(kind: str, n: int) -> str:
    q, a = QA
    rows = {
        "toyhom_csv": lambda: "department,title,ask,answer\n" + "".join(f"内科,头痛{i},{q},{a}\n" for i in range(n)),
        "qa_csv": lambda: "question,answer\n" + "".join(f'"{q}{i}","{a}"\n' for i in range(n)),
        "kg_table": lambda: "name,symptom,cure_way\n" + "".join(f"病{i},头痛 头晕,药物治疗\n" for i in range(n)),
        "toyhom_txt": lambda: "".join(f"头痛{i},{q}\n{a}\n\n" for i in range(n)),
        "meddialog": lambda: "".join(f"id={i}\nhttps://x/{i}\n\nDescription\n{q}\n\nDialogue\n病人：\n{q}\n医生：\n{a}\n\n"
                                     for i in range(n)),
        "instruction_jsonl": lambda: "".join(json.dumps({"instruction": q + str(i), "input": "", "output": a},
                                                        ensure_ascii=False) + "\n" for i in range(n)),
        "json_text": lambda: "".join(json.dumps({"text": q + a + str(i)}, ensure_ascii=False) + "\n" for i in range(n)),
        "kg_triples": lambda: json.dumps([{"text": "x", "spo_list": [[f"病{i}", "症状", "头痛"] for i in range(n)]}],
                                         ensure_ascii=False),
        "kg_dict": lambda: "".join(f"疾病{i}\n" for i in range(n)),
        "kg_terms_freq": lambda: "".join(f"疾病{i}\t{i + 1}\n" for i in range(n)),
        "plain_text": lambda: "".join(f"{q}{a}{i}\n" for i in range(n)),
    }
    return rows[kind]()


@st.composite
def file_bytes(draw, kind: str) -> bytes:
    how = draw(st.sampled_from(["bytes", "encoded", "truncated", "huge_line", "mixed"]))
    if how == "bytes":
        return draw(st.binary(max_size=3000))
    if how == "encoded":
        text = draw(st.one_of(fuzz_text, st.builds(well_formed, st.just(kind), st.integers(0, 5))))
        return text.encode(draw(st.sampled_from(ENCODINGS)), errors="ignore")
    base = well_formed(kind, draw(st.integers(1, 6))).encode("utf-8")
    if how == "truncated":
        return base[: draw(st.integers(0, len(base)))]
    if how == "huge_line":  # one long line of varied text (0.3-0.6 M characters: > 1024 pieces of max_chars)
        line = long_line(draw(st.integers(800_000, 1_600_000)), seed=draw(st.integers(0, 1000))).encode()
        cut = draw(st.integers(0, len(base)))
        return base[:cut] + line + base[cut:]
    junk = draw(fuzz_text).encode(draw(st.sampled_from(ENCODINGS)), errors="ignore")  # garbage spliced in
    cut = draw(st.integers(0, len(base)))
    return base[:cut] + junk + base[cut:]


def check_build(kind: str, data: bytes) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="fuzz-"))
    try:
        fuzzed = tmp / f"fuzzed{SUFFIX.get(kind, '.txt')}"
        fuzzed.write_bytes(data)
        good = tmp / "good.txt"
        good.write_text(GOOD, encoding="utf-8")
        extra = {"emit": "sentences"} if kind in ("kg_dict", "kg_terms_freq") else {}
        cfg = from_dict(CorpusConfig, {
            "sources": [{"name": "fuzzed", "type": kind, "paths": [str(fuzzed)], **extra},
                        {"name": "good", "type": "plain_text", "paths": [str(good)]}],
            "workers": 1, "progress": False, "chunk_mb": 0.5, "cleaning": {"max_chars": 200}})
        try:
            manifest = build.main(cfg, tmp / "out")
        except CmedbertError as exc:
            assert "\n" not in str(exc), str(exc)  # one clear line
            return
        c = manifest["counts"]
        assert c["records_in"] == c["records_read"] + c["split_added"]
        assert c["records_in"] == c["records_out"] + sum(c["dropped"].values())
        for name, ps in c["per_source"].items():
            assert ps["records_in"] == ps["records_out"] + sum(ps["dropped"].values()), name
        drops = (tmp / "out" / "drops.jsonl").read_text(encoding="utf-8").splitlines()
        assert len(drops) == sum(c["dropped"].values())
        assert c["per_source"]["good"]["records_out"] >= 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.mark.parametrize("kind", TYPES)
def test_every_reader_counts_or_fails_in_one_line(kind):
    @settings(max_examples=12, deadline=None, database=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(data=file_bytes(kind))
    def run(data: bytes) -> None:
        check_build(kind, data)

    run()


@settings(max_examples=200, deadline=None, database=None, derandomize=True)
@given(text=st.text(max_size=3000), max_chars=st.integers(32, 500))
def test_cleaner_never_fails_and_split_pieces_fit(text, max_chars):
    cfg = CleaningConfig(max_chars=max_chars)
    norm = normalize(text, True)
    pieces = split_long(norm, max_chars)
    assert all(len(p) <= max_chars for p in pieces) and (len(pieces) == 1 or all(pieces))
    assert "".join("".join(p.split()) for p in pieces) == "".join(norm.split())  # nothing but spaces lost
    for p in pieces:
        Filters(cfg).reason(p)  # a reason or None, never an exception
