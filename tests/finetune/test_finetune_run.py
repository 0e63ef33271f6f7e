"""End to end: every task fine-tuned with a tiny model on small subsets of the real files."""

from __future__ import annotations

import json

import pytest

from cmedbert.cli import main as cli_main
from cmedbert.config import load_config
from cmedbert.errors import CmedbertError
from cmedbert.finetune.config import FinetuneConfig
from cmedbert.finetune.sweep import main
from cmedbert.finetune.tasks import TASKS, read_records, validate_submission
from finetune_fixtures import make_tiny_checkpoint, subset_task

QUICK = ["hp.epochs=1", "hp.batch_size=16", "hp.max_len=64", "hp.patience=0", "seeds=[1]", "num_threads=1"]


@pytest.fixture(scope="module")
def tiny_ckpt(shared_data, tmp_path_factory):
    return make_tiny_checkpoint(shared_data / "vocab" / "bert-base-chinese", tmp_path_factory.mktemp("ck") / "tiny")


def _check_outputs(out, task, n_test):
    spec = TASKS[task]
    seed_dir = out / "tiny" / task / "seed_1"
    sub = seed_dir / spec.submission_name
    src = read_records(sub)  # the submission keeps every test record
    assert len(src) == n_test
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    prim = [r for r in rows if r["task"] == task and r["metric"] == spec.metric]
    assert len(prim) == 1 and 0.0 <= prim[0]["value"] <= 1.0 and prim[0]["split"] == "dev"
    assert set(prim[0]) >= {"checkpoint", "task", "seed", "split", "metric", "value", "config_hash"}
    scores = json.loads((seed_dir / "dev_scores.json").read_text())
    assert scores["metric"] == spec.metric
    assert json.loads((out / "manifest.json").read_text())["stage"] == "finetune"
    return sub


@pytest.mark.slow
@pytest.mark.parametrize("task", ["KUAKE-QIC", "KUAKE-QTR", "KUAKE-QQR", "CHIP-CTC"])
def test_classification_tasks_end_to_end(task, tiny_ckpt, shared_data, tmp_path):
    data = tmp_path / "cblue"
    subset_task(shared_data / "cblue", data, task, {"train": 64, "dev": 32, "test": 24})
    out = tmp_path / "out"
    cfg = load_config(FinetuneConfig, None, [f"models=['{tiny_ckpt}']", f"tasks=['{task}']", f"data_dir='{data}'"] + QUICK)
    main(cfg, out)
    sub = _check_outputs(out, task, 24)
    validate_submission(task, read_records(data / task / f"{task}_test.json"), sub)


