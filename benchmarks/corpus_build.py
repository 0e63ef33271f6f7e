"""Corpus build throughput (MB/s of input files) and peak memory at 1x and 10x corpus size, for
the datatrove path (``executor=local``, the default) side by side with the reference in-process
path (``executor=inline``: one process pool, no datatrove), in the same run.

1x   ``configs/corpus/shared-data.toml`` on the shared data (corpus/ + kg/, ~26 MB), all cores,
     both paths; also ``executor=inline workers=1`` (the single-process baseline).
10x  the same config over 10 distinct perturbed copies of every input file (30% of the CJK
     characters of each copy replaced by random characters drawn from the same file, so the
     copies are neither exact nor near duplicates of each other, and files keep their format
     and encoding), i.e. ~260 MB.

Each build runs as a fresh ``cmedbert corpus build`` process; a sampler thread sums the RSS of
that process and its workers every 0.1 s (peak RSS of the process tree; forked workers' shared
pages are counted in each process, as RSS does). CPU seconds (user + system of the build and its
workers) are reported too: on a shared machine wall-clock MB/s depends on the other load
(``load_avg_1m`` on the last line), MB per CPU-second does not. Decontamination against the
CBLUE dev/test files is on, as in the config.

    .venv/bin/python benchmarks/corpus_build.py [--copies 10] [--keep DIR]

Last line: ``mb_per_s=<inline, 10x> datatrove_mb_per_s=<datatrove, 10x> ratio=<datatrove / inline,
10x wall> cpu_ratio=<same in MB per CPU-second> rss_ratio_10x=<inline peak 10x / 1x>
datatrove_rss_ratio_10x=<datatrove peak 10x / 1x> ...``
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cmedbert.paths import shared_data_root  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "configs/corpus/shared-data.toml"
PROTECTED = set("病人医生患者问答")  # structure labels the readers rely on


def perturb_tree(src_root: Path, dst_root: Path, copies: int) -> None:
    """dst_root/copy-K/<corpus|kg>/... for K < copies: every file with 30% of its CJK characters
    replaced by CJK characters drawn from the same file (so the file's encoding can hold them)."""
    import numpy as np

    from cmedbert.corpus.clean import _t2s
    from cmedbert.corpus.readers import detect_encoding

    trad = _t2s()[0]

    files = [f for d in ("corpus", "kg") for f in sorted((src_root / d).rglob("*")) if f.is_file()]
    protected = np.array(sorted(ord(c) for c in PROTECTED), dtype=np.uint32)
    for fi, f in enumerate(files):
        enc = detect_encoding(f)
        text = f.read_bytes().decode(enc, errors="replace")
        cps = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        cjk = (cps >= 0x4E00) & (cps <= 0x9FFF) & ~np.isin(cps, protected)
        pool = np.unique(cps[cjk]) if cjk.any() else np.array([ord("的")], dtype=np.uint32)
        pool = pool[~trad[pool]]  # no traditional-only characters: they would trigger OpenCC on every document
        for k in range(copies):
            rng = np.random.default_rng([fi, k])
            swap = cjk & (rng.random(len(cps)) < 0.3)
            out = cps.copy()
            out[swap] = pool[rng.integers(0, len(pool), int(swap.sum()))]
            dst = dst_root / f"copy-{k}" / f.relative_to(src_root)
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes(out.tobytes().decode("utf-32-le").encode("utf-8" if enc == "utf-8-sig" else enc, errors="replace"))


def config_for_copies(root: Path, copies: int) -> Path:
    """The shared-data config with every source path globbing over the copies."""
    text = CONFIG.read_text(encoding="utf-8")
    text = text.replace('"${data_root}/corpus/', '"${data_root}/copy-*/corpus/').replace('"${data_root}/kg/', '"${data_root}/copy-*/kg/')
    # decontamination files stay the real CBLUE ones
    text = text.replace('"${data_root}/cblue/', f'"{shared_data_root()}/cblue/')
    path = root / "shared-data-10x.toml"
    path.write_text(text, encoding="utf-8")
    return path


def run_build(config: Path, out: Path, data_root: Path, *overrides: str) -> dict:
    import json

    import psutil

    cmd = [sys.executable, "-m", "cmedbert", "corpus", "build", str(config), "progress=false",
           f"data_root={data_root}", *overrides, "--out", str(out)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        p = psutil.Process(proc.pid)
        while not done.is_set():
            try:
                total = p.memory_info().rss + sum(c.memory_info().rss for c in p.children(recursive=True))
                peak = max(peak, total)
            except psutil.Error:
                pass
            time.sleep(0.1)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    _, err = proc.communicate()
    seconds = time.perf_counter() - t0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)  # includes the pool workers (waited for)
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    done.set()
    th.join()
    if proc.returncode != 0:
        raise SystemExit(f"build failed ({proc.returncode}): {err.decode()[-2000:]}")
    for line in err.decode().splitlines():  # the build's own phase timings
        if " pass " in line:
            print("   ", line.strip(), flush=True)
    m = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    c = m["counts"]
    mb = c["bytes_in"] / 1e6
    return {"seconds": round(seconds, 2), "cpu_seconds": round(cpu, 2), "mb": round(mb, 2),
            "mb_per_s": round(mb / seconds, 3), "mb_per_cpu_s": round(mb / cpu, 3), "peak_rss_mb": round(peak / 1e6, 1),
            "records_in": c["records_in"], "records_out": c["records_out"], "dropped": sum(c["dropped"].values())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--copies", type=int, default=10)
    ap.add_argument("--keep", type=Path, default=None, help="keep the work folder here (default: a temp dir, removed)")
    args = ap.parse_args()
    data = shared_data_root()
    if not (data / "corpus").is_dir():
        raise SystemExit(f"shared data not found at {data} (set CMEDBERT_SHARED_DATA)")
    work = args.keep or Path(tempfile.mkdtemp(prefix="corpus-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        r1 = run_build(CONFIG, work / "out-1x", data, "executor=inline")
        print(f"1x inline, all cores    : {r1}", flush=True)
        d1 = run_build(CONFIG, work / "out-1x-dt", data, "executor=local")
        print(f"1x datatrove, all cores : {d1}", flush=True)
        b1 = run_build(CONFIG, work / "out-1x-w1", data, "executor=inline", "workers=1")
        print(f"1x inline, 1 process    : {b1}", flush=True)
        t = time.perf_counter()
        perturb_tree(data, work / "data10x", args.copies)
        print(f"made {args.copies} perturbed copies in {time.perf_counter() - t:.1f}s", flush=True)
        cfg10 = config_for_copies(work, args.copies)
        r10 = run_build(cfg10, work / "out-10x", work / "data10x", "executor=inline")
        print(f"{args.copies}x inline, all cores   : {r10}", flush=True)
        d10 = run_build(cfg10, work / "out-10x-dt", work / "data10x", "executor=local")
        print(f"{args.copies}x datatrove, all cores: {d10}", flush=True)
        same = all(r[k] == d[k] for r, d in ((r1, d1), (r10, d10)) for k in ("records_in", "records_out", "dropped"))
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    print(f"mb_per_s={r10['mb_per_s']:.2f} datatrove_mb_per_s={d10['mb_per_s']:.2f} "
          f"ratio={d10['mb_per_s'] / r10['mb_per_s']:.3f} cpu_ratio={d10['mb_per_cpu_s'] / r10['mb_per_cpu_s']:.3f} "
          f"rss_ratio_10x={r10['peak_rss_mb'] / r1['peak_rss_mb']:.3f} "
          f"datatrove_rss_ratio_10x={d10['peak_rss_mb'] / d1['peak_rss_mb']:.3f} "
          f"same_counts={int(same)} mb_per_s_1x={r1['mb_per_s']:.2f} datatrove_mb_per_s_1x={d1['mb_per_s']:.2f} "
          f"baseline_1proc_mb_per_s_1x={b1['mb_per_s']:.2f} peak_rss_1x_mb={r1['peak_rss_mb']:.0f} "
          f"peak_rss_10x_mb={r10['peak_rss_mb']:.0f} datatrove_peak_rss_1x_mb={d1['peak_rss_mb']:.0f} "
          f"datatrove_peak_rss_10x_mb={d10['peak_rss_mb']:.0f} mb_10x={r10['mb']:.0f} "
          f"load_avg_1m={os.getloadavg()[0]:.1f} cores={os.cpu_count()}")

if __name__ == "__main__":
    main()
