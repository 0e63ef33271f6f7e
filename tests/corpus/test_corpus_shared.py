"""The full shared-data build (configs/corpus/shared-data.toml): accounting, drop log, medical
content that must survive cleaning and PII scrubbing."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from cmedbert.cli import main as cli_main
from cmedbert.corpus.io import iter_texts
from cmedbert.corpus.readers import detect_encoding

pytestmark = pytest.mark.slow

# Dosages, lab values, dates and Latin names that occur in the shared medical corpus and must come
# out byte for byte (each is checked to occur in the raw input too, so the test cannot pass vacuously).
MUST_SURVIVE = [
    "0.5g", "5mg/kg", "60mg/kg", "15mg/kg", "0.3mg/kg", "11.1mmol/L", "8.5mmol/L", "6.1mmol/L", "7.1mmol/L",
    "140/90mmHg", "120/80mmHg", "90/60mmHg", "160/100mmHg", "38.5℃", "37.3℃", "39.5℃",
    "2020-03-19", "2020-03-23", "2019-09-21", "2017-06-07", "HBsAg", "HBeAg", "TSH 0.726", "FT4 25.84",
    "AFP3.06", "1.5×10^9/L", "2.5×10^12/L", "99.90%", "200IU", "400IU", "糖化血红蛋白7.2", "阿莫西林克拉维酸钾",
    "Alport综合征", "POEMS综合征", "HbA1c", "ALT:183", "HCG5096",
]


@pytest.fixture(scope="module")
def shared_corpus(shared_data, tmp_path_factory, repo_root) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("shared") / "corpus"
    rc = cli_main(["corpus", "build", str(repo_root / "configs/corpus/shared-data.toml"), "progress=false",
                   "workers=2", f"data_root={shared_data}", "--out", str(out)])
    assert rc == 0
    return out, json.loads((out / "manifest.json").read_text(encoding="utf-8"))


def test_accounting_invariant(shared_corpus):
    out, m = shared_corpus
    c = m["counts"]
    assert c["records_in"] == c["records_read"] + c["split_added"]
    assert c["records_in"] == c["records_out"] + sum(c["dropped"].values())
    drops = [json.loads(x) for x in (out / "drops.jsonl").read_text(encoding="utf-8").splitlines()]
    assert Counter(d["reason"] for d in drops) == Counter(c["dropped"])
    assert all(d["file"] and isinstance(d["line"], int) for d in drops)
    assert sum(s["rows"] for s in m["shards"]) == c["records_out"] == sum(1 for _ in iter_texts(out))
    for name, ps in c["per_source"].items():
        assert ps["records_in"] == ps["records_out"] + sum(ps["dropped"].values()), name
        assert ps["records_out"] > 0 or ps.get("terms", 0) > 0, name
    # every shared corpus/kg file is an input
    assert {Path(i["path"]).name for i in m["inputs"]} >= {"样例_内科5000-6000.csv", "COVID-Dialogue-Dataset-Chinese.txt",
                                                            "disease.csv", "THUOCL_medical.txt", "train_example.json"}
    # Toyhom's .txt is a subset of the CSV: the global exact dedup removes it
    assert c["per_source"]["toyhom_txt"]["dropped"].get("exact_duplicate", 0) > 3000
    assert c["decontaminated"] and sum(c["decontaminated"].values()) == c["dropped"]["decontaminated"]


def test_medical_content_survives(shared_corpus, shared_data):
    out, m = shared_corpus
    assert len(MUST_SURVIVE) >= 30
    raw = []
    for folder in ("corpus", "kg"):
        for f in sorted((shared_data / folder).rglob("*")):
            if f.is_file():
                raw.append(f.read_bytes().decode(detect_encoding(f), errors="replace"))
    raw_text = "\n".join(raw)
    text = "\n".join(iter_texts(out))
    for s in MUST_SURVIVE:
        assert s in raw_text, f"{s!r} is not in the shared data (bad test string)"
        assert s in text, f"{s!r} did not survive the corpus build"
    # the scrubber found only real identifiers on this corpus, not lab values
    assert sum(m["counts"]["pii"].values()) < 50
