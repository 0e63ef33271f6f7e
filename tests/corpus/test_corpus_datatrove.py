"""The corpus build on datatrove executors: the local executor with several tasks, and the SLURM
executor against stand-in ``sbatch``/``srun``/``scontrol`` that run the submitted array tasks on
this machine, build the same corpus as the single-process reference build (``executor=inline``)."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import numpy as np
import pytest

from cmedbert.cli import main as cli_main
from cmedbert.config import from_dict
from cmedbert.corpus import build
from cmedbert.corpus.config import CorpusConfig, load
from cmedbert.corpus.distributed import SparseDedup, _exact_pairs, default_work_dir
from corpus_testdata import config_dict, write_sources

REPO = Path(__file__).resolve().parents[2]


def _same_corpus(a: Path, b: Path) -> None:
    ma = json.loads((a / "manifest.json").read_text(encoding="utf-8"))
    mb = json.loads((b / "manifest.json").read_text(encoding="utf-8"))
    assert ma["counts"] == mb["counts"]
    assert ma["dedup"] == mb["dedup"]
    assert [s["sha256"] for s in ma["shards"]] == [s["sha256"] for s in mb["shards"]]
    assert (a / "drops.jsonl").read_text(encoding="utf-8") == (b / "drops.jsonl").read_text(encoding="utf-8")


def test_exact_pairs_keep_the_earliest_document():
    keys = np.array([5, 7, 5, 9, 7, 5], dtype=np.uint64)
    idx = np.array([10, 11, 12, 13, 14, 15], dtype=np.int64)
    assert _exact_pairs(keys, idx).tolist() == [[12, 10], [15, 10], [14, 11]]


def test_sparse_dedup_reads_like_the_dense_arrays():
    rows = [{"unit": 0, "kept": 3, "source": "a"}, {"unit": 1, "kept": 0, "source": "b"},
            {"unit": 2, "kept": 4, "source": "c"}]
    d = SparseDedup({0: 0, 1: 3, 2: 3}, np.array([1, 5], np.int64), np.array([1, 2], np.int8),
                    np.array([0, 3], np.int64), {}, rows)
    assert d.reason[np.arange(7)].tolist() == [0, 1, 0, 0, 0, 2, 0]
    assert d.dup_of[5] == 3 and d.dup_of[4] == -1
    assert d.is_target(np.arange(7)).tolist() == [True, False, False, True, False, False, False]
    assert d.dropped_by_source == {"a": {"exact_duplicate": 1}, "c": {"near_duplicate": 1}}


def test_local_executor_two_tasks_equals_reference_build(tmp_path: Path):
    p = write_sources(tmp_path / "in")
    data = {**config_dict(p), "progress": False}
    ref = build.main(from_dict(CorpusConfig, {**data, "executor": "inline"}), tmp_path / "ref")
    got = build.main(from_dict(CorpusConfig, {**data, "executor": "local", "tasks": 2, "workers": 2}), tmp_path / "dt")
    assert got["counts"] == ref["counts"] and got["executor"] == {"kind": "local", "tasks": 2}
    _same_corpus(tmp_path / "ref", tmp_path / "dt")
    assert not default_work_dir(tmp_path / "dt").exists()  # intermediates removed after success


@pytest.mark.slow
def test_local_executor_on_shared_medical_corpus_equals_reference(tmp_path: Path, shared_data: Path):
    """The real medical corpus (dialogue, QA, KG; ~26 MB) with decontamination: 2 datatrove tasks
    keep exactly the documents of the reference build, exact and near duplicates alike."""
    cfg = REPO / "configs/corpus/shared-data.toml"
    common = [f"data_root={shared_data}", "progress=false", "workers=2"]
    assert cli_main(["corpus", "build", str(cfg), *common, "executor=inline", "--out", str(tmp_path / "ref")]) == 0
    assert cli_main(["corpus", "build", str(cfg), *common, "tasks=2", "--out", str(tmp_path / "dt")]) == 0
    _same_corpus(tmp_path / "ref", tmp_path / "dt")
    counts = json.loads((tmp_path / "dt" / "manifest.json").read_text(encoding="utf-8"))["counts"]
    assert counts["records_in"] == counts["records_out"] + sum(counts["dropped"].values())
    assert counts["dropped"].get("exact_duplicate", 0) > 0 and counts["dropped"].get("near_duplicate", 0) > 0


def test_failed_task_resumes_and_skips_finished_tasks(tmp_path: Path, monkeypatch):
    from cmedbert.corpus import distributed

    p = write_sources(tmp_path / "in")
    cfg = from_dict(CorpusConfig, {**config_dict(p), "progress": False, "executor": "local", "tasks": 2, "workers": 1})
    real = distributed.NearDedupStep.run_task
    calls: list[int] = []

    def broken(self, rank, world_size):
        raise RuntimeError("node lost")

    monkeypatch.setattr(distributed.NearDedupStep, "run_task", broken)
    with pytest.raises(build.CmedbertError, match="pass 2b.*node lost.*a re-run resumes"):
        build.main(cfg, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    work = default_work_dir(tmp_path / "out")
    assert len(list((work / "logs" / "pass1" / "completions").iterdir())) == 2

    pass1_runs: list[int] = []
    real_p1 = distributed.Pass1Step.run_task
    monkeypatch.setattr(distributed.Pass1Step, "run_task", lambda self, r, w: pass1_runs.append(r) or real_p1(self, r, w))
    monkeypatch.setattr(distributed.NearDedupStep, "run_task", lambda self, r, w: calls.append(r) or real(self, r, w))
    build.main(cfg, tmp_path / "out")
    assert pass1_runs == [] and sorted(calls) == [0, 1]  # pass 1 was not redone, pass 2b was
    build.main(from_dict(CorpusConfig, {**config_dict(p), "progress": False, "executor": "inline"}), tmp_path / "ref")
    _same_corpus(tmp_path / "ref", tmp_path / "out")


# --------------------------------------------------------------------------- SLURM stand-ins
SBATCH = r'''#!/usr/bin/env python3
"""Stand-in sbatch: records the submission, then (unless told not to) runs every array task of
the script right away with the SLURM variables set, in order; prints the job id."""
import json, os, re, subprocess, sys
log = os.environ["FAKE_SLURM_LOG"]
args, script = sys.argv[1:-1], sys.argv[-1]
text = open(script).read()
n = sum(1 for _ in open(log)) if os.path.exists(log) else 0
job = 1000 + n
name = re.search(r"#SBATCH --job-name=(\S+)", text).group(1)
arr = re.search(r"#SBATCH --array=(\d+)-(\d+)", text)
with open(log, "a") as fh:
    fh.write(json.dumps({"job": job, "name": name, "args": args, "merge_stats": "merge_stats" in text,
                         "array": [int(arr.group(1)), int(arr.group(2))] if arr else None}) + "\n")
run = os.environ.get("FAKE_SLURM_RUN", "all")
if arr and (run == "all" or name.endswith(run)):
    only = os.environ.get("FAKE_SLURM_ONLY_INDEX")
    for i in range(int(arr.group(1)), int(arr.group(2)) + 1):
        if only is not None and i != int(only):
            continue
        env = dict(os.environ, SLURM_ARRAY_TASK_ID=str(i), SLURM_JOB_ID=str(job), SLURM_NODELIST="localhost",
                   SLURM_ARRAY_JOB_ID=str(job))
        subprocess.run(["bash", script], env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
print(f"Submitted batch job {job}")
'''
SRUN = '#!/usr/bin/env bash\n# stand-in srun: drop the options, run the command\nwhile [[ "$1" == -* ]]; do\n' \
       '  case "$1" in -n|-N) shift 2;; *) shift;; esac\ndone\nexec "$@"\n'
SCONTROL = '#!/usr/bin/env bash\necho localhost\n'


def _exe(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


@pytest.fixture
def fake_slurm(tmp_path: Path, monkeypatch):
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    _exe(bin_ / "sbatch", SBATCH.replace("#!/usr/bin/env python3", f"#!{sys.executable}"))
    _exe(bin_ / "srun", SRUN)
    _exe(bin_ / "scontrol", SCONTROL)
    for tool in ("launch_pickled_pipeline", "merge_stats"):  # datatrove's console scripts, this interpreter
        _exe(bin_ / tool, f"#!/usr/bin/env bash\nexec {sys.executable} -m datatrove.tools.{tool} \"$@\"\n")
    log = tmp_path / "sbatch.jsonl"
    monkeypatch.setenv("PATH", f"{bin_}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM_LOG", str(log))
    return lambda: [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []


def _slurm_config(tmp_path: Path) -> Path:
    p = write_sources(tmp_path / "in")
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({**config_dict(p), "progress": False}), encoding="utf-8")
    return cfg


def test_slurm_dry_run_prints_one_array_per_pass_and_writes_nothing(tmp_path: Path, fake_slurm, capsys):
    cfg = _slurm_config(tmp_path)
    before = sorted(tmp_path.rglob("*"))
    assert cli_main(["corpus", "build", str(cfg), "executor=slurm", "tasks=3", "slurm.partition=med",
                     "slurm.time=02:00:00", "--dry-run", "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert out.count("#!/bin/bash") == 5 and "#SBATCH --partition=med" in out and "#SBATCH --time=02:00:00" in out
    arrays = [line for line in out.splitlines() if line.startswith("#SBATCH --array=")]
    assert arrays == ["#SBATCH --array=0-2", "#SBATCH --array=0-2", "#SBATCH --array=0-2",
                      "#SBATCH --array=0-0", "#SBATCH --array=0-0"]
    assert "nothing was submitted" in out and fake_slurm() == []
    assert sorted(tmp_path.rglob("*")) == before  # no output, no work folder, no logs


@pytest.mark.slow
def test_slurm_executor_builds_the_corpus_and_rerun_skips_finished_tasks(tmp_path: Path, fake_slurm, monkeypatch):
    cfg = _slurm_config(tmp_path)
    out = tmp_path / "out"
    args = ["corpus", "build", str(cfg), "executor=slurm", "tasks=2", "--out", str(out)]
    # first submission: only array task 0 of pass 1 runs (the rest of the cluster "fails")
    monkeypatch.setenv("FAKE_SLURM_RUN", "pass1")
    monkeypatch.setenv("FAKE_SLURM_ONLY_INDEX", "0")
    assert cli_main(args) == 0
    first = fake_slurm()
    passes = [j for j in first if not j["merge_stats"]]
    assert [j["name"].rsplit("-", 1)[1] for j in passes] == ["pass1", "exact", "near", "cluster", "write"]
    assert [j["array"] for j in passes] == [[0, 1], [0, 1], [0, 1], [0, 0], [0, 0]]
    for prev, job in zip(passes, passes[1:]):  # each pass waits for the previous one
        assert f"--dependency=afterok:{prev['job']}" in job["args"]
    assert not out.exists()

    # re-run: only the unfinished pass-1 task is submitted again, then everything after it
    monkeypatch.setenv("FAKE_SLURM_RUN", "all")
    monkeypatch.delenv("FAKE_SLURM_ONLY_INDEX")
    assert cli_main(args) == 0
    second = [j for j in fake_slurm()[len(first):] if not j["merge_stats"]]
    assert [j["array"] for j in second] == [[0, 0], [0, 1], [0, 1], [0, 0], [0, 0]]
    work = default_work_dir(out)
    assert json.loads((work / "logs" / "pass1" / "ranks_to_run.json").read_text()) == [1]
    build.main(load(cfg, ["executor=inline"]), tmp_path / "ref")
    _same_corpus(tmp_path / "ref", out)



# --------------------------------------------------------------------------- steps for any pipeline
def test_medical_steps_compose_with_datatrove_writers_and_executor(tmp_path: Path):
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.writers import ParquetWriter
    import pyarrow.parquet as pq

    from cmedbert.corpus.steps import Decontaminate, MedicalFilters, MedicalReader, Normalize, ScrubPII
    from corpus_testdata import CONTAMINATED

    p = write_sources(tmp_path / "in")
    (tmp_path / "in" / "phone.txt").write_text("患者家属留言：复诊请联系我，电话13812345678，谢谢医生的耐心解答。\n",
                                               encoding="utf-8")
    sources = [{"name": "plain", "type": "plain_text", "paths": [str(p["plain_text"]), str(tmp_path / "in" / "phone.txt")]},
               {"name": "dialogue", "type": "toyhom_csv", "paths": [str(p["toyhom_csv"])]}]
    for src in sources:
        LocalPipelineExecutor(pipeline=[
            MedicalReader(src), Normalize(), ScrubPII(), MedicalFilters(), Decontaminate([str(p["cblue_dev"])]),
            ParquetWriter(str(tmp_path / "out" / src["name"])),
        ], tasks=2, workers=1, logging_dir=str(tmp_path / "logs" / src["name"])).run()
    docs = [row for f in sorted((tmp_path / "out").rglob("*.parquet")) for row in pq.read_table(f).to_pylist()]
    texts = [d["text"] for d in docs]
    assert any("<MOBILE>" in t for t in texts) and not any("13812345678" in t for t in texts)
    assert not any(CONTAMINATED in t for t in texts)
    assert {d["metadata"]["source"] for d in docs} == {"plain", "dialogue"}
    stats = json.loads((tmp_path / "logs" / "plain" / "stats.json").read_text())
    by_name = {s["name"].split(": ", 1)[1]: s["stats"] for s in stats}  # "TYPE: name"
    assert {"cmedbert medical reader", "cmedbert PII scrub", "cmedbert decontaminate"} <= set(by_name)
    total = lambda v: v["total"] if isinstance(v, dict) else v  # noqa: E731  (stats: plain counts or summaries)
    assert total(by_name["cmedbert PII scrub"]["pii_mobile"]) == 1
    decont = by_name["cmedbert decontaminate"]
    assert total(decont["dropped_decontaminated_KUAKE-QIC"]) == 1
