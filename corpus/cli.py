"""``cmedbert corpus build CONFIG [key=value ...] --out DIR``, ``cmedbert corpus stats DIR``, and the
cluster pair ``cmedbert corpus part CONFIG --part I --parts N --out WORK_I`` (one SLURM array task
each) + ``cmedbert corpus merge CONFIG --from WORK_* --out DIR`` (the dependent global step)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from cmedbert.cli import add_config_args, split_config_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("corpus", help="build the pretraining corpus (clean, scrub, dedup, decontaminate, shard)")
    csub = p.add_subparsers(dest="corpus_command", metavar="ACTION", required=True)

    b = csub.add_parser("build", help="build a corpus folder from a config (see configs/corpus/)")
    add_config_args(b)
    b.add_argument("--overwrite", action="store_true", help="replace an existing non-empty --out folder")
    b.set_defaults(func=_build)

    pt = csub.add_parser("part", help="cluster mode: pass 1 (clean/scrub/filter/hash) of one slice of the input files, "
                                      "e.g. one SLURM array task; combine the parts with `corpus merge`")
    add_config_args(pt)
    pt.add_argument("--part", type=int, required=True, help="this slice (0-based; e.g. $SLURM_ARRAY_TASK_ID)")
    pt.add_argument("--parts", type=int, required=True, help="number of slices (input file i goes to slice i %% parts)")
    pt.set_defaults(func=_part)

    mg = csub.add_parser("merge", help="cluster mode: global dedup + shards + manifest over the folders of `corpus part`")
    add_config_args(mg)
    mg.add_argument("--from", dest="part_dirs", type=Path, nargs="+", required=True, help="the `corpus part` output folders")
    mg.add_argument("--overwrite", action="store_true", help="replace an existing non-empty --out folder")
    mg.set_defaults(func=_merge)

    s = csub.add_parser("stats", help="print a corpus folder's manifest as a table")
    s.add_argument("dir", type=Path, help="corpus folder")
    s.add_argument("--json", action="store_true", help="print the counts as JSON instead")
    s.set_defaults(func=_stats)


def _build(args: argparse.Namespace) -> int:
    from cmedbert.corpus import build, config

    path, overrides = split_config_args(args.args)
    cfg = config.load(path, overrides)
    manifest = build.main(cfg, args.out, overwrite=args.overwrite)
    print(format_stats(manifest))
    print(f"corpus written to {args.out}")
    return 0


def _part(args: argparse.Namespace) -> int:
    from cmedbert.artifact import atomic_output
    from cmedbert.corpus import build, config

    path, overrides = split_config_args(args.args)
    cfg = config.load(path, overrides)
    with atomic_output(args.out) as tmp:
        results, _, _ = build.run_part(cfg, tmp, args.part, args.parts)
    print(f"part {args.part}/{args.parts}: {len(results)} file(s), {sum(r['kept'] for r in results):,} documents kept "
          f"before dedup -> {args.out}")
    return 0


def _merge(args: argparse.Namespace) -> int:
    from cmedbert.corpus import build, config

    path, overrides = split_config_args(args.args)
    cfg = config.load(path, overrides)
    manifest = build.merge(cfg, args.part_dirs, args.out, overwrite=args.overwrite)
    print(format_stats(manifest))
    print(f"corpus written to {args.out}")
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
