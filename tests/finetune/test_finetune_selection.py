"""Selection (best epoch, early stopping, learning rate) reads only the validation split carved
from train: corrupting the labels of the reported dev split changes the reported score and
nothing else. Also: size-class recipes, the three-way carve, data identity on every row."""

from __future__ import annotations

import json
import random

import pytest

from cmedbert.config import load_config
from cmedbert.finetune.config import FinetuneConfig, size_class
from cmedbert.finetune.predictions import read_predictions
from cmedbert.finetune.run import carve_split
from cmedbert.finetune.sweep import main
from cmedbert.finetune.selection import select_lr, select_rows
from cmedbert.finetune.tasks import QIC_LABELS, read_records
from finetune_fixtures import make_tiny_checkpoint, subset_task


@pytest.fixture(scope="module")
def tiny_ckpt(shared_data, tmp_path_factory):
    return make_tiny_checkpoint(shared_data / "vocab" / "bert-base-chinese", tmp_path_factory.mktemp("ck") / "tiny")


def _corrupt_qic_dev(folder):
    path = folder / "KUAKE-QIC" / "KUAKE-QIC_dev.json"
    recs = read_records(path)
    for r in recs:  # every label moved to the next class: all reported labels are wrong
        r["label"] = QIC_LABELS[(QIC_LABELS.index(r["label"]) + 1) % len(QIC_LABELS)]
    path.write_text(json.dumps(recs, ensure_ascii=False), encoding="utf-8")


def _selection(out, task):
    task_dir = out / "tiny" / task
    sel = json.loads((task_dir / "selection.json").read_text()) if (task_dir / "selection.json").is_file() else None
    run = task_dir / (f"lr_{sel['chosen_lr']:g}" if sel else "") / "seed_1"
    log = [{k: v for k, v in json.loads(x).items() if k not in ("seconds", "train_samples_s")}  # timing is not selection
           for x in (run / "train_log.jsonl").read_text().splitlines()]
    scores = json.loads((run / "dev_scores.json").read_text())
    return log, sel, scores


@pytest.mark.slow
def test_corrupting_the_reported_split_changes_no_selection(tiny_ckpt, shared_data, tmp_path):
    runs = {}
    for name in ("clean", "corrupt"):
        data = tmp_path / name / "cblue"
        subset_task(shared_data / "cblue", data, "KUAKE-QIC", {"train": 120, "dev": 40, "test": 8})
        if name == "corrupt":
            _corrupt_qic_dev(data)
        cfg = load_config(FinetuneConfig, None, [
            f"models=['{tiny_ckpt}']", "tasks=['KUAKE-QIC']", f"data_dir='{data}'", "seeds=[1]", "num_threads=1",
            "hp.epochs=3", "hp.batch_size=16", "hp.max_len=32", "hp.patience=1", "hp.lr_grid=[3e-3, 1e-4]"])
        main(cfg, tmp_path / name / "out")
        runs[name] = _selection(tmp_path / name / "out", "KUAKE-QIC")
    (log_a, sel_a, sc_a), (log_b, sel_b, sc_b) = runs["clean"], runs["corrupt"]
    assert sel_a is not None and sel_a == sel_b               # same validation scores, same chosen lr
    assert log_a == log_b                                      # same epochs, same early stop, same losses
    assert sc_a["valid_value"] == sc_b["valid_value"] and sc_a["hp"] == sc_b["hp"]
    assert sc_a["value"] != sc_b["value"]                      # only the reported score moved
    assert sc_b["value"] <= 1 - sc_a["value"] + 1e-9           # (predictions equal, labels all changed)
    rows = [json.loads(x) for x in (tmp_path / "clean" / "out" / "results.jsonl").read_text().splitlines()]
    assert {r["lr"] for r in rows} == {3e-3, 1e-4} and rows[0]["lr_grid"] == [3e-3, 1e-4]  # every run is kept
    assert {r["lr"] for r in select_rows(rows)} == {sel_a["chosen_lr"]}                      # the choice is a function
    assert (tmp_path / "clean" / "out" / "tiny" / "KUAKE-QIC" / "lr_0.0001" / "seed_1").is_dir()


@pytest.mark.slow
def test_three_way_carve_keeps_reported_records_out_of_selection(tiny_ckpt, shared_data, tmp_path):
    """CMeEE has no train file here: dev is carved into train / valid / reported dev. Emptying the
    entities of exactly the reported records changes nothing but the reported score."""
    logs = {}
    for name in ("clean", "corrupt"):
        data = tmp_path / name / "cblue"
        subset_task(shared_data / "cblue", data, "CMeEE", {"dev": 50, "test": 5})
        path = data / "CMeEE" / "CMeEE_dev.json"
        recs = read_records(path)
        _, reported = carve_split(list(range(len(recs))), 0.2, 0)
        if name == "corrupt":
            for i in reported:
                recs[i]["entities"] = []
            path.write_text(json.dumps(recs, ensure_ascii=False), encoding="utf-8")
        cfg = load_config(FinetuneConfig, None, [
            f"models=['{tiny_ckpt}']", "tasks=['CMeEE']", f"data_dir='{data}'", "seeds=[1]", "num_threads=1",
            "hp.epochs=2", "hp.batch_size=8", "hp.max_len=64", "hp.lr=1e-3", "hp.patience=0"])
        main(cfg, tmp_path / name / "out")
        logs[name] = _selection(tmp_path / name / "out", "CMeEE")
    assert logs["clean"][0] == logs["corrupt"][0]
    assert logs["clean"][2]["valid_value"] == logs["corrupt"][2]["valid_value"]
    sc = logs["clean"][2]
    assert sc["n_eval"] == 10 and sc["n_valid"] == 4 and sc["n_train"] == 36
    assert logs["corrupt"][2]["n_gold_items"] == 0 and sc["n_gold_items"] > 0


