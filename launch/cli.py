"""`cmedbert launch LAUNCH_CONFIG [key=value ...] [--dry-run] [--node-rank N]`.

Turns a launch config (configs/launch/*.toml) plus its pretrain config into every node's exact
command, checks them (preflight), writes the launch folder (hostfile, .deepspeed_env, job.sbatch,
commands.txt) and, without --dry-run, runs what belongs on this machine:

- deepspeed: the deepspeed launcher with the hostfile (it reaches the other nodes via pdsh/ssh);
- torchrun:  this node's torchrun (run the command on every node, with its --node-rank);
- slurm:     sbatch of the generated job script (srun + torchrun c10d, checkpoint + requeue).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Mapping, TextIO

from cmedbert.cliargs import add_config_args, split_config_args
from cmedbert.errors import CmedbertError

HELP = ("plan, check and start multi-node pretraining (deepspeed launcher, torchrun, SLURM) or a "
        "fine-tuning sweep as a SLURM array (kind = \"finetune\")")


def register(sub: argparse._SubParsersAction) -> None:
    from cmedbert.config import describe
    from cmedbert.launch.config import LaunchConfig  # dataclasses only: keeps `cmedbert --help` fast

    keys = "\n".join(f"  {k} = {d}\n      {h}" for k, d, h in describe(LaunchConfig))
    p = sub.add_parser("launch", help=HELP, description=__doc__, epilog="launch config keys:\n" + keys,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(p, out=False)
    p.add_argument("--dry-run", action="store_true",
                   help="print every node's command and environment, write the launch files, start nothing")
    p.add_argument("--node-rank", type=int, default=None,
                   help="which node this invocation is (torchrun; deepspeed with no_ssh); default: from "
                        "SLURM_NODEID or this host's name in the node list")
    p.add_argument("--write-to", type=Path, default=None,
                   help="folder for the launch files (default: OUTPUT_ROOT/RUN_NAME.launch; with --dry-run "
                        "a new temporary folder, printed: a dry run writes nothing else)")
    p.add_argument("--expect-config-hash", default=os.environ.get("CMEDBERT_EXPECT_CONFIG_HASH"),
                   help="refuse to start unless the pretrain config hashes to this on this node "
                        "(the dry run prints it into every node's command)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from cmedbert.config import load_config
    from cmedbert.launch.config import LaunchConfig

    config, overrides = split_config_args(args.args)
    if config is None:
        raise CmedbertError("a launch config file is required (e.g. configs/launch/4x8-torchrun.toml)")
    from cmedbert.launch import finetune_array

    if finetune_array.is_finetune_launch(config, overrides):  # kind = "finetune": a SLURM array sweep
        if args.node_rank is not None:
            raise CmedbertError("--node-rank is for pretraining launches (a fine-tune array has no nodes to rank)")
        fcfg = load_config(finetune_array.FinetuneLaunchConfig, config, overrides)
        return finetune_array.main(fcfg, dry_run=args.dry_run, write_to=args.write_to)
    cfg = load_config(LaunchConfig, config, overrides)
    return main(cfg, launch_config=config, cli_overrides=overrides, dry_run=args.dry_run,
                node_rank=args.node_rank, write_to=args.write_to, expect_hash=args.expect_config_hash)


def main(cfg, *, launch_config: str, cli_overrides: list[str] = (), dry_run: bool = False,
         node_rank: int | None = None, write_to: Path | None = None, expect_hash: str | None = None,
         environ: Mapping[str, str] | None = None, stdout: TextIO | None = None) -> int:
    from cmedbert.launch.hosts import check_slots, resolve_nodes
    from cmedbert.launch.plan import build_plan, render_dry_run
    from cmedbert.launch.preflight import check_expected_hash, pick_node_rank, preflight
    from cmedbert.launch.pretrain_link import describe_pretrain
    from cmedbert.launch.run import resolve_path as _resolve, resolve_workdir, run_command, submit_slurm, write_launch_folder

    environ = os.environ if environ is None else environ
    stdout = stdout or sys.stdout
    workdir, base, base_note = resolve_workdir(cfg.workdir, cfg.pretrain_config, dry_run)
    if dry_run and write_to is None:  # never the cluster path: a dry run writes only where it says
        write_to = Path(tempfile.mkdtemp(prefix=f"cmedbert-launch-{cfg.run_name}-"))
        files_note = f"dry run: launch files written to {write_to} (a real launch writes them to the launch folder)"
    else:
        files_note = None
    hostfile = _resolve(base, cfg.hostfile) if cfg.hostfile else None
    hosts = resolve_nodes(nodes=cfg.nodes, hostfile=hostfile, nnodes=cfg.nnodes, launcher=cfg.launcher,
                          environ=environ)
    check_slots(hosts, cfg.gpus_per_node, hostfile)
    rank = pick_node_rank(cfg.launcher, cfg.deepspeed.no_ssh, hosts, node_rank, dry_run, environ)
    info = describe_pretrain(cfg.pretrain_config, cfg.pretrain_overrides, base)
    check_expected_hash(info, expect_hash)
    plan = build_plan(cfg, hosts, config_hash=info.config_hash, workdir=str(workdir),
                      launch_config=launch_config, cli_overrides=list(cli_overrides), node_rank=rank,
                      environ=environ, launch_dir=str(write_to.absolute()) if write_to and not files_note else None)
    pdsh = cfg.deepspeed.runner if (cfg.launcher == "deepspeed" and plan.nnodes > 1 and not cfg.deepspeed.no_ssh) else None
    plan.notes = [n for n in (base_note, files_note) if n] + preflight(
        plan, info, node_rank=rank, base=base, dry_run=dry_run, pdsh_runner=pdsh)
    text = render_dry_run(plan, only_node=rank if dry_run else None)
    # Per-node launchers (torchrun) share the run's folder: only node 0 writes the launch files.
    if dry_run or rank in (None, 0):
        write_launch_folder(write_to.absolute() if write_to else Path(plan.launch_dir), plan, cfg, text,
                            inputs=[_resolve(base, cfg.pretrain_config)] + ([hostfile] if hostfile else []))
    if dry_run:
        stdout.write(text)
        stdout.flush()
        return 0
    if cfg.launcher == "slurm":
        return submit_slurm(plan)
    if plan.local is None:
        raise CmedbertError("nothing to run on this machine (no node rank)")
    return run_command(plan.local)
