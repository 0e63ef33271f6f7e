"""Launch config + nodes + pretrain config -> the exact command and environment of every node,
and the files the launcher needs (hostfile, .deepspeed_env, sbatch script). Pure functions:
nothing here touches the network, the cluster or the clock, so the output is golden-testable.
"""

from __future__ import annotations

import base64
import json
import posixpath
import re
import shlex
from dataclasses import asdict, dataclass, field
from typing import Mapping

from cmedbert.errors import CmedbertError
from cmedbert.launch.config import LaunchConfig
from cmedbert.launch.hosts import Host, render_hostfile

WORKER_MODULE = "cmedbert.launch.worker"  # checks the config hash, then runs `cmedbert pretrain`
HASH_ENV = "CMEDBERT_CONFIG_HASH"
SECRET = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD", re.IGNORECASE)
CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # tab is fine
PDSH_UNSAFE = re.compile(r"[$`\\\"';&|<>(){}*?\[\]~#!\x00-\x1f\x7f]")

HOSTFILE = "hostfile"
DS_ENV = ".deepspeed_env"
SBATCH = "job.sbatch"


@dataclass
class NodeCommand:
    node_rank: int
    host: str
    argv: list[str]  # what runs on that node (shell words; $VARS only inside sbatch-run commands)
    env: dict[str, str]  # environment added on that node
    cwd: str
    started_by: str  # who starts it: you, the deepspeed launcher via pdsh, srun


@dataclass
class LaunchPlan:
    launcher: str
    hosts: list[str]
    nproc_per_node: int
    master_addr: str
    master_port: int
    workdir: str
    run_dir: str
    launch_dir: str  # hostfile / sbatch script / commands.txt go here
    config_hash: str
    env: dict[str, str]  # environment every node gets
    nodes: list[NodeCommand]
    local: NodeCommand | None  # what `cmedbert launch` runs on this machine (None: nothing, e.g. dry run of a remote node)
    files: dict[str, str] = field(default_factory=dict)  # file name in launch_dir -> content
    notes: list[str] = field(default_factory=list)  # preflight findings shown in the dry run

    @property
    def nnodes(self) -> int:
        return len(self.hosts)

    @property
    def world_size(self) -> int:
        return self.nnodes * self.nproc_per_node

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, ensure_ascii=False) + "\n"


def node_env(cfg: LaunchConfig, config_hash: str, environ: Mapping[str, str]) -> dict[str, str]:
    """``cfg.env``, then ``pass_env`` names copied from ``environ``, then the config hash."""
    env = dict(cfg.env)
    for name in cfg.pass_env:
        if name.endswith("*"):
            env.update({k: v for k, v in sorted(environ.items()) if k.startswith(name[:-1]) and k not in env})
        elif name in environ:
            env.setdefault(name, environ[name])
        else:
            raise CmedbertError(f"config key 'pass_env': {name} is not set in this environment")
    env[HASH_ENV] = config_hash
    return env


def worker_args(cfg: LaunchConfig, run_dir: str) -> list[str]:
    """The trainer invocation every rank runs (module form, after ``python -m``)."""
    return [WORKER_MODULE, "pretrain", cfg.pretrain_config, *cfg.pretrain_overrides, "--out", run_dir]


