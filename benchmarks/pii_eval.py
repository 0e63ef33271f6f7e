"""PII scrubber: recall and precision per type on the handmade set, and throughput (MB/s).

Quality   ``cmedbert.corpus.pii.evaluate`` on ``tests/corpus/pii_cases.py`` (planted identifiers
          alone and in dialogue-like medical text, medical strings that must survive): per type
          planted / true positives / misses / false alarms, recall, precision; plus how many
          planted cases come out exactly as expected and how many must-keep strings stay intact.
Speed     ``Scrubber.scrub`` on every line of the shared medical corpus files
          (``$CMEDBERT_SHARED_DATA/corpus/**``, raw lines, ~21 MB of UTF-8), one process, best of
          ``--repeat`` passes; MB of UTF-8 text per second of CPU time (the machine is shared, so
          wall time depends on other jobs; CPU time much less).
Baseline  ``--baseline-ref REF`` loads ``corpus/pii.py`` as it was at git ``REF`` and measures
          both on the same set and the same lines in the same run (``ratio`` = ours / baseline).

    .venv/bin/python benchmarks/pii_eval.py [--baseline-ref 2b9efc8] [--repeat 3] [--mb 0]

Last line: ``mb_per_s=<ours> baseline_mb_per_s=<baseline or nan> ratio=... recall_min=...
precision_min=... planted_exact=k/n keep_intact=k/n worst_800k_chars_s=...`` (the slowest of
a set of pathological 800k-character inputs: long digit runs, dotted labels, keyword floods).
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "corpus"))

from pii_cases import CASES  # noqa: E402

from cmedbert.corpus.pii import ORDER, Scrubber, evaluate, might_contain_pii  # noqa: E402
from cmedbert.corpus.readers import detect_encoding  # noqa: E402
from cmedbert.paths import shared_data_root  # noqa: E402


def load_module_at(ref: str):
    """corpus/pii.py as committed at ``ref``, imported under another name."""
    src = subprocess.run(["git", "-C", str(REPO), "show", f"{ref}:corpus/pii.py"], check=True,
                         capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "pii_baseline.py"
    path.write_text(src, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("pii_baseline", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def corpus_lines(max_mb: float) -> list[str]:
    root = shared_data_root() / "corpus"
    lines: list[str] = []
    size = 0
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        text = f.read_bytes().decode(detect_encoding(f), errors="replace")
        for line in text.splitlines():
            lines.append(line)
            size += len(line.encode("utf-8")) + 1
            if max_mb and size >= max_mb * 1e6:
                return lines
    return lines


def throughput(scrubber, lines: list[str], repeat: int) -> tuple[float, float, int]:
    """(MB per CPU-second, MB per wall-second), best of ``repeat``; and identifiers found."""
    mb = sum(len(x.encode("utf-8")) + 1 for x in lines) / 1e6
    best_cpu = best_wall = math.inf
    found = 0
    for _ in range(repeat):
        counts: Counter = Counter()
        c0, w0 = time.process_time(), time.perf_counter()
        for line in lines:
            scrubber.scrub(line, counts)
        best_cpu = min(best_cpu, time.process_time() - c0)
        best_wall = min(best_wall, time.perf_counter() - w0)
        found = sum(counts.values())
    return mb / best_cpu, mb / best_wall, found


def adversarial(scrubber, chars: int) -> dict[str, float]:
    """Seconds to scrub pathological texts of ``chars`` characters (backtracking check: doubling
    the size should double the time, not square it)."""
    n = chars
    texts = {
        "digits": "1" * n, "digit groups": "1234 " * (n // 5), "dotted digits": "138." * (n // 4),
        "dotted labels": "a." * (n // 2), "hyphen labels": "a-b." * (n // 4), "url tail": "http://a" + "/." * (n // 2),
        "e-mail-like": "a." * (n // 2) + "@", "keywords": "微信" * (n // 2), "vx spaces": "vx " * (n // 3),
        "Q colons": "Q：" * (n // 2), "phone keyword": "电话 " * (n // 3), "+86": "+86 " * (n // 4),
        "brackets": "(010)" * (n // 5), "mixed": "电话138 1234 " * (n // 12),
        "measurement lists": "尿量 4520 3180 2760 3090，" * (n // 24),
    }
    out = {}
    for name, text in texts.items():
        best = math.inf
        for _ in range(2):  # best of 2: the machine is shared
            t0 = time.perf_counter()
            scrubber.scrub(text)
            best = min(best, time.perf_counter() - t0)
        out[name] = best
    return out


def markdown_table(result: dict) -> str:
    rows = ["| type | planted | found (TP) | missed (FN) | false alarms (FP) | recall | precision |",
            "|---|---|---|---|---|---|---|"]
    for kind in ORDER:
        r = result["per_type"][kind]
        fmt = lambda v: "–" if v is None else f"{100 * v:.1f} %"  # noqa: E731
        rows.append(f"| {kind} | {r['planted']} | {r['tp']} | {r['fn']} | {r['fp']} | {fmt(r['recall'])} | "
                    f"{fmt(r['precision'])} |")
    rows.append(f"\nplanted cases exact: {result['planted_exact']}/{result['planted_cases']}, "
                f"must-keep strings intact: {result['keep_intact']}/{result['keep_cases']}")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline-ref", help="git ref whose corpus/pii.py is the baseline")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--mb", type=float, default=0, help="use only the first MB of corpus lines (0 = all)")
    ap.add_argument("--failures", action="store_true", help="print every case that is not exact")
    args = ap.parse_args()

    ours = evaluate(CASES)
    print(f"## ours ({len(CASES)} strings)\n{markdown_table(ours)}\n")
    base = None
    if args.baseline_ref:
        base_mod = load_module_at(args.baseline_ref)
        base = evaluate(CASES, base_mod.Scrubber())
        print(f"## baseline {args.baseline_ref}\n{markdown_table(base)}\n")
    if args.failures:
        for name, res in (("ours", ours), ("baseline", base)):
            for text, expected, out in (res or {}).get("failures", []):
                print(f"[{name}] {text!r}\n    expected {expected!r}\n    got      {out!r}")

    lines = corpus_lines(args.mb)
    cpu, wall, found = throughput(Scrubber(), lines, args.repeat)
    mb = sum(len(x.encode("utf-8")) + 1 for x in lines) / 1e6
    print(f"throughput on {len(lines):,} lines, {mb:.1f} MB: ours {cpu:.1f} MB/CPU-s ({wall:.1f} MB/s wall), "
          f"{found} identifiers")
    b_cpu = float("nan")
    if args.baseline_ref:
        b_cpu, b_wall, b_found = throughput(base_mod.Scrubber(), lines, args.repeat)
        print(f"baseline {b_cpu:.1f} MB/CPU-s ({b_wall:.1f} MB/s wall), {b_found} identifiers")
    # The lines that pass a pre-check run every pattern: the rate on PII-dense text.
    dense = [x for x in lines if might_contain_pii(x) or (args.baseline_ref and base_mod.might_contain_pii(x))]
    d_cpu, _, _ = throughput(Scrubber(), dense, args.repeat)
    msg = f"candidate lines only ({len(dense):,} lines that pass a pre-check): ours {d_cpu:.1f} MB/CPU-s"
    if args.baseline_ref:
        msg += f", baseline {throughput(base_mod.Scrubber(), dense, args.repeat)[0]:.1f} MB/CPU-s"
    print(msg)

    small, big = adversarial(Scrubber(), 200_000), adversarial(Scrubber(), 800_000)
    worst = max(big, key=big.get)
    growth = sum(big.values()) / sum(small.values())
    print(f"pathological inputs: slowest {worst!r} {big[worst]:.2f} s for 800k characters; "
          f"total time 200k -> 800k characters: x{growth:.1f} (linear: x4, quadratic: x16)")

    rec = [r["recall"] for r in ours["per_type"].values() if r["recall"] is not None]
    prec = [r["precision"] for r in ours["per_type"].values() if r["precision"] is not None]
    print(f"mb_per_s={cpu:.2f} baseline_mb_per_s={b_cpu:.2f} ratio={cpu / b_cpu:.2f} "
          f"recall_min={min(rec):.3f} precision_min={min(prec):.3f} "
          f"planted_exact={ours['planted_exact']}/{ours['planted_cases']} "
          f"keep_intact={ours['keep_intact']}/{ours['keep_cases']} worst_800k_chars_s={big[worst]:.2f} growth_4x_size={growth:.1f}")


if __name__ == "__main__":
    main()
