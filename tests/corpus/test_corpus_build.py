"""End-to-end builds on tiny files of every source type; the CLI; bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cmedbert.cli import main as cli_main
from cmedbert.config import from_dict
from cmedbert.errors import CmedbertError
from cmedbert.corpus import build
from cmedbert.corpus.config import CorpusConfig, load
from cmedbert.corpus.io import iter_documents
from corpus_testdata import CONTAMINATED, config_dict, write_sources


def _cfg(p, **extra) -> CorpusConfig:
    return from_dict(CorpusConfig, config_dict(p, **extra))


def _drops(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "drops.jsonl").read_text(encoding="utf-8").splitlines()]


def _assert_accounting(manifest: dict, out: Path) -> None:
    c = manifest["counts"]
    assert c["records_in"] == c["records_read"] + c["split_added"]
    assert c["records_in"] == c["records_out"] + sum(c["dropped"].values())
    assert len(_drops(out)) == sum(c["dropped"].values())
    assert sum(s["rows"] for s in manifest["shards"]) == c["records_out"]
    for name, ps in c["per_source"].items():
        assert ps["records_in"] == ps["records_out"] + sum(ps["dropped"].values()), name


def test_build_every_source_type(tmp_path: Path):
    p = write_sources(tmp_path / "in")
    out = tmp_path / "corpus"
    manifest = build.main(_cfg(p), out)
    _assert_accounting(manifest, out)
    c = manifest["counts"]
    docs = list(iter_documents(out))
    by_source: dict[str, list[str]] = {}
    for d in docs:
        by_source.setdefault(d["source"], []).append(d["text"])
    assert set(by_source) == {"toyhom_csv", "toyhom_txt", "meddialog", "qa_csv", "sft", "triples", "plain"}
    assert len({d["doc_id"] for d in docs}) == len(docs)
    # dialogue/QA rendered with speaker labels; MedDialog's 病人 becomes 患者, faculty line dropped
    for name in ("toyhom_csv", "toyhom_txt", "meddialog", "qa_csv", "sft"):
        assert all("患者：" in t and "医生：" in t for t in by_source[name]), name
    assert not any("病人：" in t or "某医院" in t for t in by_source["meddialog"])
    assert any(t.startswith("疾病：") for t in by_source["meddialog"])
    assert len(by_source["toyhom_txt"]) == 2  # GB18030 detected
    assert not any(t.startswith("<s>") or "答：" in t for t in by_source["sft"])  # ChatMed prompt markup removed
    assert any(t.count("患者：") == 2 for t in by_source["sft"])  # history turns kept
    # KG: objects of one (subject, predicate) in one sentence; term lists add no documents
    assert "高血压的相关症状有头痛、头晕和心悸。高血压的治疗方法包括降压药物治疗。" in by_source["triples"]
    assert "糖尿病的并发症包括糖尿病肾病和视网膜病变。糖尿病的检查项目包括空腹血糖。" in by_source["triples"]
    assert c["per_source"]["terms"]["terms"] == 8 and c["per_source"]["terms"]["records_out"] == 0
    # bad JSON line logged with file and line; decontamination counted per task
    bad = [d for d in _drops(out) if d["reason"] == "bad_json"]
    assert len(bad) == 1 and bad[0]["file"] == str(p["instruction_jsonl"]) and bad[0]["line"] == 4
    assert c["decontaminated"] == {"KUAKE-QIC": 1}
    assert not any(CONTAMINATED in d["text"] for d in docs)
    assert manifest["decontam"]["tasks"] == ["KUAKE-QIC"]


def test_shards_load_with_datasets(tmp_path: Path):
    import datasets

    p = write_sources(tmp_path / "in")
    out = tmp_path / "corpus"
    manifest = build.main(_cfg(p, output={"shard_mb": 0.0005}), out)
    assert len(manifest["shards"]) > 1
    files = [str(out / s["path"]) for s in manifest["shards"]]
    ds = datasets.load_dataset("parquet", data_files=files, split="train")
    assert ds.column_names == ["text", "source", "doc_id"]
    assert len(ds) == manifest["counts"]["records_out"]
    assert [r["doc_id"] for r in iter_documents(out)] == ds["doc_id"]


def test_cli_build_and_stats(tmp_path: Path, capsys):
    p = write_sources(tmp_path / "in")
    cfg_path = tmp_path / "c.json"
    cfg_path.write_text(json.dumps(config_dict(p)), encoding="utf-8")
    out = tmp_path / "corpus"
    assert cli_main(["corpus", "build", str(cfg_path), "dedup.threshold=0.8", "--out", str(out)]) == 0
    assert json.loads((out / "config.json").read_text())["dedup"]["threshold"] == 0.8
    capsys.readouterr()
    assert cli_main(["corpus", "stats", str(out)]) == 0
    text = capsys.readouterr().out
    assert "dropped (reason)" in text and "decontaminated" in text and "toyhom_csv" in text
    assert cli_main(["corpus", "build", str(cfg_path), "--out", str(out)]) == 2  # refuses a non-empty folder


def test_paths_relative_to_config_and_data_root(tmp_path: Path, monkeypatch):
    data = tmp_path / "shared"
    (data / "corpus").mkdir(parents=True)
    (data / "corpus" / "a.txt").write_text("高血压患者应当低盐饮食并且按时服用降压药物。\n", encoding="utf-8")
    conf_dir = tmp_path / "configs"
    (conf_dir / "local").mkdir(parents=True)
    (conf_dir / "local" / "b.txt").write_text("糖尿病患者应当控制饮食并且规律监测血糖变化。\n", encoding="utf-8")
    (conf_dir / "c.toml").write_text(
        'progress = false\nworkers = 1\n'
        '[[sources]]\nname = "shared"\ntype = "plain_text"\npaths = ["${data_root}/corpus/*.txt"]\n'
        '[[sources]]\nname = "local"\ntype = "plain_text"\npaths = ["local/b.txt"]\n', encoding="utf-8")
    monkeypatch.setenv("CMEDBERT_SHARED_DATA", str(data))
    monkeypatch.chdir(tmp_path)
    m = build.main(load(conf_dir / "c.toml"), tmp_path / "out")
    assert m["counts"]["records_out"] == 2
    with pytest.raises(CmedbertError, match="matches no file"):
        build.main(load(conf_dir / "c.toml", [f"data_root={tmp_path / 'nowhere'}"]), tmp_path / "out2")
    assert not (tmp_path / "out2").exists()


# ----------------------------------------------------------------------------- bad input
def _no_partial_output(parent: Path, name: str) -> None:
    assert not (parent / name).exists()
    assert not [x for x in parent.iterdir() if x.name.startswith(f".{name}.tmp")]


def _one_source(tmp_path: Path, type_: str, path: Path, **src) -> CorpusConfig:
    return from_dict(CorpusConfig, {"sources": [{"name": "s", "type": type_, "paths": [str(path)], **src}],
                                    "workers": 1, "progress": False})


def test_gb18030_read_as_utf8_is_counted_per_line(tmp_path: Path):
    f = tmp_path / "gbk.txt"
    f.write_bytes("高血压患者应当低盐饮食并且按时服用降压药物。\n糖尿病患者应当控制饮食并且规律监测血糖。\n".encode("gb18030"))
    ok = tmp_path / "utf8.txt"
    ok.write_text("过敏性鼻炎患者外出时应当佩戴口罩并且避免接触花粉。\n", encoding="utf-8")
    cfg = from_dict(CorpusConfig, {"sources": [{"name": "s", "type": "plain_text", "paths": [str(f), str(ok)],
                                                "encoding": "utf-8"}], "workers": 1, "progress": False})
    m = build.main(cfg, tmp_path / "out")
    assert m["counts"]["dropped"] == {"decode_error": 2} and m["counts"]["records_out"] == 1
    assert [(d["file"], d["line"]) for d in _drops(tmp_path / "out")] == [(str(f), 1), (str(f), 2)]
    # auto-detection reads the same file correctly
    m = build.main(_one_source(tmp_path, "plain_text", f), tmp_path / "out2")
    assert m["counts"]["records_out"] == 2


def test_gb18030_csv_forced_utf8_is_a_clear_error(tmp_path: Path):
    f = tmp_path / "dlg.csv"
    f.write_bytes("科室,title,ask,answer\n内科,头痛,头痛三天了怎么办呢医生,建议先测量血压再决定\n".encode("gb18030"))
    with pytest.raises(CmedbertError, match=r"dlg\.csv:1: .*gb18030"):
        build.main(_one_source(tmp_path, "toyhom_csv", f, encoding="utf-8"), tmp_path / "out")
    _no_partial_output(tmp_path, "out")


def test_csv_missing_columns_is_a_clear_error(tmp_path: Path):
    f = tmp_path / "qa.csv"
    f.write_text("question,reply\n头痛怎么办,多休息\n", encoding="utf-8")
    with pytest.raises(CmedbertError, match=r"qa\.csv:1: CSV lacks column\(s\) \['answer'\]"):
        build.main(_one_source(tmp_path, "qa_csv", f), tmp_path / "out")
    _no_partial_output(tmp_path, "out")
    rc = cli_main(["corpus", "build", "sources=[{name='s',type='qa_csv',paths=['" + str(f) + "']}]",
                   "--out", str(tmp_path / "out")])
    assert rc == 2
    _no_partial_output(tmp_path, "out")


def test_short_rows_and_truncated_json_are_drops(tmp_path: Path):
    f = tmp_path / "qa.csv"
    f.write_text("question,answer\n头痛三天了怎么办呢医生您好,建议先测量血压再决定是否需要用药治疗\n只有问题没有答案\n", encoding="utf-8")
    m = build.main(_one_source(tmp_path, "qa_csv", f), tmp_path / "out")
    assert m["counts"]["dropped"] == {"missing_fields": 1} and m["counts"]["records_out"] == 1
    assert _drops(tmp_path / "out")[0]["line"] == 3
    j = tmp_path / "a.jsonl"
    j.write_text('{"instruction": "头痛三天了怎么办呢医生您好", "output": "建议先测量血压再决定是否需要用药"}\n{"instruction": "截', encoding="utf-8")
    m = build.main(_one_source(tmp_path, "instruction_jsonl", j), tmp_path / "out2")
    assert m["counts"]["dropped"] == {"bad_json": 1}
    d = _drops(tmp_path / "out2")[0]
    assert (d["reason"], d["file"], d["line"]) == ("bad_json", str(j), 2)


def test_broken_json_array_is_a_clear_error(tmp_path: Path):
    j = tmp_path / "arr.json"
    j.write_text('[\n  {"instruction": "头痛", "output": "休息"},\n  {"instruction": "发', encoding="utf-8")
    with pytest.raises(CmedbertError, match=r"arr\.json:3: invalid JSON"):
        build.main(_one_source(tmp_path, "instruction_jsonl", j), tmp_path / "out")
    _no_partial_output(tmp_path, "out")


def test_empty_file_is_a_logged_drop(tmp_path: Path):
    e = tmp_path / "empty.txt"
    e.write_bytes(b"")
    f = tmp_path / "ok.txt"
    f.write_text("高血压患者应当低盐饮食并且按时服用降压药物。\n", encoding="utf-8")
    cfg = from_dict(CorpusConfig, {"sources": [{"name": "s", "type": "plain_text", "paths": [str(e), str(f)]}],
                                   "workers": 1, "progress": False})
    m = build.main(cfg, tmp_path / "out")
    assert m["counts"]["dropped"] == {"empty_file": 1} and m["counts"]["records_out"] == 1
    assert _drops(tmp_path / "out") == [{"reason": "empty_file", "source": "s", "file": str(e), "line": 0,
                                         "detail": "file is empty"}]


def test_empty_result_is_a_clear_error(tmp_path: Path):
    f = tmp_path / "short.txt"
    f.write_text("太短\n也太短\n", encoding="utf-8")
    with pytest.raises(CmedbertError, match="no document survived: all 2 records were dropped \\(too_short 2\\)"):
        build.main(_one_source(tmp_path, "plain_text", f), tmp_path / "out")
    _no_partial_output(tmp_path, "out")


def test_big_line_files_are_chunked_with_true_line_numbers(tmp_path: Path):
    from cmedbert.corpus.build import plan_units, split_spans

    lines = [f"第{i}条：高血压患者第{i}次随访，血压{120 + i % 40}/{80 + i % 20}mmHg，继续服用氨氯地平片{5 + i % 3}mg。"
             for i in range(300)]
    lines[137] = "太短"
    f = tmp_path / "notes.txt"
    f.write_text("\n".join(lines) + "\n", encoding="utf-8")
    j = tmp_path / "qa.jsonl"
    j.write_text("".join(json.dumps({"instruction": f"问题{i}：我的血糖是{6 + i % 9}.{i % 10}mmol/L正常吗，需要复查吗",
                                     "output": f"回答{i}：空腹血糖偏高，建议第{i % 12 + 1}周复查糖化血红蛋白。"},
                                    ensure_ascii=False) + "\n" for i in range(200))
                 + '{"instruction": "截断\n', encoding="utf-8")
    spans = split_spans(f, 2000)
    assert len(spans) > 5 and spans[0].start == 0 and spans[-1].end == f.stat().st_size
    assert all(a.end == b.start for a, b in zip(spans, spans[1:]))
    data = f.read_bytes()
    assert all(data[: s.start].count(b"\n") + 1 == s.first_line for s in spans)

    def cfg(chunk_mb: float) -> CorpusConfig:
        return from_dict(CorpusConfig, {"sources": [{"name": "notes", "type": "plain_text", "paths": [str(f)]},
                                                    {"name": "qa", "type": "instruction_jsonl", "paths": [str(j)]}],
                                        "workers": 2, "progress": False, "chunk_mb": chunk_mb})

    assert len(plan_units(cfg(0.002))) > 10 and len(plan_units(cfg(0))) == 2
    whole = build.main(cfg(0), tmp_path / "whole")
    chunked = build.main(cfg(0.002), tmp_path / "chunked")
    assert chunked["counts"]["units"] > 10 and chunked["counts"]["files"] == 2
    for key in ("records_in", "records_out", "dropped", "bytes_in", "bytes_out"):
        assert chunked["counts"][key] == whole["counts"][key], key
    assert [d["text"] for d in iter_documents(tmp_path / "chunked")] == [d["text"] for d in iter_documents(tmp_path / "whole")]
    drops = {(d["reason"], Path(d["file"]).name, d["line"]) for d in _drops(tmp_path / "chunked")}
    assert drops == {(d["reason"], Path(d["file"]).name, d["line"]) for d in _drops(tmp_path / "whole")}
    assert ("too_short", "notes.txt", 138) in drops and ("bad_json", "qa.jsonl", 201) in drops