def build_plan(cfg: LaunchConfig, hosts: list[Host], *, config_hash: str, workdir: str,
               launch_config: str, cli_overrides: list[str] = (), node_rank: int | None = None,
               environ: Mapping[str, str] | None = None, launch_dir: str | None = None) -> LaunchPlan:
    """Every node's command for ``cfg`` on ``hosts``. ``node_rank`` is the node this invocation
    is (torchrun / deepspeed without ssh); ``launch_config`` and ``cli_overrides`` are quoted in
    the commands users type on the other nodes; ``launch_dir`` replaces RUN_DIR.launch."""
    environ = environ if environ is not None else {}
    run_dir = posixpath.join(workdir, cfg.output_root, cfg.run_name)
    launch_dir = launch_dir or run_dir + ".launch"
    # under slurm the first node of the allocation hosts the rendezvous (set in the job script)
    master = "$MASTER_ADDR" if cfg.launcher == "slurm" else cfg.master_addr or hosts[0].name
    env = node_env(cfg, config_hash, environ)
    plan = LaunchPlan(launcher=cfg.launcher, hosts=[h.name for h in hosts], nproc_per_node=cfg.gpus_per_node,
                      master_addr=master, master_port=cfg.master_port, workdir=workdir, run_dir=run_dir,
                      launch_dir=launch_dir, config_hash=config_hash, env=env, nodes=[], local=None)
    relaunch = ["cmedbert", "launch", launch_config, *cli_overrides]
    if cfg.launcher == "torchrun":
        _plan_torchrun(plan, cfg, relaunch, node_rank)
    elif cfg.launcher == "deepspeed":
        _plan_deepspeed(plan, cfg, relaunch, node_rank)
    else:
        _plan_slurm(plan, cfg)
    check_printable(plan, cfg)
    if cfg.launcher == "deepspeed" and plan.nnodes > 1 and not cfg.deepspeed.no_ssh:
        check_pdsh_safe(plan, cfg)
    return plan


def _you(host: str, relaunch: list[str], rank: int, config_hash: str) -> str:
    """The line a user types on ``host`` to start its node (per-node launchers)."""
    return f"you, on {host}: " + shlex.join([*relaunch, "--node-rank", str(rank), "--expect-config-hash", config_hash])


# ---------------------------------------------------------------- torchrun


def torchrun_argv(cfg: LaunchConfig, plan: LaunchPlan, node_rank: int | None, *, rendezvous: str,
                  endpoint: str, rdzv_id: str, rdzv_conf: str | None = None) -> list[str]:
    argv = [cfg.python, "-m", "torch.distributed.run", f"--nnodes={plan.nnodes}",
            f"--nproc_per_node={plan.nproc_per_node}"]
    if rendezvous == "static":
        argv += [f"--node_rank={node_rank}", f"--master_addr={plan.master_addr}",
                 f"--master_port={plan.master_port}"]
    else:  # c10d: ranks are handed out as nodes join; --node_rank would be ignored
        argv += ["--rdzv_backend=c10d", f"--rdzv_endpoint={endpoint}", f"--rdzv_id={rdzv_id}"]
        if rdzv_conf:
            argv.append(f"--rdzv_conf={rdzv_conf}")
    # no elastic restarts (a failure should stop the run, resuming is explicit); give the trainer
    # shutdown_timeout seconds after a forwarded SIGTERM to write its checkpoint
    argv += ["--max_restarts=0", f"--shutdown_timeout={cfg.shutdown_timeout}"]
    return argv + ["-m", *worker_args(cfg, plan.run_dir)]


def _plan_torchrun(plan: LaunchPlan, cfg: LaunchConfig, relaunch: list[str], node_rank: int | None) -> None:
    endpoint = f"{plan.master_addr}:{plan.master_port}"
    for rank, host in enumerate(plan.hosts):
        argv = torchrun_argv(cfg, plan, rank, rendezvous=cfg.rendezvous, endpoint=endpoint, rdzv_id=cfg.run_name)
        plan.nodes.append(NodeCommand(rank, host, argv, dict(plan.env), plan.workdir,
                                      _you(host, relaunch, rank, plan.config_hash)))
    if node_rank is not None:
        plan.local = plan.nodes[node_rank]


# ---------------------------------------------------------------- deepspeed


def world_info(plan: LaunchPlan) -> str:
    """deepspeed's --world_info: base64 of {host: [slot, ...]} as its runner encodes it."""
    info = {h: list(range(plan.nproc_per_node)) for h in plan.hosts}
    return base64.urlsafe_b64encode(json.dumps(info).encode("utf-8")).decode("utf-8")


