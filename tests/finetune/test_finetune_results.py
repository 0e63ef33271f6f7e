"""finetune.results: the one reader / aggregator / table of results.jsonl rows."""

from __future__ import annotations

import json
import statistics

import pytest

from cmedbert.errors import CmedbertError
from cmedbert.finetune import results


def _row(checkpoint="a", task="KUAKE-QIC", seed=1, split="dev", metric="accuracy", value=0.5, config_hash="h"):
    return dict(checkpoint=checkpoint, task=task, seed=seed, split=split, metric=metric, value=value,
                config_hash=config_hash)


def _write(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.mark.parametrize("bad,message", [
    ("{not json", "invalid JSON"),
    ('["a list"]', "must be a JSON object"),
    (json.dumps({k: v for k, v in _row().items() if k != "seed"}), "lacks seed"),
    (json.dumps(_row(value="0.5")), "not a finite number"),
    (json.dumps(_row(value=True)), "not a finite number"),
    ('{"checkpoint": "a", "task": "T", "seed": 1, "split": "dev", "metric": "m", "value": NaN}', "not a finite number"),
])
def test_bad_rows_name_file_and_line(tmp_path, bad, message):
    f = _write(tmp_path / "results.jsonl", [_row(), bad])
    with pytest.raises(CmedbertError, match=message) as exc:
        results.read_rows([f])
    assert str(exc.value).startswith(f"{f}:2")


def test_folder_means_its_results_file_and_a_missing_file_is_named(tmp_path):
    _write(tmp_path / "results.jsonl", [_row()])
    assert results.read_rows([tmp_path]) == [_row()]
    with pytest.raises(CmedbertError, match="results file not found"):
        results.read_rows([tmp_path / "nope"])


def test_summarize_counts_each_seed_once_last_wins():
    rows = [_row(seed=1, value=0.2), _row(seed=2, value=0.9), _row(seed=2, value=0.4), _row(seed=3, value=0.6),
            _row(checkpoint="b", value=0.1), _row(split="test", value=0.3)]
    by = {(s["checkpoint"], s["split"]): s for s in results.summarize(rows)}
    a = by[("a", "dev")]
    assert a["n"] == 3 and a["seeds"] == [1, 2, 3] and a["config_hashes"] == ["h"]
    assert a["mean"] == pytest.approx(0.4) and a["std"] == pytest.approx(statistics.stdev([0.2, 0.4, 0.6]))
    assert by[("b", "dev")]["std"] == 0.0 and by[("a", "test")]["n"] == 1
    (one,) = results.summarize([_row(checkpoint="x"), _row(checkpoint="y", seed=2, value=0.7)],
                               keys=("task", "split", "metric"))
    assert one["n"] == 2 and one["mean"] == pytest.approx(0.6)


def test_aggregate_keeps_primary_dev_metric_and_cblue_average_weighs_tasks_equally():
    rows = [_row(seed=1, value=0.8), _row(seed=2, value=0.9), _row(metric="f1", value=0.0),  # not QIC's metric
            _row(split="test", value=0.0), _row(task="CMeEE", metric="micro_f1", value=0.5),
            _row(task="NOT-A-TASK", metric="accuracy", value=1.0)]
    scores = results.aggregate(rows)
    assert scores == {"a": {"KUAKE-QIC": [0.8, 0.9], "CMeEE": [0.5]}}
    assert results.cblue_average(scores["a"]) == pytest.approx((0.85 + 0.5) / 2)  # not the mean of 3 values
    assert results.cblue_averages(scores) == {"a": pytest.approx(0.675)}


def test_render_without_primary_rows_is_an_error():
    with pytest.raises(CmedbertError, match="no dev rows"):
        results.render([_row(split="test")])
