"""The launch config: where to run (nodes, processes per node), how (deepspeed launcher,
torchrun, SLURM), with what environment, and which pretrain config to run.

One launch config plus one pretrain config give the exact command for every node.
Relative paths (pretrain config, output root, hostfile) are relative to ``workdir``, the
folder every node ``cd``s into before starting (a shared filesystem on real clusters).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal, Optional

from cmedbert.errors import ConfigError

LAUNCHERS = ("deepspeed", "torchrun", "slurm")

# What `env` may not set: the launchers own these, a value here would silently break ranks.
RESERVED_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "NODE_RANK",
                "MASTER_ADDR", "MASTER_PORT", "CMEDBERT_CONFIG_HASH")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PASS_ENV = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\*?$")
_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_SLURM_TIME = re.compile(r"^(\d+-)?\d{1,2}(:\d{2}){0,2}$|^\d+$")


@dataclass
class SlurmOptions:
    """``[slurm]``: the sbatch job (used when ``launcher = "slurm"``)."""

    partition: Optional[str] = field(default=None, metadata={"help": "sbatch --partition (None: cluster default)"})
    account: Optional[str] = field(default=None, metadata={"help": "sbatch --account (None: your default account)"})
    qos: Optional[str] = field(default=None, metadata={"help": "sbatch --qos (None: default)"})
    time: str = field(default="24:00:00", metadata={
        "help": "wall-clock limit of one job (sbatch --time, e.g. 2-00:00:00); requeued jobs get it again"})
    job_name: Optional[str] = field(default=None, metadata={"help": "sbatch --job-name (None: the run name)"})
    cpus_per_task: Optional[int] = field(default=None, metadata={
        "help": "CPU cores per node for the one torchrun task per node (sbatch --cpus-per-task)"})
    mem: Optional[str] = field(default=None, metadata={"help": "memory per node (sbatch --mem, e.g. 0 = all)"})
    gpus_per_node_flag: bool = field(default=True, metadata={
        "help": "request GPUs with --gpus-per-node=gpus_per_node (false on clusters that want --gres)"})
    extra_sbatch: list[str] = field(default_factory=list, metadata={
        "help": "more #SBATCH options, verbatim (e.g. '--exclusive', '--constraint=a100')"})
    setup: list[str] = field(default_factory=list, metadata={
        "help": "shell lines run on the batch node before srun (module load ..., source venv/bin/activate)"})
    requeue: bool = field(default=True, metadata={
        "help": "when the time limit nears (or the job is preempted) checkpoint and requeue the job; "
                "the requeued job resumes the same run folder from checkpoints/latest"})
    max_requeues: int = field(default=20, metadata={"help": "stop requeueing after this many restarts"})
    signal: Literal["USR1", "USR2"] = field(default="USR1", metadata={
        "help": "signal SLURM sends to the batch shell before the time limit (sbatch --signal=B:SIG@lead)"})
    signal_lead_seconds: int = field(default=300, metadata={
        "help": "seconds before the time limit the signal comes: the SIGTERM checkpoint must fit in it"})
    rdzv_conf: str = field(default="join_timeout=900", metadata={
        "help": "torchrun --rdzv_conf for the c10d rendezvous (seconds the nodes wait for each other)"})


@dataclass
class DeepSpeedOptions:
    """``[deepspeed]``: the deepspeed launcher (used when ``launcher = "deepspeed"``)."""

    # Only pdsh: the MPI runners start ranks directly and would not run the per-node commands this
    # stage prints. On SLURM use launcher = "slurm"; without ssh use no_ssh or launcher = "torchrun".
    runner: Literal["pdsh"] = field(default="pdsh", metadata={
        "help": "how the deepspeed launcher reaches the other nodes (deepspeed --launcher; pdsh over ssh)"})
    no_ssh: bool = field(default=False, metadata={
        "help": "no ssh/pdsh: run `cmedbert launch CONFIG --node-rank N` on every node yourself"})
    ssh_port: Optional[int] = field(default=None, metadata={"help": "ssh port for pdsh (None: ssh default)"})
    launcher_args: str = field(default="", metadata={"help": "deepspeed --launcher_args, verbatim"})


@dataclass
class LaunchConfig:
    """How to run one pretrain config on a cluster."""

    launcher: Literal["deepspeed", "torchrun", "slurm"] = field(metadata={
        "help": "deepspeed (launcher + hostfile, pdsh/ssh), torchrun (one command per node) or slurm (sbatch)"})
    run_name: str = field(metadata={"help": "the run's name: run folder is output_root/run_name"})
    pretrain_config: str = field(metadata={"help": "the pretrain config file (e.g. configs/pretrain/base.toml)"})
    pretrain_overrides: list[str] = field(default_factory=list, metadata={
        "help": "key=value overrides for the pretrain config, passed to every node"})
    output_root: str = field(default="runs", metadata={
        "help": "where run folders go (shared filesystem for multi-node runs)"})
    nodes: list[str] = field(default_factory=list, metadata={
        "help": "host names in node-rank order (alternative to hostfile; empty with launcher=slurm "
                "or inside a SLURM allocation: the allocation's nodes)"})
    hostfile: Optional[str] = field(default=None, metadata={
        "help": "MPI-style hostfile, one 'HOST slots=N' per line (alternative to nodes)"})
    nnodes: Optional[int] = field(default=None, metadata={
        "help": "number of nodes; required for slurm, else checked against nodes/hostfile/allocation"})
    gpus_per_node: int = field(default=8, metadata={"help": "training processes (GPUs) per node"})
    master_addr: Optional[str] = field(default=None, metadata={
        "help": "address of node 0 (rendezvous / process-group master); None: the first node"})
    master_port: int = field(default=29500, metadata={"help": "TCP port on master_addr for the rendezvous"})
    rendezvous: Literal["static", "c10d"] = field(default="static", metadata={
        "help": "torchrun rendezvous: static (fixed --node_rank per node) or c10d (elastic, ranks "
                "assigned on join; always used under slurm)"})
    env: dict[str, str] = field(default_factory=dict, metadata={
        "help": "environment set on every node (NCCL_*, GLOO_SOCKET_IFNAME, WANDB_*, HF_HOME, OMP_NUM_THREADS, ...)"})
    pass_env: list[str] = field(default_factory=list, metadata={
        "help": "names copied from the launching shell's environment to every node; 'WANDB_*' "
                "copies a prefix (values of *KEY*/*TOKEN*/*SECRET*/*PASSWORD* are masked when printed)"})
    python: str = field(default="python", metadata={
        "help": "Python interpreter with cmedbert installed, same path on every node"})
    workdir: Optional[str] = field(default=None, metadata={
        "help": "folder every node cd's into; relative paths are relative to it (None: the current folder)"})
    shutdown_timeout: int = field(default=240, metadata={
        "help": "seconds torchrun waits after forwarding SIGTERM for the trainer's checkpoint before SIGKILL"})
    slurm: SlurmOptions = field(default_factory=SlurmOptions)
    deepspeed: DeepSpeedOptions = field(default_factory=DeepSpeedOptions)

    def validate(self) -> None:
        if not _RUN_NAME.match(self.run_name):
            raise ConfigError(f"config key 'run_name': {self.run_name!r} must be letters, digits, '.', '_', '-'")
        if self.gpus_per_node < 1:
            raise ConfigError(f"config key 'gpus_per_node': must be >= 1, got {self.gpus_per_node}")
        if self.nnodes is not None and self.nnodes < 1:
            raise ConfigError(f"config key 'nnodes': must be >= 1, got {self.nnodes}")
        if not 1 <= self.master_port <= 65535:
            raise ConfigError(f"config key 'master_port': {self.master_port} is not a TCP port")
        if self.nodes and self.hostfile:
            raise ConfigError("config keys 'nodes' and 'hostfile' are alternatives: set one")
        for host in self.nodes:
            if not host or any(c.isspace() for c in host):
                raise ConfigError(f"config key 'nodes': {host!r} is not a host name")
        if len(set(self.nodes)) != len(self.nodes):
            raise ConfigError(f"config key 'nodes': a host is listed twice: {self.nodes}")
        for name in self.env:
            if not _ENV_NAME.match(name):
                raise ConfigError(f"config key 'env.{name}': not an environment variable name")
            if name in RESERVED_ENV:
                raise ConfigError(f"config key 'env.{name}': set by the launcher, do not set it in env")
        for name in self.pass_env:
            if not _PASS_ENV.match(name):
                raise ConfigError(f"config key 'pass_env': {name!r} is not a variable name or NAME_* prefix")
        for item in self.pretrain_overrides:
            if "=" not in item:
                raise ConfigError(f"config key 'pretrain_overrides': {item!r} is not key=value")
        if self.shutdown_timeout < 0:
            raise ConfigError("config key 'shutdown_timeout': must be >= 0 seconds")
        if not _SLURM_TIME.match(self.slurm.time):
            raise ConfigError(f"config key 'slurm.time': {self.slurm.time!r} is not a SLURM time "
                              "(MINUTES, HH:MM:SS or DAYS-HH:MM:SS)")
        if self.slurm.signal_lead_seconds < 0 or self.slurm.max_requeues < 0:
            raise ConfigError("config keys 'slurm.signal_lead_seconds' and 'slurm.max_requeues' must be >= 0")
        if self.launcher == "slurm" and self.slurm.requeue and self.shutdown_timeout >= self.slurm.signal_lead_seconds:
            raise ConfigError(
                f"shutdown_timeout={self.shutdown_timeout}s must be shorter than slurm.signal_lead_seconds="
                f"{self.slurm.signal_lead_seconds}s: the SIGTERM checkpoint has to finish before the time limit")
        if self.launcher == "slurm" and self.nnodes is None:
            raise ConfigError("config key 'nnodes' is required with launcher = \"slurm\" (nodes to allocate)")