def deepspeed_env_value(name: str, value: str) -> str:
    """``value`` as a .deepspeed_env line must hold it. DeepSpeed's runner strips the value and,
    when it has any character outside ``[\\w@%+=:,./-]``, wraps it in double quotes for the remote
    shell (``export K="V";``), where $, backtick, backslash and double quote stay special: escape
    exactly those, so the remote shell sees the value as text (the escaped form always has a
    backslash, so DeepSpeed always wraps it)."""
    if CONTROL.search(value) or value != value.strip():
        raise CmedbertError(f"environment variable {name}: {value!r} has a newline, a control character or "
                            "leading/trailing white space, which cannot go through .deepspeed_env")
    return re.sub(r'([$`"\\])', r"\\\1", value)


def render_deepspeed_env(env: Mapping[str, str]) -> str:
    """The DS_ENV_FILE the deepspeed runner exports on every remote node (KEY=VALUE lines)."""
    return "".join(f"{k}={deepspeed_env_value(k, v)}\n" for k, v in env.items())


def _plan_deepspeed(plan: LaunchPlan, cfg: LaunchConfig, relaunch: list[str], node_rank: int | None) -> None:
    ds = cfg.deepspeed
    hostfile = posixpath.join(plan.launch_dir, HOSTFILE)
    env_file = posixpath.join(plan.launch_dir, DS_ENV)
    plan.files[HOSTFILE] = render_hostfile([Host(h) for h in plan.hosts], plan.nproc_per_node)
    plan.files[DS_ENV] = render_deepspeed_env(plan.env)
    runner = [cfg.python, "-m", "deepspeed.launcher.runner", f"--hostfile={hostfile}",
              f"--master_addr={plan.master_addr}", f"--master_port={plan.master_port}",
              f"--num_nodes={plan.nnodes}", f"--num_gpus={plan.nproc_per_node}", f"--launcher={ds.runner}"]
    if plan.nnodes == 1:  # one node runs locally; the runner's ssh probe of the host would only fail
        runner.append("--no_ssh_check")
    if ds.ssh_port is not None:
        runner.append(f"--ssh_port={ds.ssh_port}")
    if ds.launcher_args:
        runner.append(f"--launcher_args={ds.launcher_args}")
    tail = ["--module", *worker_args(cfg, plan.run_dir)]
    runner_env = {"DS_ENV_FILE": env_file, **plan.env}
    base = [cfg.python, "-u", "-m", "deepspeed.launcher.launch", f"--world_info={world_info(plan)}"]
    addr = [f"--master_addr={plan.master_addr}", f"--master_port={plan.master_port}"]
    pdsh = plan.nnodes > 1 and not ds.no_ssh
    for rank, host in enumerate(plan.hosts):
        if pdsh:  # what deepspeed's PDSH runner sends to each host (pdsh fills in %n = rank)
            argv = [*base, f"--node_rank={rank}", *addr, "--module", "--enable_each_rank_log=None",
                    *worker_args(cfg, plan.run_dir)]
            who = f"the deepspeed launcher on {plan.hosts[0]}, via {ds.runner}/ssh"
        else:  # local launch (one node, or no_ssh: every node starts its own)
            argv = [*base, *addr, *([f"--node_rank={rank}"] if ds.no_ssh else []), "--module",
                    "--enable_each_rank_log=None", "--log_level=info", *worker_args(cfg, plan.run_dir)]
            who = ("the deepspeed launcher started by " + _you(host, relaunch, rank, plan.config_hash)
                   if ds.no_ssh else "the deepspeed launcher started by `cmedbert launch` on this machine")
        plan.nodes.append(NodeCommand(rank, host, argv, dict(plan.env), plan.workdir, who))
    if not ds.no_ssh:
        plan.local = NodeCommand(0, plan.hosts[0], runner + tail, runner_env, plan.workdir, "cmedbert launch")
    elif node_rank is not None:  # each node runs its own runner for its rank
        plan.local = NodeCommand(node_rank, plan.hosts[node_rank], runner + ["--no_ssh", f"--node_rank={node_rank}"]
                                 + tail, runner_env, plan.workdir, "cmedbert launch")


# ---------------------------------------------------------------- slurm


