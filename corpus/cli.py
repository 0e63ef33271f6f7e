"""``cmedbert corpus build CONFIG [key=value ...] --out DIR [--dry-run]`` and ``cmedbert corpus stats DIR``.

On a cluster the same build runs as datatrove SLURM arrays: ``executor=slurm`` (see corpus/README.md)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from cmedbert.corpus.stage import BUILD
from cmedbert.stage import add_command, load_from_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("corpus", help="build the pretraining corpus (clean, scrub, dedup, decontaminate, shard)")
    csub = p.add_subparsers(dest="corpus_command", metavar="ACTION", required=True)

    b = add_command(csub, BUILD, func=_build)
    b.add_argument("--overwrite", action="store_true", help="replace an existing non-empty --out folder")
    b.add_argument("--dry-run", action="store_true",
                   help="executor=slurm: print the job scripts that would be submitted, submit nothing")

    s = csub.add_parser("stats", help="print a corpus folder's manifest as a table")
    s.add_argument("dir", type=Path, help="corpus folder")
    s.add_argument("--json", action="store_true", help="print the counts as JSON instead")
    s.set_defaults(func=_stats)


def _build(args: argparse.Namespace) -> int:
    from cmedbert.corpus import build

    cfg = load_from_args(args)
    if cfg.executor == "slurm":
        return _submit(cfg, args)
    if args.dry_run:
        from cmedbert.errors import CmedbertError

        raise CmedbertError("--dry-run prints SLURM job scripts: use it with executor=slurm")
    manifest = build.main(cfg, args.out, overwrite=args.overwrite)
    print(format_stats(manifest))
    print(f"corpus written to {args.out}")
    return 0


def _submit(cfg, args: argparse.Namespace) -> int:
    from cmedbert.corpus import build, distributed

    build.plan_units(cfg)  # a bad input path fails here, before anything is submitted
    got = distributed.submit(cfg, args.out, overwrite=args.overwrite, dry_run=args.dry_run)
    if args.dry_run:
        print("\n".join(got))
        print(f"# dry run: {len(got)} job(s) would be submitted (one per pass, each afterok the previous); "
              f"nothing was submitted or written")
    else:
        print(f"submitted {len(got)} SLURM job(s) (passes {', '.join(distributed.PASSES)}): {' '.join(got)}")
        print(f"the corpus appears at {args.out} when the last job ends; re-running resumes unfinished tasks")
    return 0


def _stats(args: argparse.Namespace) -> int:
    from cmedbert.artifact import read_manifest
    from cmedbert.corpus.io import STAGE

    manifest = read_manifest(args.dir, stage=STAGE)
    if args.json:
        print(json.dumps(manifest["counts"], indent=2, ensure_ascii=False))
    else:
        print(format_stats(manifest))
    return 0


def _table(rows: list[list[Any]], header: list[str]) -> str:
    cells = [header] + [[str(c) for c in r] for r in rows]
    widths = [max(_w(r[i]) for r in cells) for i in range(len(header))]

    def fmt(r: list[str]) -> str:
        return "  ".join(c + " " * (w - _w(c)) if i == 0 else " " * (w - _w(c)) + c for i, (c, w) in enumerate(zip(r, widths)))

    return "\n".join([fmt(cells[0]), "  ".join("-" * w for w in widths)] + [fmt(r) for r in cells[1:]])


def _w(s: str) -> int:
    """Display width (CJK characters take two columns)."""
    import unicodedata

    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in s)


def format_stats(manifest: dict[str, Any]) -> str:
    c = manifest["counts"]
    dropped = sum(c["dropped"].values())
    out = [
        f"records: read {c['records_read']:,} + split {c['split_added']:,} = in {c['records_in']:,}  ->  "
        f"out {c['records_out']:,} + dropped {dropped:,}"
        + ("" if c["records_in"] == c["records_out"] + dropped else "   (ACCOUNTING MISMATCH)"),
        f"bytes: in {c['bytes_in'] / 1e6:,.1f} MB ({c['files']} files), out {c['bytes_out'] / 1e6:,.1f} MB text in "
        f"{len(manifest.get('shards', []))} shard(s)",
        "",
        _table([[k, f"{v:,}"] for k, v in c["dropped"].items()], ["dropped (reason)", "records"]),
        "",
        _table([[k, f"{v:,}"] for k, v in c["pii"].items()], ["pii (type)", "scrubbed"]),
    ]
    if c.get("decontaminated"):
        out += ["", _table([[k, f"{v:,}"] for k, v in c["decontaminated"].items()], ["decontaminated (task)", "records"])]
    rows = []
    for name, ps in c["per_source"].items():
        top = ", ".join(f"{k} {v:,}" for k, v in sorted(ps["dropped"].items(), key=lambda kv: -kv[1])[:3])
        rows.append([name, ps["type"], ps["files"], f"{ps['bytes_in'] / 1e6:.2f}", f"{ps['records_in']:,}",
                     f"{ps['records_out']:,}", f"{ps.get('terms', '')}", top])
    out += ["", _table(rows, ["source", "type", "files", "MB in", "in", "out", "terms", "top drops"])]
    return "\n".join(out)
