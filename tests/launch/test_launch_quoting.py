"""Values that reach a shell stay text: `$(...)`, backticks, `;`, spaces and quotes in every field
of a launch config (paths, overrides, python, environment, #SBATCH options) are passed on as
written and never run. The generated files are executed for real (bash runs job.sbatch with
stand-ins for srun/scontrol; the real DeepSpeed runner reads .deepspeed_env and talks to a
stand-in pdsh that hands the remote command to bash), and no marker file may appear."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cmedbert.cli import main as cmedbert

REPO = Path(__file__).resolve().parents[2]
# every way a shell could be talked into running `touch`: command substitution, backticks, `;`,
# a closing single quote, a closing double quote, plus spaces
EVIL = "a b;touch pwned1 $(touch pwned2) `touch pwned3` ' ;touch pwned4 ' \" ;touch pwned5 \" $HOME"

DUMP = """#!/bin/bash
# stand-in for python / the node launcher: record argv (NUL-separated) and the value of EVIL_VALUE
for a in "$@"; do printf '%s\\0' "$a"; done > "$FAKE/argv"
printf '%s' "$EVIL_VALUE" > "$FAKE/env"
"""


def no_markers(*roots: Path) -> list[Path]:
    return [p for root in roots for p in root.rglob("pwned*")]


def read_argv(fake: Path) -> list[str]:
    return (fake / "argv").read_text().split("\0")[:-1]


def stand_in(fake: Path, name: str, text: str) -> Path:
    path = fake / name
    path.write_text(text)
    path.chmod(0o755)
    return path


@pytest.fixture
def fake(tmp_path) -> Path:
    folder = tmp_path / "fake"
    folder.mkdir()
    return folder


@pytest.fixture
def evil_pretrain(tiny_pretrain, tmp_path) -> Path:
    """The tiny pretrain config, under a file name that is itself hostile."""
    path = tmp_path / f"pre {EVIL}.toml"
    shutil.copy(tiny_pretrain, path)
    return path


def test_sbatch_script_runs_hostile_values_as_text(evil_pretrain, tmp_path, write_launch, fake, free_port):
    from cmedbert.launch.plan import worker_args

    workdir = tmp_path / f"work {EVIL}"
    workdir.mkdir()
    python = stand_in(fake, f"py {EVIL}", DUMP)
    stand_in(fake, "srun", '#!/bin/bash\nwhile [ $# -gt 0 ]; do case "$1" in -*) shift;; *) break;; esac; done\n'
                           'exec "$@"\n')
    stand_in(fake, "scontrol", "#!/bin/bash\necho 127.0.0.1\n")
    cfg = write_launch(launcher="slurm", run_name="sl", pretrain_config=str(evil_pretrain),
                       pretrain_overrides=[f"metrics.wandb_project={EVIL}"], output_root=str(workdir / f"runs {EVIL}"),
                       nnodes=1, gpus_per_node=1, master_port=free_port, python=str(python), workdir=str(workdir),
                       env={"EVIL_VALUE": EVIL},
                       slurm={"partition": EVIL, "account": EVIL, "qos": EVIL, "job_name": EVIL, "mem": EVIL,
                              "rdzv_conf": f"join_timeout=9,{EVIL}"})
    target = tmp_path / "plan"
    assert cmedbert(["launch", str(cfg), "--dry-run", "--write-to", str(target)]) == 0
    script = (target / "job.sbatch").read_text()

    # sbatch reads #SBATCH lines with shell-like words: every value comes back whole
    options = dict(shlex.split(line[len("#SBATCH "):])[0].split("=", 1) for line in script.splitlines()
                   if line.startswith("#SBATCH ") and "=" in line)
    for key in ("--partition", "--account", "--qos", "--job-name", "--mem"):
        assert options[key] == EVIL, key
    assert options["--output"] == f"{workdir}/runs {EVIL}/sl.jobs/slurm-%j.out"

    env = dict(os.environ, PATH=f"{fake}:{os.environ['PATH']}", FAKE=str(fake), SLURM_JOB_ID="777",
               SLURM_NNODES="1", SLURM_JOB_NODELIST="127.0.0.1")
    done = subprocess.run(["bash", str(target / "job.sbatch")], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert no_markers(tmp_path) == []
    run_dir = f"{workdir}/runs {EVIL}/sl"
    assert (Path(run_dir + ".jobs") / "777.r0" / "nodes.txt").is_file()  # JOB_DIR: the quoted path
    argv = read_argv(fake)
    assert argv[argv.index("--rdzv_endpoint=127.0.0.1:%d" % free_port) + 1] == "--rdzv_id=777"
    assert f"--rdzv_conf=join_timeout=9,{EVIL}" in argv
    from cmedbert.config import load_config
    from cmedbert.launch.config import LaunchConfig

    assert argv[argv.index("-m", 3) + 1:] == worker_args(load_config(LaunchConfig, cfg), run_dir)
    assert str(evil_pretrain) in argv and f"metrics.wandb_project={EVIL}" in argv
    assert (fake / "env").read_text() == EVIL


def test_printed_node_commands_run_hostile_values_as_text(evil_pretrain, tmp_path, write_launch, fake, capsys):
    """What the dry run prints for each node (cd, exports, the command) is what a user pastes into
    a shell: run it with bash and compare with the planned argv."""
    workdir = tmp_path / f"work {EVIL}"
    workdir.mkdir()
    python = stand_in(fake, f"py {EVIL}", DUMP)
    cfg = write_launch(launcher="torchrun", run_name="tr", pretrain_config=str(evil_pretrain),
                       pretrain_overrides=[f"metrics.wandb_project={EVIL}"], output_root=f"runs {EVIL}",
                       nodes=["127.0.0.1", "localhost"], gpus_per_node=1, python=str(python),
                       workdir=str(workdir), env={"EVIL_VALUE": EVIL})
    assert cmedbert(["launch", str(cfg), "--dry-run", "--write-to", str(tmp_path / "plan")]) == 0
    out = capsys.readouterr().out
    block = out.split("== node 1: localhost ==\n")[1]
    done = subprocess.run(["bash", "-c", block], cwd=tmp_path, env=dict(os.environ, FAKE=str(fake)),
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert no_markers(tmp_path) == []
    argv = read_argv(fake)
    assert argv[:3] == ["-m", "torch.distributed.run", "--nnodes=2"] and "--node_rank=1" in argv
    assert argv[-6:] == ["cmedbert.launch.worker", "pretrain", str(evil_pretrain), f"metrics.wandb_project={EVIL}",
                         "--out", f"{workdir}/runs {EVIL}/tr"]
    assert (fake / "env").read_text() == EVIL


@pytest.mark.slow
def test_deepspeed_env_file_reaches_the_remote_shell_as_text(tiny_pretrain, tmp_path, write_launch, fake):
    """The real DeepSpeed runner reads .deepspeed_env and builds the pdsh command; the stand-in pdsh
    runs it with bash (the python that would start the node launcher replaced by a recorder)."""
    stand_in(fake, "dump", DUMP)
    stand_in(fake, "ssh", "#!/bin/sh\nexit 0\n")  # the runner's passwordless-ssh probe
    # pdsh joins its arguments into one command line for the remote shell: so does the stand-in
    stand_in(fake, "pdsh", f"""#!{sys.executable}
