"""Write the launch folder, then start what runs on this machine (and pass signals on)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from cmedbert.artifact import atomic_output, read_manifest, write_manifest
from cmedbert.errors import ArtifactError, CmedbertError
from cmedbert.launch.plan import DS_ENV, SBATCH, LaunchPlan, NodeCommand

STAGE = "launch"
COMMANDS = "commands.txt"
PLAN = "launch.json"


def write_launch_folder(folder: Path, plan: LaunchPlan, cfg: Any, dry_run_text: str,
                        inputs: list[Path]) -> None:
    """hostfile / .deepspeed_env / job.sbatch, the printed commands and the plan, atomically
    (replacing the folder of an earlier launch, never a folder that is not a launch folder)."""
    write_files_folder(
        folder, {**plan.files, COMMANDS: dry_run_text, PLAN: _masked(plan).to_json()},
        # .deepspeed_env may carry pass_env values such as WANDB_API_KEY
        modes={DS_ENV: 0o600, SBATCH: 0o755}, cfg=cfg, inputs=inputs,
        counts={"nodes": plan.nnodes, "world_size": plan.world_size},
        extra={"launch": {"launcher": plan.launcher, "config_hash": plan.config_hash, "run_dir": plan.run_dir}})


def resolve_path(base: Path, path: str) -> Path:
    """``path`` as given when absolute, else under ``base``."""
    p = Path(path)
    return p if p.is_absolute() else base / p


def resolve_workdir(workdir: str | None, config_file: str, dry_run: bool) -> tuple[Path, Path, str | None]:
    """(workdir the nodes / tasks cd into, folder relative paths are read from here, note), for every
    launch kind. The nodes read ``config_file`` from ``workdir``, so a real launch needs both here.
    A dry run planned on a machine without them (a laptop, the docs build, a half-made or leftover
    folder at the cluster path) reads relative paths from the current folder instead and says so."""
    cwd = Path.cwd()
    if workdir is None:
        return cwd, cwd, None
    wd = Path(workdir)
    if not wd.is_absolute():
        raise CmedbertError(f"config key 'workdir': {workdir!r} must be an absolute path (same on every node)")
    if wd.is_dir() and resolve_path(wd, config_file).is_file():
        return wd, wd, None
    what = f"has no {config_file}" if wd.is_dir() else "does not exist"
    if dry_run:
        return wd, cwd, f"workdir {wd} {what} here: relative paths read from {cwd}"
    raise CmedbertError(f"workdir {wd} {what} on this machine (config key 'workdir')")


def write_files_folder(folder: Path, files: dict[str, str], modes: dict[str, int], cfg: Any, inputs: list[Path],
                       counts: dict[str, Any], extra: dict[str, Any]) -> None:
    """A launch folder (any launch kind): ``files`` (name -> text, ``modes`` for some) and the
    manifest, atomically; it replaces the folder of an earlier launch, never a folder that is not
    a launch folder."""
    if folder.exists() and any(folder.iterdir()):
        try:
            read_manifest(folder, stage=STAGE)
        except ArtifactError as exc:
            raise CmedbertError(f"launch files go to {folder}, which is not empty and not a launch folder "
                                f"({exc}): choose another --write-to") from None
    with atomic_output(folder, overwrite=True) as tmp:
        for name, text in files.items():
            (tmp / name).write_text(text, encoding="utf-8")
            if name in modes:
                os.chmod(tmp / name, modes[name])
        write_manifest(tmp, stage=STAGE, config=cfg, inputs=[p for p in inputs if p.exists()],
                       counts=counts, extra=extra)


def _masked(plan: LaunchPlan) -> LaunchPlan:
    import copy

    from cmedbert.launch.plan import shown_env_value

    out = copy.deepcopy(plan)
    out.files = {name: f"(file {name} in this folder)" for name in out.files}  # .deepspeed_env holds values
    for env in [out.env, *(n.env for n in out.nodes), *([out.local.env] if out.local else [])]:
        for k, v in env.items():
            env[k] = shown_env_value(k, v)
    return out


def run_command(cmd: NodeCommand) -> int:
    """Run ``cmd`` here, in its folder with its environment added; SIGTERM/SIGINT/SIGUSR1 sent to
    this process are passed on (so a scheduler's stop request reaches the trainer, which writes a
    checkpoint), and the child's exit code is returned."""
    env = {**os.environ, **cmd.env}
    print(f"cmedbert launch: starting {cmd.argv[0]} ... (node {cmd.node_rank}, {cmd.host})", file=sys.stderr, flush=True)
    try:
        proc = subprocess.Popen(cmd.argv, env=env, cwd=cmd.cwd)
    except OSError as exc:
        raise CmedbertError(f"cannot start {cmd.argv[0]}: {exc}") from None

    def forward(signum, _frame):
        if proc.poll() is None:
            proc.send_signal(signum)

    old = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)}
    try:
        return proc.wait()
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def submit_slurm(plan: LaunchPlan) -> int:
    """sbatch the job script; the jobs folder must exist before SLURM opens --output in it."""
    Path(plan.run_dir + ".jobs").mkdir(parents=True, exist_ok=True)
    assert plan.local is not None
    out = subprocess.run(plan.local.argv, cwd=plan.local.cwd, capture_output=True, text=True)
    if out.returncode != 0:
        raise CmedbertError(f"sbatch failed ({out.returncode}): {out.stderr.strip() or out.stdout.strip()}")
    job = out.stdout.strip().split(";")[0]
    print(f"submitted SLURM job {job}; logs in {plan.run_dir}.jobs/ (slurm-{job}.out, {job}.r*/node-N.log); "
          f"run folder {plan.run_dir}")
    return 0
