"""One very long record: a single 5 MB line of medical text builds (no hashing-batch overflow),
its pieces are counted as splits, and a long line is read in segments of bounded size (so the
memory of a build does not grow with the line; benchmarks/corpus_long_line.py measures 50 MB)."""

from __future__ import annotations

import json
from pathlib import Path

from cmedbert.config import from_dict
from cmedbert.corpus import build
from cmedbert.corpus.config import CorpusConfig, SourceConfig
from cmedbert.corpus.io import iter_documents
from cmedbert.corpus.readers import MAX_JSON_LINE_BYTES, Bad, Record, read_json_text, read_plain_text
from long_text import long_line

def test_a_5mb_single_line_builds_and_counts_hold(tmp_path: Path):
    text = long_line(5_000_000)
    f = tmp_path / "one-line.txt"
    f.write_text("短句子一行，作为第一条普通记录，长度足够通过过滤。\n" + text + "\n", encoding="utf-8")
    cfg = from_dict(CorpusConfig, {"sources": [{"name": "plain", "type": "plain_text", "paths": [str(f)]}],
                                   "workers": 1, "progress": False, "pii": {"enabled": False},
                                   "cleaning": {"max_chars": 2000}})
    out = tmp_path / "corpus"
    manifest = build.main(cfg, out)
    c = manifest["counts"]
    assert c["records_read"] == 2  # two lines, whatever their length
    assert c["records_in"] == c["records_read"] + c["split_added"]
    assert c["records_in"] == c["records_out"] + sum(c["dropped"].values())
    docs = list(iter_documents(out))
    assert len(docs) == c["records_out"] > 1000  # > hashing.Batch.MAX_DOCS pieces of one record
    assert max(len(d["text"]) for d in docs) <= 2000
    kept = sum(len(d["text"]) for d in docs if d["doc_id"] != "plain:0:1")
    assert kept > 0.95 * len(text)  # the long line is kept, in pieces (only dedup may remove a few)


def test_a_long_plain_line_is_read_in_bounded_segments(tmp_path: Path):
    text = long_line(300_000, seed=1)
    f = tmp_path / "t.txt"
    f.write_text(text + "\nsecond line\n", encoding="utf-8")
    src = SourceConfig(name="s", type="plain_text", paths=[str(f)])
    items = list(read_plain_text(f, src, "utf-8", segment_bytes=16_000))
    assert all(isinstance(i, Record) for i in items)
    assert max(len(i.text.encode("utf-8")) for i in items) <= 2 * 16_000  # a segment + the carried tail
    assert [i.continued for i in items].count(False) == 2 and items[-1].text == "second line"
    assert "".join(i.text for i in items[:-1]) == text  # nothing lost at the cuts (incl. multi-byte chars)
    # cut after a sentence end, so an identifier is never cut in two
    assert all(i.text.endswith("。") for i in items[:-2])


def test_an_oversized_json_line_is_a_counted_drop(tmp_path: Path):
    f = tmp_path / "t.jsonl"
    with open(f, "w", encoding="utf-8") as fh:
        fh.write(json.dumps({"text": "第一条正常记录"}, ensure_ascii=False) + "\n")
        fh.write('{"text": "' + "长" * (MAX_JSON_LINE_BYTES // 3 + 10) + '"}\n')
        fh.write(json.dumps({"text": "第三条正常记录"}, ensure_ascii=False) + "\n")
    items = list(read_json_text(f, SourceConfig(name="s", type="json_text", paths=[str(f)]), "utf-8"))
    assert [type(i) for i in items] == [Record, Bad, Record]
    assert items[1].reason == "record_too_long" and items[1].line == 2 and items[2].line == 3