def _plan_slurm(plan: LaunchPlan, cfg: LaunchConfig) -> None:
    sbatch_path = posixpath.join(plan.launch_dir, SBATCH)
    # inside the job: rendezvous at the first node of the allocation, one id per job
    argv = torchrun_argv(cfg, plan, None, rendezvous="c10d", endpoint="$MASTER_ADDR:$MASTER_PORT",
                         rdzv_id="$SLURM_JOB_ID", rdzv_conf=cfg.slurm.rdzv_conf)
    for rank, host in enumerate(plan.hosts):
        plan.nodes.append(NodeCommand(rank, host, argv, dict(plan.env), plan.workdir,
                                      "srun in the sbatch job (one torchrun per node; ranks from the c10d rendezvous)"))
    plan.files[SBATCH] = render_sbatch(cfg, plan, argv)
    plan.local = NodeCommand(0, "(submit host)", ["sbatch", "--parsable", sbatch_path], {}, plan.workdir,
                             "cmedbert launch")


# The only words the shell may expand: the ones this module writes with SLURM's variables in
# them. Everything else (paths, overrides, python, env values) is quoted with single quotes, so a
# `$(...)`, backtick or `;` in a value is text, never a command.
EXPANDED_WORDS = frozenset({"--rdzv_endpoint=$MASTER_ADDR:$MASTER_PORT", "--rdzv_id=$SLURM_JOB_ID"})


def _shell_word(word: str) -> str:
    """Quote for bash: single quotes (no expansion), except the few words of our own that carry
    $MASTER_ADDR / $SLURM_JOB_ID (:data:`EXPANDED_WORDS`), which are double-quoted."""
    if word in EXPANDED_WORDS:
        return '"' + word + '"'
    return shlex.quote(word)


def check_printable(plan: LaunchPlan, cfg: LaunchConfig) -> None:
    """Refuse control characters (newline, CR, NUL, ...) in anything that reaches a shell line, a
    comment or an #SBATCH line: quoting cannot keep a newline from ending a comment or an option."""
    s = cfg.slurm
    fields = {"workdir": plan.workdir, "output_root": cfg.output_root, "pretrain_config": cfg.pretrain_config,
              "python": cfg.python, "slurm.partition": s.partition, "slurm.account": s.account,
              "slurm.qos": s.qos, "slurm.job_name": s.job_name, "slurm.mem": s.mem, "slurm.rdzv_conf": s.rdzv_conf,
              "deepspeed.launcher_args": cfg.deepspeed.launcher_args, "launch dir": plan.launch_dir}
    fields.update({f"pretrain_overrides[{i}]": v for i, v in enumerate(cfg.pretrain_overrides)})
    fields.update({f"slurm.extra_sbatch[{i}]": v for i, v in enumerate(s.extra_sbatch)})
    fields.update({f"slurm.setup[{i}]": v for i, v in enumerate(s.setup)})
    fields.update({f"env.{k}": v for k, v in plan.env.items()})
    for key, value in fields.items():
        if value is not None and CONTROL.search(value):
            raise CmedbertError(f"config key '{key}': {value!r} contains a control character (newline, carriage return, NUL, ...), "
                                "which cannot be passed through a shell script safely")


def check_pdsh_safe(plan: LaunchPlan, cfg: LaunchConfig) -> None:
    """pdsh joins the remote command with spaces and the remote shell reads it again; DeepSpeed's
    runner only double-quotes words with spaces. Refuse words the remote shell would interpret."""
    words = {"workdir": plan.workdir, "python": cfg.python,
             **{f"pretrain word {w!r}": w for w in worker_args(cfg, plan.run_dir)}}
    for key, value in words.items():
        if PDSH_UNSAFE.search(value):
            raise CmedbertError(f"{key}: {value!r} has a character the remote shell would interpret "
                                f"({PDSH_UNSAFE.search(value).group()!r}); the deepspeed launcher passes it "
                                "through pdsh unquoted: rename it, or use launcher = \"torchrun\" or \"slurm\"")


