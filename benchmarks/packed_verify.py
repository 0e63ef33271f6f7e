"""Time of the packed-shard integrity checks: the fingerprint every open runs (64 blocks of
4 KiB per shard) and the full sha256 (`cmedbert tokenizer verify`, `open_packed(full_check=True)`),
on one shard file of --mb MB (random bytes, written to a temporary folder; the first read may come
from the page cache, as it would right after packing).

    .venv/bin/python benchmarks/packed_verify.py [--mb 1024]

Last line: ``full_s_per_gb=... full_mb_per_s=... fingerprint_ms=... mb=...``
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    import numpy as np

    from cmedbert.artifact import sha256_file
    from cmedbert.tokenizer.packed import fingerprint

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=int, default=1024)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        f = Path(tmp) / "ids.bin"
        rng = np.random.default_rng(0)
        with open(f, "wb") as fh:
            for _ in range(args.mb):
                fh.write(rng.integers(0, 2**16, 1 << 19, np.uint16).tobytes())
        t = time.perf_counter()
        for _ in range(20):
            fingerprint(f)
        fp_ms = (time.perf_counter() - t) / 20 * 1000
        t = time.perf_counter()
        sha256_file(f)
        full = time.perf_counter() - t
        size_gb = os.path.getsize(f) / 2**30
    print(f"fingerprint of a {args.mb} MB shard: {fp_ms:.2f} ms; full sha256: {full:.2f} s")
    print(f"full_s_per_gb={full / size_gb:.2f} full_mb_per_s={args.mb / full:.0f} fingerprint_ms={fp_ms:.2f} "
          f"mb={args.mb} load_avg_1m={os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
