"""The generic json_text source: a string field of JSON-lines / JSON-array records."""

from __future__ import annotations

import json

from cmedbert.corpus.build import main as build
from cmedbert.corpus.config import load
from cmedbert.corpus.io import iter_documents


def test_json_text_reads_fields_and_counts_bad_records(tmp_path):
    lines = [json.dumps({"sentence": f"今天的天气非常好，我们一起去公园散步吧，第{i}次。", "id": i}, ensure_ascii=False)
             for i in range(5)]
    lines.append(json.dumps({"id": 9}))  # no text field: a counted drop
    lines.append('{"sentence": "截断的')  # truncated JSON line: a counted drop
    (tmp_path / "a.json").write_text("\n".join(lines) + "\n", encoding="utf-8")
    cfg_path = tmp_path / "c.toml"
    cfg_path.write_text('workers = 1\nprogress = false\n[dedup]\nnear = false\n'
                        '[[sources]]\nname = "g"\ntype = "json_text"\npaths = ["a.json"]\ncolumns = { text = "sentence" }\n',
                        encoding="utf-8")
    manifest = build(load(cfg_path), tmp_path / "out")
    texts = [d["text"] for d in iter_documents(tmp_path / "out")]
    assert len(texts) == 5 and all(t.startswith("今天的天气") for t in texts)
    c = manifest["counts"]
    assert c["records_in"] == 7 and c["records_out"] == 5 and sum(c["dropped"].values()) == 2