def render_sbatch(cfg: LaunchConfig, plan: LaunchPlan, argv: list[str]) -> str:
    """The sbatch script: srun starts one torchrun per node (c10d rendezvous at the first node);
    SIG{USR1} ``signal_lead_seconds`` before the time limit makes the batch shell forward SIGTERM to
    every task (the trainer writes a checkpoint and exits 0) and then requeue the job, which
    resumes the same run folder from ``checkpoints/latest``."""
    s = cfg.slurm
    jobs_dir = plan.run_dir + ".jobs"
    q = shlex.quote
    # sbatch reads #SBATCH lines with shell-like quoting: quote every value that came from the config
    opts = [f"--job-name={q(s.job_name or cfg.run_name)}", f"--nodes={plan.nnodes}", "--ntasks-per-node=1"]
    if s.gpus_per_node_flag:
        opts.append(f"--gpus-per-node={plan.nproc_per_node}")
    if s.cpus_per_task is not None:
        opts.append(f"--cpus-per-task={s.cpus_per_task}")
    if s.mem is not None:
        opts.append(f"--mem={q(s.mem)}")
    for key in ("partition", "account", "qos"):
        if getattr(s, key):
            opts.append(f"--{key}={q(getattr(s, key))}")
    opts += [f"--time={q(s.time)}", f"--output={q(jobs_dir + '/slurm-%j.out')}", "--open-mode=append"]
    if s.requeue:
        opts += [f"--signal=B:{s.signal}@{s.signal_lead_seconds}", "--requeue"]
    else:
        opts.append("--no-requeue")
    opts += s.extra_sbatch
    lines = ["#!/bin/bash",
             f"# Generated by `cmedbert launch` for run {cfg.run_name}: pretrain config {cfg.pretrain_config}"
             f" (config hash {plan.config_hash}).",
             "# Submit with: sbatch " + q(posixpath.join(plan.launch_dir, SBATCH)),
             "# The output folder must exist before sbatch opens --output: `cmedbert launch` creates it.",
             *(f"#SBATCH {o}" for o in opts), ""]
    lines += [
        "set -uo pipefail",
        f"NNODES={plan.nnodes}",
        f"RUN_DIR={q(plan.run_dir)}",
        f"MAX_REQUEUES={s.max_requeues}",
        "RESTART=${SLURM_RESTART_COUNT:-0}",
        f"JOB_DIR={q(jobs_dir)}/\"${{SLURM_JOB_ID}}.r${{RESTART}}\"  # per job (and per requeue)",
        "",
        "# Preflight: the allocation must be what the run was planned for (world size -> batch split).",
        'if [ "${SLURM_NNODES:-0}" -ne "$NNODES" ]; then',
        '  echo "cmedbert launch: error: this job was planned for $NNODES nodes but the allocation has '
        '${SLURM_NNODES:-?} (SLURM_JOB_NODELIST=${SLURM_JOB_NODELIST:-?}); re-plan with cmedbert launch nnodes=N" >&2',
        "  exit 2",
        "fi",
        'mkdir -p "$JOB_DIR"',
        f"cd {q(plan.workdir)} || exit 2",
    ]
    if s.setup:
        lines += ["", "# setup (slurm.setup)", *s.setup]
    lines += ["", "# environment for every node (srun passes the batch environment on)"]
    lines += [f"export {k}={q(v)}" for k, v in plan.env.items()]
    lines += [
        'export MASTER_ADDR="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"',
        f"export MASTER_PORT={plan.master_port}",
        'scontrol show hostnames "$SLURM_JOB_NODELIST" > "$JOB_DIR/nodes.txt"',
        'echo "cmedbert: job $SLURM_JOB_ID restart $RESTART on $SLURM_JOB_NODELIST;'
        ' rendezvous $MASTER_ADDR:$MASTER_PORT; run folder $RUN_DIR; logs $JOB_DIR"',
        "",
        "# Signal forwarding: SLURM signals this shell before the time limit; forward SIGTERM to the",
        "# tasks of every step (not this shell), torchrun passes it to the trainers, which write a",
        "# checkpoint and exit. scancel/preemption (SIGTERM to this shell) checkpoints without requeue.",
        "requeue=0",
        "forward_term() {",
        '  echo "cmedbert: got SIG$1 at $(date -u +%FT%TZ): asking the trainers to checkpoint and stop"',
        '  scancel --signal=TERM "$SLURM_JOB_ID"',
        "}",
        f"trap 'requeue=1; forward_term {s.signal}' {s.signal}",
        "trap 'forward_term TERM' TERM",
        "",
        # srun does not inherit sbatch's --cpus-per-task (SLURM >= 22.05): pass it again
        'srun --nodes="$NNODES" --ntasks-per-node=1' + (f" --cpus-per-task={s.cpus_per_task}" if s.cpus_per_task else "")
        + ' --kill-on-bad-exit=1 --output="$JOB_DIR/node-%n.log" \\',
        "  " + " ".join(_shell_word(w) for w in argv) + " &",
        "srun_pid=$!",
        "# `wait` returns early whenever a trapped signal arrives: keep waiting until srun has exited.",
        "while :; do",
        '  wait "$srun_pid"; rc=$?',
        '  kill -0 "$srun_pid" 2>/dev/null || break',
        "done",
        'if [ "$rc" -gt 128 ]; then wait "$srun_pid" 2>/dev/null; r=$?; [ "$r" -ne 127 ] && rc=$r; fi',
        'echo "cmedbert: srun exited with $rc"',
        'if [ "$requeue" = 1 ]; then',
        '  if [ "$RESTART" -lt "$MAX_REQUEUES" ]; then',
        '    echo "cmedbert: requeueing job $SLURM_JOB_ID: the next start resumes $RUN_DIR from checkpoints/latest"',
        '    scontrol requeue "$SLURM_JOB_ID" && exit 0',
        '    echo "cmedbert: error: scontrol requeue failed" >&2',
        "  else",
        '    echo "cmedbert: not requeueing: restart $RESTART reached slurm.max_requeues=$MAX_REQUEUES" >&2',
        "  fi",
        "fi",
        'exit "$rc"',
    ]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- rendering


