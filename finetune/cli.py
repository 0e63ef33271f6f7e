"""`cmedbert finetune`: fine-tune checkpoints on CBLUE, score prediction files, render tables.

    cmedbert finetune [CONFIG] [key=value ...] --out DIR
    cmedbert finetune score --task T --gold FILE --pred FILE [--json]
    cmedbert finetune table RESULTS [RESULTS ...] [--out PREFIX]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from cmedbert.cliargs import add_config_args, split_config_args
from cmedbert.finetune.stage import FINETUNE
from cmedbert.stage import config_epilog

USAGE = __doc__.split("\n\n", 1)[1]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "finetune", help="fine-tune on CBLUE; `finetune score`, `finetune table`",
        description=USAGE + "\nRun `cmedbert finetune run --help`, `... score --help` or `... table --help` for details.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=None, help=argparse.SUPPRESS)  # `--out DIR` before CONFIG
    p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    p.set_defaults(func=_dispatch)


def _dispatch(args: argparse.Namespace) -> int:
    rest = list(args.rest) + (["--out", str(args.out)] if args.out is not None else [])
    if rest and rest[0] == "score":
        return _score(rest[1:])
    if rest and rest[0] == "table":
        return _table(rest[1:])
    if rest and rest[0] == "run":
        rest = rest[1:]
    return _run(rest)


def _run_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cmedbert finetune", description="Fine-tune checkpoints on CBLUE tasks.",
                                epilog=config_epilog(FINETUNE), formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(p)
    p.add_argument("--job-index", type=int, default=None,
                   help="run only job N of the sweep (jobs are checkpoint x task x seed in that order; "
                        "a SLURM array task passes $SLURM_ARRAY_TASK_ID); its rows join OUT/results.jsonl")
    return p


def _run(argv: list[str]) -> int:
    args = _run_parser().parse_args(argv)
    path, overrides = split_config_args(args.args)
    cfg = FINETUNE.load(path, overrides)
    FINETUNE.check_inputs(cfg)
    from cmedbert.finetune.sweep import main

    summary = main(cfg, args.out, job_index=args.job_index)
    if int(os.environ.get("RANK", "0")) != 0:  # one data-parallel run: rank 0 reports
        return 0
    for row in summary["scores"]:
        print(f"{row['checkpoint']}\t{row['task']}\tseed {row['seed']}\tdev {row['metric']} = {row['value']:.4f}")
    done = "complete" if summary["complete"] else f"incomplete: {summary['jobs'] - summary['done']} of {summary['jobs']} jobs to go"
    print(f"ran {len(summary['ran'])} jobs, skipped {len(summary['skipped'])} done ones; {args.out} is {done}")
    return 0


def _score(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="cmedbert finetune score",
                                description="Score a prediction file against a gold file with the task's official metric.")
    p.add_argument("--task", required=True, help="CBLUE task, e.g. KUAKE-QIC")
    p.add_argument("--gold", required=True, type=Path, help="gold file (e.g. TASK_dev.json or example_gold.json)")
    p.add_argument("--pred", required=True, type=Path, help="prediction file in the submission format")
    p.add_argument("--json", action="store_true", help="print every number as JSON")
    args = p.parse_args(argv)
    from cmedbert.finetune.metrics import score_files

    res = score_files(args.task, str(args.gold), str(args.pred))
    if args.json:
        print(json.dumps(res, ensure_ascii=False, indent=2))
    else:
        extra = "".join(f" {k}={res[k]:.4f}" for k in ("precision", "recall") if k in res)
        print(f"{args.task} {res['metric']}={res['value']:.4f}{extra} n_gold={res['n_gold']} "
              f"missing_pred={res['n_missing_pred']}")
    return 0


def _table(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="cmedbert finetune table",
                                description="Leaderboard (markdown + CSV) from one or more results.jsonl files.")
    p.add_argument("results", nargs="+", type=Path, help="results.jsonl files (or finetune output folders)")
    p.add_argument("--out", type=Path, default=None, help="write PREFIX.md and PREFIX.csv (default: print markdown)")
    args = p.parse_args(argv)
    from cmedbert.artifact import atomic_write_text
    from cmedbert.finetune.results import read_rows, render

    md, csv_text = render(read_rows(args.results))
    if args.out is None:
        sys.stdout.write(md)
    else:
        atomic_write_text(Path(f"{args.out}.md"), md)
        atomic_write_text(Path(f"{args.out}.csv"), csv_text)
        print(f"wrote {args.out}.md and {args.out}.csv")
    return 0