def test_the_three_splits_are_disjoint_and_fixed():
    recs = [{"text": str(i)} for i in range(100)]
    train_pool, dev = carve_split(recs, 0.2, 0)
    train, valid = carve_split(train_pool, 0.1, 0)
    texts = [{r["text"] for r in x} for x in (train, valid, dev)]
    assert sum(map(len, texts)) == 100 and len(set.union(*texts)) == 100
    assert (len(train), len(valid), len(dev)) == (72, 8, 20)
    assert carve_split(train_pool, 0.1, 0) == (train, valid)


def test_select_lr_reads_mean_validation_scores_only():
    assert select_lr({1e-3: [0.5, 0.7], 3e-4: [0.65, 0.6], 1e-4: [0.1, 0.2]}) == 3e-4
    assert select_lr({1e-3: [0.6], 3e-4: [0.6]}) == 1e-3  # a tie keeps the first listed
    # rows: per (checkpoint, task, recipe); the dev value plays no part, only valid_value does
    grid = [1e-3, 3e-4]
    rows = [dict(checkpoint=c, task="KUAKE-QIC", seed=s, split="dev", metric="accuracy", config_hash="h", lr=lr,
                 lr_grid=grid, value=dev, valid_value=val)
            for c, lr, s, dev, val in [("a", 1e-3, 1, 0.9, 0.5), ("a", 1e-3, 2, 0.9, 0.5), ("a", 3e-4, 1, 0.1, 0.6),
                                       ("a", 3e-4, 2, 0.1, 0.6), ("b", 1e-3, 1, 0.2, 0.7), ("b", 3e-4, 1, 0.8, 0.4)]]
    rows.append(dict(checkpoint="c", task="KUAKE-QIC", seed=1, split="dev", metric="accuracy", config_hash="h",
                     lr=1e-3, value=0.5))  # no grid: kept as is
    kept = select_rows(rows)
    assert {(r["checkpoint"], r["lr"]) for r in kept} == {("a", 3e-4), ("b", 1e-3), ("c", 1e-3)} and len(kept) == 4


def test_size_class_recipes_and_official_for_base():
    class C:
        def __init__(self, h):
            self.hidden_size = h

    assert [size_class(C(h)) for h in (64, 128, 256, 512, 768, 1024)] == ["tiny"] * 3 + ["small"] + ["base"] * 2
    cfg = load_config(FinetuneConfig, None, ["models=['x']"])
    assert cfg.task_hp("KUAKE-QIC", "base")["lr"] == 2e-5 and cfg.task_hp("KUAKE-QIC", "base")["epochs"] == 3
    tiny = cfg.task_hp("KUAKE-QIC", "tiny")
    assert 3e-4 <= tiny["lr"] <= 1e-3 and tiny["epochs"] > 3
    assert 3e-4 <= cfg.task_hp("CMeEE", "small")["lr"] <= 1e-3
    # the user's hp still wins over the size class; recipe=official switches the size class off
    assert load_config(FinetuneConfig, None, ["models=['x']", "hp.lr=7e-5"]).task_hp("KUAKE-QIC", "tiny")["lr"] == 7e-5
    assert load_config(FinetuneConfig, None, ["models=['x']", "recipe=official"]).task_hp("KUAKE-QIC", "tiny")["lr"] == 2e-5


def test_rows_record_the_task_data_identity(tiny_ckpt, shared_data, tmp_path):
    """A subset of official files is not the official data; the row says so and pins its hashes."""
    data = tmp_path / "cblue"
    subset_task(shared_data / "cblue", data, "KUAKE-QQR", {"train": 16, "dev": 8, "test": 4})
    out = tmp_path / "out"
    main(load_config(FinetuneConfig, None, [f"models=['{tiny_ckpt}']", "tasks=['KUAKE-QQR']", f"data_dir='{data}'",
                                            "hp.epochs=1", "seeds=[1]", "num_threads=1"]), out)
    row = json.loads((out / "results.jsonl").read_text().splitlines()[0])
    assert row["data"]["official"] is False
    assert set(row["data"]["files"]) == {"KUAKE-QQR_train.json", "KUAKE-QQR_dev.json", "KUAKE-QQR_test.json"}
    header, examples = read_predictions(out / row["predictions"])
    assert header["data"] == row["data"]["files"] and len(examples) == 8


def test_official_files_are_recognized_by_content(shared_data, tmp_path):
    import shutil

    from cmedbert.finetune.provenance import task_data_identity

    files = [shared_data / "cblue" / "KUAKE-QIC" / f"KUAKE-QIC_{s}.json" for s in ("train", "dev", "test")]
    assert task_data_identity(files)["official"] is True
    copy = tmp_path / "KUAKE-QIC_dev.json"
    shutil.copy(files[1], copy)
    assert task_data_identity([files[0], copy, files[2]])["official"] is True  # same bytes elsewhere: official
    copy.write_bytes(copy.read_bytes()[:-2] + b"]\n")
    assert task_data_identity([files[0], copy, files[2]])["official"] is False
    from cmedbert.demo import DEMO_DATA

    demo = sorted((DEMO_DATA / "cblue" / "CMeEE").glob("*.json"))
    assert demo and task_data_identity(demo)["official"] is False