def _write_sts(folder, n):
    """A small CHIP-STS folder in the official format (the task is not in the shared data)."""
    pairs = [("糖尿病能吃西瓜吗", "糖尿病人可以吃西瓜吗", "1"), ("高血压吃什么药", "高血压怎么预防", "0"),
             ("感冒发烧怎么办", "感冒发烧如何处理", "1"), ("乙肝会传染吗", "乙肝能治好吗", "0")]
    (folder / "CHIP-STS").mkdir(parents=True)
    for split, k in (("train", n), ("dev", n // 2), ("test", 6)):
        recs = []
        for i in range(k):
            a, b, lab = pairs[i % len(pairs)]
            r = {"id": f"s{i}", "text1": a, "text2": b, "category": "diabetes"}
            if split != "test":
                r["label"] = lab
            recs.append(r)
        (folder / "CHIP-STS" / f"CHIP-STS_{split}.json").write_text(json.dumps(recs, ensure_ascii=False), encoding="utf-8")


def test_chip_sts_from_official_format_via_cli(tiny_ckpt, tmp_path, capsys):
    data = tmp_path / "cblue"
    _write_sts(data, 32)
    out = tmp_path / "out"
    rc = cli_main(["finetune", f"models=['{tiny_ckpt}']", "tasks=['CHIP-STS']", f"data_dir='{data}'", *QUICK,
                   "hp.lr=1e-3", "hp.epochs=4", "--out", str(out)])
    assert rc == 0
    assert "CHIP-STS\tseed 1\tdev macro_f1" in capsys.readouterr().out
    sub = _check_outputs(out, "CHIP-STS", 6)
    validate_submission("CHIP-STS", read_records(data / "CHIP-STS" / "CHIP-STS_test.json"), sub)
    # a second run appends to a shared results file; `table` reads both runs
    shared = tmp_path / "sweep.jsonl"
    for i, seed in enumerate((1, 2)):
        assert cli_main(["finetune", f"models=['{tiny_ckpt}']", "tasks=['CHIP-STS']", f"data_dir='{data}'", *QUICK,
                         f"seeds=[{seed}]", f"results='{shared}'", "--out", str(tmp_path / f"sweep{i}")]) == 0
    assert len(shared.read_text().splitlines()) == 2
    assert cli_main(["finetune", "table", str(shared), "--out", str(tmp_path / "board")]) == 0
    md = (tmp_path / "board.md").read_text()
    assert "| tiny |" in md and "| 2 |" in md and " ± " in md


def test_bad_inputs_fail_before_training_and_leave_no_output(tiny_ckpt, shared_data, tmp_path, capsys):
    data = tmp_path / "cblue"
    subset_task(shared_data / "cblue", data, "KUAKE-QIC", {"train": 8, "dev": 4, "test": 4})
    # a QTR file put in the QIC slot
    qtr = read_records(shared_data / "cblue" / "KUAKE-QTR" / "KUAKE-QTR_dev.json")[:4]
    (data / "KUAKE-QIC" / "KUAKE-QIC_dev.json").write_text(json.dumps(qtr, ensure_ascii=False), encoding="utf-8")
    out = tmp_path / "out"
    base = ["finetune", f"models=['{tiny_ckpt}']", f"data_dir='{data}'", *QUICK, "--out", str(out)]
    assert cli_main(base[:1] + ["tasks=['KUAKE-QIC']"] + base[1:]) == 2
    err = capsys.readouterr().err
    assert "KUAKE-QIC_dev.json: record 0: not a KUAKE-QIC record" in err and "KUAKE-QTR" in err
    assert not out.exists() and not list(tmp_path.glob(".out.tmp-*"))
    assert cli_main(base[:1] + ["tasks=['KUAKE-QXX']"] + base[1:]) == 2
    assert "unknown CBLUE task 'KUAKE-QXX'" in capsys.readouterr().err
    assert cli_main(base[:1] + ["tasks=['CHIP-STS']"] + base[1:]) == 2
    assert "CHIP-STS is not in the shared data" in capsys.readouterr().err
    with pytest.raises(CmedbertError, match="no config.json"):
        main(load_config(FinetuneConfig, None, [f"models=['{tmp_path}']", "tasks=['KUAKE-QIC']", f"data_dir='{data}'"]), out)


@pytest.mark.slow
def test_cmeee_end_to_end_with_carve(tiny_ckpt, shared_data, tmp_path):
    data = tmp_path / "cblue"
    subset_task(shared_data / "cblue", data, "CMeEE", {"dev": 60, "test": 12})  # no train file: carve
    out = tmp_path / "out"
    cfg = load_config(FinetuneConfig, None, [f"models=['{tiny_ckpt}']", "tasks=['CMeEE']", f"data_dir='{data}'"]
                      + QUICK + ["hp.epochs=2", "hp.lr=1e-3"])
    main(cfg, out)
    sub = _check_outputs(out, "CMeEE", 12)
    validate_submission("CMeEE", read_records(data / "CMeEE" / "CMeEE_test.json"), sub)
    scores = json.loads((out / "tiny" / "CMeEE" / "seed_1" / "dev_scores.json").read_text())
    # three ways: 12 reported dev records, then 10 % of the other 48 for selection, 43 to train
    assert scores["carved"] and scores["n_train"] == 43 and scores["n_valid"] == 5 and scores["n_eval"] == 12
    man = json.loads((out / "manifest.json").read_text())
    assert man["tasks"]["CMeEE"]["carved"] is True
    # dev predictions are in the official format too, and scored with the official metric
    from cmedbert.finetune.metrics import score_files
    dev_pred = out / "tiny" / "CMeEE" / "seed_1" / "CMeEE_dev_pred.json"
    assert len(read_records(dev_pred)) == 12


def test_carve_is_deterministic_and_disjoint():
    from cmedbert.finetune.run import carve_split

    recs = [{"text": str(i)} for i in range(50)]
    a = carve_split(recs, 0.2, 0)
    assert a == carve_split(recs, 0.2, 0) and len(a[1]) == 10
    assert {r["text"] for r in a[0]} | {r["text"] for r in a[1]} == {str(i) for i in range(50)}
    assert not {r["text"] for r in a[0]} & {r["text"] for r in a[1]}
    assert carve_split(recs, 0.2, 1)[1] != a[1]


@pytest.mark.slow
def test_cmeie_end_to_end_jsonl_crlf(tiny_ckpt, shared_data, tmp_path):
    data = tmp_path / "cblue"
    subset_task(shared_data / "cblue", data, "CMeIE", {"dev": 50, "test": 10}, jsonl=True, extra=("53_schemas.json",))
    out = tmp_path / "out"
    cfg = load_config(FinetuneConfig, None, [f"models=['{tiny_ckpt}']", "tasks=['CMeIE']", f"data_dir='{data}'"]
                      + QUICK + ["hp.lr=1e-3"])
    main(cfg, out)
    sub = _check_outputs(out, "CMeIE", 10)
    assert not sub.read_text(encoding="utf-8").lstrip().startswith("[")  # JSON lines like the official files
    validate_submission("CMeIE", read_records(data / "CMeIE" / "CMeIE_test.json"), sub)


@pytest.mark.slow
def test_chip_cdn_end_to_end(tiny_ckpt, shared_data, tmp_path):
    data = tmp_path / "cblue"
    subset_task(shared_data / "cblue", data, "CHIP-CDN", {"train": 40, "dev": 16, "test": 10},
                extra=("国际疾病分类 ICD-10北京临床版v601.xlsx",))
    out = tmp_path / "out"
    cfg = load_config(FinetuneConfig, None, [f"models=['{tiny_ckpt}']", "tasks=['CHIP-CDN']", f"data_dir='{data}'"]
                      + QUICK + ["cdn.recall_k=8"])
    main(cfg, out)
    sub = _check_outputs(out, "CHIP-CDN", 10)
    recs = validate_submission("CHIP-CDN", read_records(data / "CHIP-CDN" / "CHIP-CDN_test.json"), sub)
    assert all(1 <= len(r["normalized_result"].split("##")) <= 3 for r in recs)
    scores = json.loads((out / "tiny" / "CHIP-CDN" / "seed_1" / "dev_scores.json").read_text())
    assert 0.0 < scores["valid_retrieval_recall_at_k"] <= 1.0


def test_tfidf_retrieval_ranks_the_closest_name_first():
    from cmedbert.finetune.cdn import TfidfIndex

    idx = TfidfIndex(["高血压", "2型糖尿病", "糖尿病性视网膜病变", "肺炎"], ngram=2)
    top = idx.search(["糖尿病视网膜病", "高血压病3级", "肺部感染"], 2)
    assert [r[0] for r in top] == [2, 0, 3] and top[0] == [2, 1]


@pytest.mark.parametrize("name", ["cblue.toml", "demo.toml"])
def test_shipped_configs_load(name, repo_root):
    cfg = load_config(FinetuneConfig, repo_root / "configs" / "finetune" / name,
                      ["models=['runs/a/model', 'ckpts/b']", "tasks_hp.KUAKE-QIC.lr=7e-5"])
    assert list(cfg.model_dirs()) == ["a", "b"]  # a pretrain run's model/ is named after the run
    assert cfg.task_hp("KUAKE-QIC")["lr"] == 7e-5
    assert cfg.task_hp("CMeEE")["epochs"] == (5 if name == "cblue.toml" else 3)
    with pytest.raises(CmedbertError, match="unknown CBLUE task 'QIC'"):
        load_config(FinetuneConfig, repo_root / "configs" / "finetune" / name, ["models=['x']", "tasks_hp.QIC.lr=1"])


def test_pretrain_run_checkpoint_is_pinned_by_its_manifest(tiny_ckpt, shared_data, tmp_path):
    import shutil

    from cmedbert.artifact import manifest_hash, write_manifest

    run = tmp_path / "run7"
    shutil.copytree(tiny_ckpt, run / "model")
    write_manifest(run, stage="pretrain", config={"x": 1})
    data = tmp_path / "cblue"
    subset_task(shared_data / "cblue", data, "KUAKE-QQR", {"train": 16, "dev": 8, "test": 4})
    out = tmp_path / "out"
    main(load_config(FinetuneConfig, None, [f"models=['{run / 'model'}']", "tasks=['KUAKE-QQR']",
                                            f"data_dir='{data}'"] + QUICK), out)
    man = json.loads((out / "manifest.json").read_text())
    assert man["inputs"][0]["manifest_hash"] == manifest_hash(run)
    assert (out / "run7" / "KUAKE-QQR" / "seed_1" / "KUAKE-QQR_test.json").is_file()


@pytest.mark.slow
def test_tiny_model_beats_majority_on_kuake_qic_subset(tiny_ckpt, shared_data, tmp_path):
    """Fast variant of benchmarks/finetune_qic.py: 1500 train records, 400 dev records."""
    from collections import Counter

    data = tmp_path / "cblue"
    subset_task(shared_data / "cblue", data, "KUAKE-QIC", {"train": 1500, "dev": 400, "test": 4})
    train = read_records(data / "KUAKE-QIC" / "KUAKE-QIC_train.json")
    dev = read_records(data / "KUAKE-QIC" / "KUAKE-QIC_dev.json")
    majority = Counter(r["label"] for r in train).most_common(1)[0][0]
    majority_acc = sum(r["label"] == majority for r in dev) / len(dev)
    res = main(load_config(FinetuneConfig, None, [
        f"models=['{tiny_ckpt}']", "tasks=['KUAKE-QIC']", f"data_dir='{data}'", "seeds=[1]", "num_threads=1",
        "hp.lr=2e-3", "hp.epochs=5", "hp.batch_size=32", "hp.max_len=32", "hp.patience=0"]), tmp_path / "out")
    acc = res["scores"][0]["value"]
    assert acc > majority_acc + 0.10, (acc, majority_acc)


def test_char_windows_map_spans_back_to_text_offsets(tiny_ckpt):
    import torch
    from transformers import AutoTokenizer

    from cmedbert.finetune.ner import NerWindows
    from cmedbert.finetune.spans import CharEncoder, decode_spans

    enc = CharEncoder(AutoTokenizer.from_pretrained(str(tiny_ckpt)))
    text = "x" * 70 + "肺炎 A"
    ids = enc.encode(text)
    assert len(ids) == len(text) + 2 and ids[-3] == enc.space  # one token per character, space kept
    recs = [{"text": text, "entities": [{"start_idx": 70, "end_idx": 71, "type": "dis"},
                                        {"start_idx": 70, "end_idx": 70, "type": "bod"}]}]
    w = NerWindows(recs, enc, 66, ["dis", "bod"], labeled=True)  # 64 characters per window
    assert w.origin == [(0, 0, 64), (0, 64, 10)]
    assert sorted(w.spans[1]) == [(0, 6, 7), (1, 6, 6)] and w.spans[0] == []
    labels = w.collate([1])["labels"].float()
    logits = labels * 2 - 1  # +1 on gold cells, -1 elsewhere
    got = decode_spans(logits, [10])[0]
    assert sorted((t, s + 64, e + 64) for t, s, e, _ in got) == [(0, 70, 71), (1, 70, 70)]
