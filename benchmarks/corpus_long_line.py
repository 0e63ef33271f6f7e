"""Peak memory of a corpus build whose input is ONE 50 MB line (plain text), against the same
text written as ordinary lines of about ``max_chars`` characters (the baseline, same run), and
against ONE line of a fifth of the size (memory bounded = the same growth for 10 and 50 MB).

Each build runs in a fresh process (``workers=1``: pass 1 in that process, no pool) and reports
its own peak RSS (``ru_maxrss``) and its RSS after imports; the difference is what the build
itself needed. Before the fix the long line crashed the build (``at most 1024 documents per
batch``) and held ~37 bytes per byte of the line.

    .venv/bin/python benchmarks/corpus_long_line.py [--mb 50] [--max-chars 4000]

Last line: ``long_line_peak_mb=... baseline_peak_mb=... ratio=... long_line_growth_mb=...
long_line_small_growth_mb=... growth_per_line_mb=...`` (growth_per_line_mb: extra build memory per
extra MB of the line between the small and the big line; ~37 MB/MB before the fix).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "corpus"))

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
from cmedbert.config import from_dict
from cmedbert.corpus import build
from cmedbert.corpus.config import CorpusConfig
path, out, max_chars = sys.argv[1], sys.argv[2], int(sys.argv[3])
cfg = from_dict(CorpusConfig, {"sources": [{"name": "p", "type": "plain_text", "paths": [path]}], "workers": 1,
                               "progress": False, "cleaning": {"max_chars": max_chars}})
import cmedbert.corpus.dedup, pyarrow.parquet  # noqa: imports counted in the base, not the build
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
m = build.main(cfg, Path(out))
print(json.dumps({"base_kb": base, "peak_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "seconds": time.perf_counter() - t, "counts": m["counts"]}))
"""


def run(path: Path, out: Path, max_chars: int) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD, str(path), str(out), str(max_chars)], capture_output=True,
                          text=True, cwd=REPO)
    if done.returncode != 0:
        sys.exit(f"build of {path} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    from long_text import long_line

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=float, default=50)
    ap.add_argument("--max-chars", type=int, default=4000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        text = long_line(int(args.mb * 1e6))
        single, lines, small = tmp / "single.txt", tmp / "lines.txt", tmp / "small.txt"
        single.write_text(text + "\n", encoding="utf-8")
        small_text = text[: len(text) // 5]
        small.write_text(small_text + "\n", encoding="utf-8")
        del small_text
        step = args.max_chars // 2
        with open(lines, "w", encoding="utf-8") as fh:
            for i in range(0, len(text), step):
                fh.write(text[i:i + step] + "\n")
        del text
        res = {}
        for name, path in (("baseline", lines), ("long_line_small", small), ("long_line", single)):
            t = time.perf_counter()
            res[name] = run(path, tmp / f"out-{name}", args.max_chars)
            c = res[name]["counts"]
            grew = (res[name]["peak_kb"] - res[name]["base_kb"]) / 1024
            print(f"{name}: {path.stat().st_size / 1e6:.1f} MB in {c['records_read']} line(s) -> "
                  f"{c['records_out']} docs in {time.perf_counter() - t:.1f} s; peak RSS "
                  f"{res[name]['peak_kb'] / 1024:.0f} MB (after imports {res[name]['base_kb'] / 1024:.0f} MB, "
                  f"build +{grew:.0f} MB)", flush=True)
    peak = {k: v["peak_kb"] / 1024 for k, v in res.items()}
    grew = {k: (v["peak_kb"] - v["base_kb"]) / 1024 for k, v in res.items()}
    per_mb = (grew["long_line"] - grew["long_line_small"]) / (args.mb * 0.8)
    print(f"long_line_peak_mb={peak['long_line']:.0f} baseline_peak_mb={peak['baseline']:.0f} "
          f"ratio={peak['long_line'] / peak['baseline']:.2f} long_line_growth_mb={grew['long_line']:.0f} "
          f"long_line_small_growth_mb={grew['long_line_small']:.0f} baseline_growth_mb={grew['baseline']:.0f} "
          f"growth_per_line_mb={per_mb:.2f} input_mb={args.mb:g} max_chars={args.max_chars} "
          f"load_avg_1m={os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
