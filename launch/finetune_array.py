"""The fine-tune launch kind: a finetune sweep (checkpoints x tasks x seeds) as one SLURM job
array, one array task per job, all writing into one results folder.

    cmedbert launch configs/launch/finetune-slurm.toml [key=value ...] [--dry-run] [--write-to DIR]

A launch config with ``kind = "finetune"`` names a finetune config; array task ``i`` runs
``python -m cmedbert finetune CONFIG [overrides] --out OUTPUT_ROOT/RUN_NAME --job-index i``
(see :mod:`cmedbert.finetune.sweep`: the job's folder is built under a temporary name, its rows
are appended under a lock, the task that completes the sweep writes its manifest). Submitting
again runs only what is missing: a finished job's array task returns at once.

Every value that reaches the job script is single-quoted (``shlex.quote``); the only word the
shell expands is our own ``"$SLURM_ARRAY_TASK_ID"``. Control characters are refused. A dry run
writes its files only to ``--write-to`` (default: a new temporary folder, printed) and nothing
else, so it can be repeated anywhere.
"""

from __future__ import annotations

import posixpath
import re
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional, TextIO

from cmedbert.errors import CmedbertError, ConfigError

SBATCH = "finetune.sbatch"
JOBS = "jobs.tsv"
COMMANDS = "commands.txt"
STAGE = "launch"
ARRAY_INDEX = '"$SLURM_ARRAY_TASK_ID"'  # the one word the job script lets the shell expand
CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SLURM_TIME = re.compile(r"^(\d+-)?\d{1,2}(:\d{2}){0,2}$|^\d+$")
RESERVED_ENV = ("CUDA_VISIBLE_DEVICES", "CMEDBERT_SWEEP_IDENTITY", "RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass
class ArraySlurm:
    """``[slurm]`` of a fine-tune launch: the resources of ONE array task (one job)."""

    partition: Optional[str] = field(default=None, metadata={"help": "sbatch --partition (None: cluster default)"})
    account: Optional[str] = field(default=None, metadata={"help": "sbatch --account"})
    qos: Optional[str] = field(default=None, metadata={"help": "sbatch --qos"})
    time: str = field(default="04:00:00", metadata={"help": "wall-clock limit of one array task (one job)"})
    job_name: Optional[str] = field(default=None, metadata={"help": "sbatch --job-name (None: the run name)"})
    gpus_per_task: int = field(default=1, metadata={"help": "GPUs per array task (0: CPU-only tasks)"})
    gpus_flag: bool = field(default=True, metadata={"help": "request them with --gpus-per-task (false: use extra_sbatch, e.g. '--gres=gpu:1')"})
    cpus_per_task: Optional[int] = field(default=8, metadata={"help": "CPU cores per array task (sbatch --cpus-per-task)"})
    mem: Optional[str] = field(default=None, metadata={"help": "memory per array task (sbatch --mem)"})
    max_parallel: Optional[int] = field(default=None, metadata={"help": "at most this many array tasks at once (--array=...%N; None: no limit)"})
    extra_sbatch: list[str] = field(default_factory=list, metadata={"help": "more #SBATCH options, verbatim (quoted as one word each)"})
    setup: list[str] = field(default_factory=list, metadata={"help": "shell lines run before the job (module load ..., source venv/bin/activate): yours, not quoted"})


@dataclass
class FinetuneLaunchConfig:
    """A finetune sweep on a SLURM cluster, one array task per (checkpoint, task, seed)."""

    kind: Literal["finetune"] = field(metadata={"help": "the launch kind: finetune (pretraining launch configs have no kind)"})
    run_name: str = field(metadata={"help": "the sweep's name: its results folder is output_root/run_name"})
    finetune_config: str = field(metadata={"help": "the finetune config file (models, tasks, seeds, hp)"})
    finetune_overrides: list[str] = field(default_factory=list, metadata={"help": "key=value overrides for the finetune config, passed to every array task"})
    launcher: Literal["slurm"] = field(default="slurm", metadata={"help": "slurm (sbatch --array); for one machine run `cmedbert finetune` with workers"})
    output_root: str = field(default="runs", metadata={"help": "where the results folder goes (a shared filesystem)"})
    python: str = field(default="python", metadata={"help": "Python interpreter with cmedbert installed, same path on every node"})
    workdir: Optional[str] = field(default=None, metadata={"help": "folder every task cd's into; relative paths are relative to it (None: the current folder)"})
    env: dict[str, str] = field(default_factory=dict, metadata={"help": "environment of every array task (HF_HOME, OMP_NUM_THREADS, ...)"})
    slurm: ArraySlurm = field(default_factory=ArraySlurm)

    def validate(self) -> None:
        if not _RUN_NAME.match(self.run_name):
            raise ConfigError(f"config key 'run_name': {self.run_name!r} must be letters, digits, '.', '_', '-'")
        for item in self.finetune_overrides:
            if "=" not in item:
                raise ConfigError(f"config key 'finetune_overrides': {item!r} is not key=value")
        for name in self.env:
            if not _ENV_NAME.match(name):
                raise ConfigError(f"config key 'env.{name}': not an environment variable name")
            if name in RESERVED_ENV:
                raise ConfigError(f"config key 'env.{name}': set by the launcher or the sweep, do not set it in env")
        if not _SLURM_TIME.match(self.slurm.time):
            raise ConfigError(f"config key 'slurm.time': {self.slurm.time!r} is not a SLURM time")
        if self.slurm.gpus_per_task < 0 or (self.slurm.max_parallel is not None and self.slurm.max_parallel < 1):
            raise ConfigError("config keys 'slurm.gpus_per_task' (>= 0) and 'slurm.max_parallel' (>= 1)")
        for key, value in _shell_fields(self):
            if value is not None and CONTROL.search(value):
                raise ConfigError(f"config key '{key}': {value!r} contains a control character (newline, carriage "
                                  "return, NUL, ...), which cannot be passed through a shell script safely")


def _shell_fields(cfg: FinetuneLaunchConfig) -> list[tuple[str, Optional[str]]]:
    s = cfg.slurm
    out = [("finetune_config", cfg.finetune_config), ("output_root", cfg.output_root), ("python", cfg.python),
           ("workdir", cfg.workdir), ("slurm.partition", s.partition), ("slurm.account", s.account),
           ("slurm.qos", s.qos), ("slurm.job_name", s.job_name), ("slurm.mem", s.mem)]
    out += [(f"finetune_overrides[{i}]", v) for i, v in enumerate(cfg.finetune_overrides)]
    out += [(f"slurm.extra_sbatch[{i}]", v) for i, v in enumerate(s.extra_sbatch)]
    out += [(f"slurm.setup[{i}]", v) for i, v in enumerate(s.setup)]
    out += [(f"env.{k}", v) for k, v in cfg.env.items()]
    return out


def is_finetune_launch(path: str | None, overrides: list[str]) -> bool:
    """Whether a launch config (file + overrides) is of the fine-tune kind."""
    from cmedbert.config import apply_overrides, read_config_file

    data = apply_overrides(read_config_file(path) if path else {}, [o for o in overrides if o.startswith("kind=")])
    return data.get("kind") == "finetune"


@dataclass
class ArrayPlan:
    workdir: str
    out_dir: str          # the sweep's results folder
    jobs_dir: str         # SLURM output files
    launch_dir: str       # where the job script and listings are written
    identity: str         # sweep identity hash (checked by every array task)
    jobs: list            # finetune.sweep.Job
    argv: list[str]       # the array task's command (ARRAY_INDEX as its last word)
    files: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def build_plan(cfg: FinetuneLaunchConfig, base: Path, workdir: str, launch_dir: str) -> ArrayPlan:
    from cmedbert.config import load_config
    from cmedbert.finetune.config import FinetuneConfig
    from cmedbert.finetune.sweep import plan_jobs, sweep_identity

    ft_path = Path(cfg.finetune_config)
    ft_local = ft_path if ft_path.is_absolute() else base / ft_path
    fcfg = load_config(FinetuneConfig, ft_local, list(cfg.finetune_overrides))
    jobs = plan_jobs(fcfg)
    out_dir = posixpath.join(workdir, cfg.output_root, cfg.run_name)
    if posixpath.isabs(cfg.output_root):
        out_dir = posixpath.join(cfg.output_root, cfg.run_name)
    argv = [cfg.python, "-m", "cmedbert", "finetune", cfg.finetune_config, *cfg.finetune_overrides,
            "--out", out_dir, "--job-index", ARRAY_INDEX]
    plan = ArrayPlan(workdir=workdir, out_dir=out_dir, jobs_dir=out_dir + ".jobs", launch_dir=launch_dir,
                     identity=sweep_identity(fcfg), jobs=jobs, argv=argv)
    plan.files = {SBATCH: render_sbatch(cfg, plan), JOBS: render_jobs(plan)}
    return plan


def _word(w: str) -> str:
    return ARRAY_INDEX if w == ARRAY_INDEX else shlex.quote(w)


def render_jobs(plan: ArrayPlan) -> str:
    return "array_index\tcheckpoint\ttask\tseed\n" + "".join(
        f"{j.index}\t{j.checkpoint}\t{j.task}\t{j.seed}\n" for j in plan.jobs)


def render_sbatch(cfg: FinetuneLaunchConfig, plan: ArrayPlan) -> str:
    s, q = cfg.slurm, shlex.quote
    n = len(plan.jobs)
    opts = [f"--job-name={q(s.job_name or cfg.run_name)}",
            f"--array=0-{n - 1}" + (f"%{s.max_parallel}" if s.max_parallel else ""), "--ntasks=1"]
    if s.gpus_per_task and s.gpus_flag:
        opts.append(f"--gpus-per-task={s.gpus_per_task}")
    if s.cpus_per_task is not None:
        opts.append(f"--cpus-per-task={s.cpus_per_task}")
    for key in ("mem", "partition", "account", "qos"):
        if getattr(s, key) is not None:
            opts.append(f"--{key}={q(getattr(s, key))}")
    opts += [f"--time={s.time}", f"--output={q(plan.jobs_dir + '/slurm-%A_%a.out')}", "--open-mode=append"]
    opts += [q(o) for o in s.extra_sbatch]
    lines = ["#!/bin/bash",
             f"# Generated by `cmedbert launch` (kind finetune) for sweep {cfg.run_name}: {n} jobs "
             f"(checkpoint x task x seed, listed in {JOBS}), sweep identity {plan.identity}.",
             "# Array task i fine-tunes job i into the one results folder; a finished job returns at once.",
             *(f"#SBATCH {o}" for o in opts), "",
             "set -uo pipefail",
             f"cd {q(plan.workdir)} || exit 2"]
    if s.setup:
        lines += ["", "# setup (slurm.setup)", *s.setup]
    lines += ["", "# environment of every array task"]
    lines += [f"export {k}={q(v)}" for k, v in cfg.env.items()]
    lines += [f"export CMEDBERT_SWEEP_IDENTITY={q(plan.identity)}  # each task checks its config hashes to this",
              'echo "cmedbert: array job ${SLURM_ARRAY_JOB_ID:-?} task $SLURM_ARRAY_TASK_ID on $(hostname)"',
              "exec " + " ".join(_word(w) for w in plan.argv)]
    return "\n".join(lines) + "\n"


def render_dry_run(cfg: FinetuneLaunchConfig, plan: ArrayPlan) -> str:
    lines = [f"# cmedbert launch (kind finetune, SLURM array): sweep {cfg.run_name}",
             f"# finetune config {cfg.finetune_config}; {len(plan.jobs)} jobs; results folder {plan.out_dir}",
             f"# sweep identity {plan.identity}"]
    lines += [f"# note: {n}" for n in plan.notes]
    lines += ["", "## jobs (array index: checkpoint task seed)"]
    lines += [f"job {j.index}: {j.checkpoint} {j.task} seed {j.seed}" for j in plan.jobs]
    lines += ["", f"## submit: sbatch {shlex.quote(posixpath.join(plan.launch_dir, SBATCH))}",
              "## every array task runs (in " + shlex.quote(plan.workdir) + "):",
              " ".join(_word(w) for w in plan.argv), "", f"## {SBATCH}", plan.files[SBATCH]]
    return "\n".join(lines)


def write_launch_folder(folder: Path, cfg: FinetuneLaunchConfig, plan: ArrayPlan, text: str, inputs: list[Path]) -> None:
    from cmedbert.launch.run import write_files_folder

    write_files_folder(folder, {**plan.files, COMMANDS: text}, modes={SBATCH: 0o755}, cfg=cfg, inputs=inputs,
                       counts={"array_tasks": len(plan.jobs)},
                       extra={"launch": {"launcher": "slurm-array", "kind": "finetune", "identity": plan.identity,
                                         "run_dir": plan.out_dir}})


def main(cfg: FinetuneLaunchConfig, *, dry_run: bool = False, write_to: Path | None = None,
         stdout: TextIO | None = None) -> int:
    import sys

    from cmedbert.launch.run import resolve_workdir

    stdout = stdout or sys.stdout
    workdir, base, note = resolve_workdir(cfg.workdir, cfg.finetune_config, dry_run)
    notes = [note] if note else []
    if dry_run and write_to is None:  # never the cluster path: a dry run writes only where it says
        write_to = Path(tempfile.mkdtemp(prefix=f"cmedbert-launch-{cfg.run_name}-"))
        notes.append(f"dry run: launch files written to {write_to} (a real launch writes them next to the results folder)")
    launch_dir = write_to.absolute() if write_to else None
    plan = build_plan(cfg, base, str(workdir), str(launch_dir) if launch_dir else "")
    if launch_dir is None:
        plan.launch_dir = plan.out_dir + ".launch"
    if not dry_run and shutil.which("sbatch") is None:
        raise CmedbertError("sbatch not found on this machine: run `cmedbert launch` on a SLURM login node "
                            "(or --dry-run to see the job script)")
    plan.notes = notes
    text = render_dry_run(cfg, plan)
    ft = Path(cfg.finetune_config)
    write_launch_folder(Path(plan.launch_dir), cfg, plan, text, inputs=[ft if ft.is_absolute() else base / ft])
    if dry_run:
        stdout.write(text)
        stdout.flush()
        return 0
    Path(plan.jobs_dir).mkdir(parents=True, exist_ok=True)  # sbatch opens --output there
    done = subprocess.run(["sbatch", str(Path(plan.launch_dir) / SBATCH)], cwd=plan.workdir)
    return done.returncode
