"""An interrupted corpus build leaves no temporary folder: SIGTERM (a scheduler's stop, `kill`)
removes it on the way out; one left by a SIGKILLed run is removed by the next run on that host."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from cmedbert.cli import main as cmedbert

SENTENCE = "患者第{i}次复诊，血压{s}/{t}mmHg，空腹血糖{g}mmol/L，建议继续低盐低脂饮食并规律服药，一个月后复查。\n"


def big_input(path: Path, mb: float) -> Path:
    with open(path, "w", encoding="utf-8") as fh:
        i = 0
        while fh.tell() < mb * 1e6:
            fh.write("".join(SENTENCE.format(i=i + k, s=100 + k % 80, t=60 + k % 50, g=4 + k % 11)
                             for k in range(1000)))
            i += 1000
    return path


def corpus_args(f: Path, workers: int, executor: str = "inline") -> list[str]:
    return [f"sources=[{{name='p',type='plain_text',paths=['{f}']}}]", f"workers={workers}", "progress=false",
            "chunk_mb=1", f"executor={executor}"]


def temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith((".out.tmp-", ".out.old-")))


def start_and_terminate(argv: list[str], started) -> tuple[int, str]:
    """Run ``cmedbert argv``; SIGTERM it 1 s after ``started()`` holds; (exit code, stderr)."""
    proc = subprocess.Popen([sys.executable, "-m", "cmedbert", *argv], stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))
    try:
        deadline = time.monotonic() + 120
        while not started() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert started(), "the build never got going"
        time.sleep(1.0)  # into pass 1 (worker processes running)
        assert proc.poll() is None, "the build finished before it could be interrupted"
        proc.send_signal(signal.SIGTERM)
        err = proc.communicate(timeout=60)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, err


def test_sigterm_removes_the_temporary_folder(tmp_path):
    """executor=inline: the output is assembled in .out.tmp-PID@HOST-* from the start."""
    src = big_input(tmp_path / "in.txt", 12)
    out = tmp_path / "out"
    rc, err = start_and_terminate(["corpus", "build", *corpus_args(src, 2), "--out", str(out)],
                                  lambda: temporaries(tmp_path))
    assert rc == 143, err[-2000:]
    assert err.strip().splitlines()[-1] == "cmedbert corpus: terminated (SIGTERM); removed 1 temporary output folder(s)"
    assert "Traceback" not in err
    assert temporaries(tmp_path) == [] and not out.exists()


def test_sigterm_of_a_datatrove_build_stops_it_and_the_rerun_resumes(tmp_path):
    """executor=local (datatrove): SIGTERM stops the build and its workers at once; its work
    folder .out.datatrove (finished tasks) stays on purpose, and the same command finishes it."""
    src = big_input(tmp_path / "in.txt", 12)
    out = tmp_path / "out"
    argv = ["corpus", "build", *corpus_args(src, 2, "local"), "--out", str(out)]
    rc, err = start_and_terminate(argv, lambda: (tmp_path / ".out.datatrove").is_dir())
    assert rc == 143, err[-2000:]
    assert err.strip().splitlines()[-1].startswith("cmedbert corpus: terminated (SIGTERM)")
    assert temporaries(tmp_path) == [] and not out.exists()
    done = subprocess.run([sys.executable, "-m", "cmedbert", *argv], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (out / "manifest.json").is_file() and not (tmp_path / ".out.datatrove").exists()


def test_a_folder_left_by_a_killed_run_is_removed_by_the_next_run(tmp_path, caplog):
    from cmedbert.artifact import _host

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a process id that no longer runs
    stale = tmp_path / f".out.tmp-{gone.pid}@{_host()}-abc123"
    (stale / "_work").mkdir(parents=True)
    other_host = tmp_path / f".out.tmp-{gone.pid}@another-node-xyz789"  # may still run there
    other_host.mkdir()
    mine = tmp_path / f".out.tmp-{os.getpid()}@{_host()}-live42"  # a live process: not touched
    mine.mkdir()
    src = big_input(tmp_path / "in.txt", 0.01)
    assert cmedbert(["corpus", "build", *corpus_args(src, 1), "--out", str(tmp_path / "out")]) == 0
    assert not stale.exists() and other_host.is_dir() and mine.is_dir()
    assert any("left by an interrupted run" in r.getMessage() and str(stale) in r.getMessage()
               for r in caplog.records)
