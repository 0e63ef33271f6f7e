"""The fine-tune launch kind: a sweep as a SLURM array. The dry run names every job once and
writes only under --write-to; every value in the job script is quoted (the script is run with
bash and hostile values); the array tasks fill one results folder (stand-in sbatch, real sweep)."""

from __future__ import annotations

import itertools
import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from cmedbert.cli import main as cli_main

EVIL = """x y'z"w;$(touch pwned)`touch pwned`&&touch pwned|"""


def _write_configs(tmp: Path, models: dict[str, str], tasks: list[str], seeds: list[int], **launch) -> Path:
    ft = tmp / "ft.json"
    ft.write_text(json.dumps({"models": models, "tasks": tasks, "seeds": seeds}))
    cfg = {"kind": "finetune", "run_name": "sweep", "finetune_config": str(ft), **launch}
    path = tmp / "launch.json"
    path.write_text(json.dumps(cfg))
    return path


def test_dry_run_names_every_job_once_and_writes_only_under_write_to(tmp_path, capsys):
    cluster = tmp_path / "cluster"  # the cluster's workdir: a dry run must not create it
    cfg = _write_configs(tmp_path, {"a": "ck/a", "b": "ck/b"}, ["KUAKE-QIC", "CMeEE"], [1, 2],
                         workdir=str(cluster), output_root="runs")
    write_to = tmp_path / "launch-files"
    assert cli_main(["launch", str(cfg), "--dry-run", "--write-to", str(write_to)]) == 0
    text = capsys.readouterr().out
    jobs = re.findall(r"^job (\d+): (\S+) (\S+) seed (\d+)$", text, re.M)
    assert sorted(int(j[0]) for j in jobs) == list(range(8))
    combos = [(c, t, int(s)) for _, c, t, s in jobs]
    assert sorted(combos) == sorted(itertools.product(["a", "b"], ["KUAKE-QIC", "CMeEE"], [1, 2]))  # each once
    script = (write_to / "finetune.sbatch").read_text()
    assert "#SBATCH --array=0-7\n" in script
    assert '--job-index "$SLURM_ARRAY_TASK_ID"' in script
    assert len((write_to / "jobs.tsv").read_text().splitlines()) == 1 + 8
    assert f"--out {cluster}/runs/sweep " in text
    assert not cluster.exists()
    # (tmp/ is the launch tests' own tempfile folder, see conftest)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "tmp") == ["ft.json", "launch-files", "launch.json"]

    # without --write-to: a new temporary folder, printed; the dry run can be repeated
    seen = []
    for _ in range(2):
        assert cli_main(["launch", str(cfg), "--dry-run"]) == 0
        m = re.search(r"launch files written to (\S+)", capsys.readouterr().out)
        seen.append(Path(m.group(1)))
        assert (seen[-1] / "finetune.sbatch").is_file()
    assert seen[0] != seen[1] and not cluster.exists()


def test_a_control_character_is_refused_with_one_line(tmp_path, capsys):
    cfg = _write_configs(tmp_path, {"a": "ck/a"}, ["KUAKE-QIC"], [1], env={"X": "a\nb"})
    assert cli_main(["launch", str(cfg), "--dry-run", "--write-to", str(tmp_path / "w")]) == 2
    assert "control character" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()