import os, subprocess, sys
args = sys.argv[1:]
while args[0] in ("-S", "-f", "-w"):
    args = args[2:] if args[0] != "-S" else args[1:]
cmd = " ".join(args).replace("{sys.executable} -u -m deepspeed.launcher.launch", os.environ["FAKE"] + "/dump")
sys.exit(subprocess.run(["bash", "-c", cmd.replace("%n", "0")]).returncode)
""")
    cfg = write_launch(launcher="deepspeed", run_name="ds", pretrain_config=str(tiny_pretrain),
                       output_root=str(tmp_path / "runs"), nodes=["127.0.0.1", "localhost"], gpus_per_node=1,
                       python=sys.executable, workdir=str(tmp_path), env={"EVIL_VALUE": EVIL, "NCCL_DEBUG": "WARN"})
    env = dict(os.environ, PATH=f"{fake}:{os.environ['PATH']}", FAKE=str(fake))
    env.pop("CMEDBERT_CONFIG_HASH", None)
    done = subprocess.run([sys.executable, "-m", "cmedbert", "launch", str(cfg)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=170)
    assert done.returncode == 0, done.stderr[-3000:]
    assert no_markers(tmp_path, REPO) == []
    assert (fake / "env").read_text() == EVIL
    assert read_argv(fake)[-2:] == ["--out", str(tmp_path / "runs" / "ds")]


def test_deepspeed_over_pdsh_refuses_a_word_the_remote_shell_would_run(evil_pretrain, tmp_path, write_launch,
                                                                       capsys):
    """DeepSpeed's pdsh runner does not quote the trainer's arguments for the remote shell: a
    hostile path or override is refused with one line instead of being run on every node."""
    cfg = write_launch(launcher="deepspeed", run_name="ds", pretrain_config=str(evil_pretrain),
                       output_root=str(tmp_path / "runs"), nodes=["127.0.0.1", "localhost"], gpus_per_node=1,
                       python=sys.executable)
    rc = cmedbert(["launch", str(cfg), "--dry-run", "--write-to", str(tmp_path / "plan")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "the remote shell would interpret" in err, err
    assert not (tmp_path / "plan").exists() and no_markers(tmp_path) == []


@pytest.mark.parametrize("field", ["pretrain_overrides", "env", "slurm.partition"])
def test_a_newline_in_a_value_is_refused(tiny_pretrain, tmp_path, write_launch, capsys, field):
    """A newline would end an #SBATCH option or a comment and start a new script line."""
    value = "x\ntouch pwned"
    extra = {"pretrain_overrides": {"pretrain_overrides": [f"metrics.wandb_project={value}"]},
             "env": {"env": {"EVIL_VALUE": value}}, "slurm.partition": {"slurm": {"partition": value}}}[field]
    cfg = write_launch(launcher="slurm", run_name="sl", pretrain_config=str(tiny_pretrain), nnodes=1, gpus_per_node=1,
                       output_root=str(tmp_path / "runs"), **extra)
    rc = cmedbert(["launch", str(cfg), "--dry-run", "--write-to", str(tmp_path / "plan")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "control character" in err, err
    assert not (tmp_path / "plan").exists()
