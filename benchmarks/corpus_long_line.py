"""Peak memory of a corpus build whose input is ONE 50 MB line (plain text), against the same
text written as ordinary lines just under ``max_chars`` characters (the baseline, same run: the
same documents, only the line breaks differ), and the same pair at a fifth of the size. The
extra memory of the single line over its baseline must not grow with the line.

Each build runs in a fresh process (``workers=1``: pass 1 in that process, no pool) and reports
its own peak RSS (``ru_maxrss``) and its RSS after imports; the difference is what the build
itself needed. Before the fix the long line crashed the build (``at most 1024 documents per
batch``) and held ~37 bytes per byte of the line.

    .venv/bin/python benchmarks/corpus_long_line.py [--mb 50] [--max-chars 4000]

Last line: ``one_line_peak_mb=... lines_peak_mb=... ratio=... extra_growth_big_mb=...
extra_growth_small_mb=...`` (extra_growth_*: build memory of the single line minus that of its
baseline, in MB).
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
    res: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        text = long_line(int(args.mb * 1e6))
        step = args.max_chars - 50  # baseline documents as long as the pieces of the long line, not split
        for label, part in (("small", text[: len(text) // 5]), ("big", text)):
            single, lines = tmp / f"single-{label}.txt", tmp / f"lines-{label}.txt"
            single.write_text(part + "\n", encoding="utf-8")
            with open(lines, "w", encoding="utf-8") as fh:
                for i in range(0, len(part), step):
                    fh.write(part[i:i + step] + "\n")
            for kind, path in (("lines", lines), ("one_line", single)):
                name = f"{kind}_{label}"
                t = time.perf_counter()
                res[name] = r = run(path, tmp / f"out-{name}", args.max_chars)
                c = r["counts"]
                r["grew_mb"] = (r["peak_kb"] - r["base_kb"]) / 1024
                print(f"{name}: {path.stat().st_size / 1e6:.1f} MB in {c['records_read']} line(s) -> "
                      f"{c['records_out']} docs in {time.perf_counter() - t:.1f} s; peak RSS "
                      f"{r['peak_kb'] / 1024:.0f} MB (after imports {r['base_kb'] / 1024:.0f} MB, "
                      f"build +{r['grew_mb']:.0f} MB)", flush=True)
    g = {k: v["grew_mb"] for k, v in res.items()}
    print(f"one_line_peak_mb={res['one_line_big']['peak_kb'] / 1024:.0f} "
          f"lines_peak_mb={res['lines_big']['peak_kb'] / 1024:.0f} "
          f"ratio={res['one_line_big']['peak_kb'] / res['lines_big']['peak_kb']:.2f} "
          f"extra_growth_big_mb={g['one_line_big'] - g['lines_big']:.0f} "
          f"extra_growth_small_mb={g['one_line_small'] - g['lines_small']:.0f} "
          f"input_mb={args.mb:g} small_mb={args.mb / 5:g} max_chars={args.max_chars} "
          f"load_avg_1m={os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