def test_every_value_in_the_job_script_is_single_quoted(tmp_path):
    """Hostile values in every field that reaches the script; run it with bash."""
    work = tmp_path / f"work {EVIL}"
    work.mkdir()
    record = tmp_path / "argv.json"
    fake_python = tmp_path / f"py {EVIL}"
    fake_python.write_text(f"#!{sys.executable}\nimport json, os, sys\n"
                           f"json.dump({{'argv': sys.argv[1:], 'env': os.environ.get('EVIL_VALUE'), 'cwd': os.getcwd()}}, "
                           f"open({str(record)!r}, 'w'))\n")
    fake_python.chmod(fake_python.stat().st_mode | stat.S_IXUSR)
    ft_name = f"ft {EVIL}.json"
    (work / ft_name).write_text(json.dumps({"models": {"a": "ck/a"}, "tasks": ["KUAKE-QIC"], "seeds": [1, 2]}))
    override = f"results='{EVIL}'".replace("'z", "z")  # a valid string value with $(...), backticks, ; and quotes
    cfg = tmp_path / "launch.json"
    cfg.write_text(json.dumps({
        "kind": "finetune", "run_name": "sweep", "finetune_config": ft_name, "finetune_overrides": [override],
        "workdir": str(work), "output_root": f"out {EVIL}", "python": str(fake_python),
        "env": {"EVIL_VALUE": EVIL},
        "slurm": {"partition": EVIL, "account": EVIL, "qos": EVIL, "job_name": EVIL, "mem": EVIL,
                  "extra_sbatch": [f"--comment={EVIL}"]}}))
    write_to = tmp_path / "w"
    assert cli_main(["launch", str(cfg), "--dry-run", "--write-to", str(write_to)]) == 0
    script = write_to / "finetune.sbatch"
    for line in script.read_text().splitlines():
        if line.startswith("#SBATCH "):
            import shlex

            assert len(shlex.split(line[len("#SBATCH "):])) == 1, line  # sbatch sees one word per option
    env = dict(os.environ, SLURM_ARRAY_TASK_ID="1")
    done = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    got = json.loads(record.read_text())
    out_dir = f"{work}/out {EVIL}/sweep"
    assert got["argv"] == ["-m", "cmedbert", "finetune", ft_name, override, "--out", out_dir, "--job-index", "1"]
    assert got["env"] == EVIL and got["cwd"] == str(work)
    assert not list(tmp_path.rglob("pwned"))  # nothing was executed from a value


def test_the_array_tasks_fill_one_results_folder(shared_data, tmp_path, monkeypatch, capsys):
    """A stand-in sbatch runs every array task of the script (in turn) with the real sweep."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "finetune"))
    from finetune_fixtures import make_tiny_checkpoint, subset_task

    ck = make_tiny_checkpoint(shared_data / "vocab" / "bert-base-chinese", tmp_path / "ck", hidden=16)
    data = tmp_path / "cblue"
    subset_task(shared_data / "cblue", data, "KUAKE-QIC", {"train": 32, "dev": 16, "test": 8})
    ft = tmp_path / "ft.json"
    ft.write_text(json.dumps({"models": {"tiny": str(ck)}, "tasks": ["KUAKE-QIC"], "seeds": [1, 2],
                              "data_dir": str(data), "num_threads": 1,
                              "hp": {"epochs": 1, "batch_size": 8, "max_len": 32, "lr": 1e-3}}))
    cfg = tmp_path / "launch.json"
    cfg.write_text(json.dumps({"kind": "finetune", "run_name": "sweep", "finetune_config": str(ft),
                               "workdir": str(tmp_path), "output_root": "runs", "python": sys.executable,
                               "slurm": {"gpus_per_task": 0}}))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    sbatch = bin_dir / "sbatch"
    sbatch.write_text("#!/bin/bash\nset -e\nn=$(sed -n 's/^#SBATCH --array=0-\\([0-9]*\\).*/\\1/p' \"$1\")\n"
                      "for i in $(seq 0 $n); do SLURM_ARRAY_TASK_ID=$i bash \"$1\"; done\n")
    sbatch.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.chdir(tmp_path)
    assert cli_main(["launch", str(cfg)]) == 0
    out = tmp_path / "runs" / "sweep"
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert sorted(r["seed"] for r in rows) == [1, 2]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stage"] == "finetune" and manifest["counts"]["runs"] == 2
    assert (tmp_path / "runs" / "sweep.launch" / "finetune.sbatch").is_file()
    # submitting again: every array task finds its job done
    assert cli_main(["launch", str(cfg)]) == 0
    assert len((out / "results.jsonl").read_text().splitlines()) == 2