def shown_env_value(name: str, value: str) -> str:
    return "***" if SECRET.search(name) else value


def render_node(node: NodeCommand) -> str:
    lines = [f"== node {node.node_rank}: {node.host} ==", f"# started by {node.started_by}", f"cd {shlex.quote(node.cwd)}"]
    lines += [f"export {k}={shlex.quote(shown_env_value(k, v))}" for k, v in node.env.items()]
    lines.append(" ".join(_shell_word(w) for w in node.argv))
    return "\n".join(lines) + "\n"


def render_local(plan: LaunchPlan) -> str:
    if plan.local is None:
        return ""
    env = plan.local.env
    shown = {k: v for k, v in env.items() if k not in plan.env}  # the shared env is listed per node
    lines = ["== run here by `cmedbert launch` ==", f"cd {shlex.quote(plan.local.cwd)}"]
    lines += [f"export {k}={shlex.quote(shown_env_value(k, v))}" for k, v in shown.items()]
    if any(k in plan.env for k in env):
        lines.append("# plus the node environment below")
    lines.append(" ".join(_shell_word(w) for w in plan.local.argv))
    return "\n".join(lines) + "\n"


def render_dry_run(plan: LaunchPlan, only_node: int | None = None) -> str:
    """What ``--dry-run`` prints: a header, what runs here, then every node's command + env."""
    head = [f"# cmedbert launch: {plan.launcher}, {plan.nnodes} node(s) x {plan.nproc_per_node} processes"
            f" = world size {plan.world_size}",
            f"# run folder: {plan.run_dir}", f"# launch files: {plan.launch_dir}"
            + (f" ({', '.join(sorted(plan.files))})" if plan.files else ""),
            f"# pretrain config hash: {plan.config_hash} (every rank checks it before training)"]
    head += [f"# {n}" for n in plan.notes]
    parts = ["\n".join(head) + "\n"]
    if plan.local is not None and plan.launcher != "torchrun":
        parts.append(render_local(plan))
    nodes = plan.nodes if only_node is None else [plan.nodes[only_node]]
    parts += [render_node(n) for n in nodes]
    return "\n".join(parts)
