"""Checks before anything starts, each failing with one clear message.

Config-level problems (batch split, node counts, hostfile lines, hash mismatch) are errors even
in a dry run. Problems of this machine's filesystem or network (inputs missing, port busy,
executables missing) are errors for a real launch and warnings in a dry run, which is often
made on a laptop or login node that does not see the cluster's files.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import shutil
import socket
from pathlib import Path
from typing import Mapping

from cmedbert.errors import ArtifactError, CmedbertError
from cmedbert.launch.hosts import Host
from cmedbert.launch.plan import LaunchPlan
from cmedbert.launch.pretrain_link import PretrainInfo, check_batch


class Findings:
    """Notes for the dry-run header; hard errors raise, soft ones become warnings in a dry run."""

    def __init__(self, dry_run: bool):
        self.dry_run = dry_run
        self.notes: list[str] = []

    def note(self, text: str) -> None:
        self.notes.append(text)

    def problem(self, text: str) -> None:
        if not self.dry_run:
            raise CmedbertError(text)
        self.notes.append(f"WARNING (a real launch stops here): {text}")


def pick_node_rank(launcher: str, no_ssh: bool, hosts: list[Host], node_rank: int | None, dry_run: bool,
                   environ: Mapping[str, str]) -> int | None:
    """Which node this invocation is. Only torchrun (and deepspeed without ssh) run per node;
    then the rank comes from --node-rank, SLURM_NODEID, or this host's name in the node list."""
    per_node = launcher == "torchrun" or (launcher == "deepspeed" and no_ssh)
    if node_rank is not None:
        if not per_node:
            raise CmedbertError(f"--node-rank is for torchrun (or deepspeed with no_ssh); launcher {launcher} "
                                "starts every node from one place")
        if not 0 <= node_rank < len(hosts):
            raise CmedbertError(f"--node-rank {node_rank} is out of range: {len(hosts)} node(s), ranks 0..{len(hosts) - 1}")
        return node_rank
    if not per_node or dry_run:
        return None
    if len(hosts) == 1:
        return 0
    if environ.get("SLURM_NODEID", "").isdigit():
        return int(environ["SLURM_NODEID"])
    names = {socket.gethostname(), socket.getfqdn(), socket.gethostname().split(".")[0]}
    matches = [i for i, h in enumerate(hosts) if h.name in names]
    if len(matches) == 1:
        return matches[0]
    raise CmedbertError(f"which node is this? {socket.gethostname()} is not one of the nodes "
                        f"({', '.join(h.name for h in hosts)}): pass --node-rank N (0..{len(hosts) - 1})")


def check_expected_hash(info: PretrainInfo, expected: str | None) -> None:
    if expected and expected != info.config_hash:
        raise CmedbertError(
            f"pretrain config {info.config_path} hashes to {info.config_hash} on this node but "
            f"{expected} was expected (--expect-config-hash): this node sees a different config or "
            f"checkout than the one the launch was planned with")


def check_inputs(info: PretrainInfo, base: Path, findings: Findings) -> None:
    """Packed data and tokenizer named by the pretrain config exist (and look like artifacts)."""
    if not info.inputs:
        findings.note(f"inputs: no data/tokenizer fields recognised in {info.config_path}; not checked")
        return
    for label, raw in info.inputs.items():
        path = Path(raw) if Path(raw).is_absolute() else base / raw
        if not path.exists():
            findings.problem(f"{label} {path} not found (from {info.config_path})")
            continue
        if label.startswith("packed data"):
            try:
                from cmedbert.tokenizer.packed import open_packed

                open_packed(path)
            except (ArtifactError, CmedbertError) as exc:
                findings.problem(f"{label} {path}: {exc}")
                continue
        elif label == "tokenizer":
            try:
                from cmedbert.tokenizer.hashing import tokenizer_hash

                tokenizer_hash(path)
            except CmedbertError as exc:
                findings.problem(f"{label} {path}: {exc}")
                continue
        findings.note(f"{label}: {raw} present")


def run_dir_state(run_dir: Path) -> str:
    latest = run_dir / "checkpoints" / "latest"
    if latest.exists():
        # DeepSpeed's `latest` is a file holding the tag (step_N); accept a symlink too
        target = os.readlink(latest) if latest.is_symlink() else latest.read_text(encoding="utf-8").strip() \
            if latest.is_file() else "latest"
        return f"run folder exists: resumes from checkpoints/latest ({target})"
    if run_dir.exists():
        return "run folder exists without checkpoints/latest: the trainer decides (fresh start or refuse)"
    return "run folder is new: training starts from step 0"


def is_local_address(addr: str) -> bool:
    """Does ``addr`` name this machine (so the rendezvous store will listen here)?"""
    if addr in ("localhost", socket.gethostname(), socket.getfqdn()):
        return True
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        try:
            ip = ipaddress.ip_address(socket.gethostbyname(addr))
        except (OSError, ValueError):
            return False
    if ip.is_loopback:
        return True
    with contextlib.suppress(OSError):
        return str(ip) in socket.gethostbyname_ex(socket.gethostname())[2]
    return False


def port_free(port: int) -> bool:
    """Can the rendezvous store bind ``port`` here (as torch's TCPStore does: all interfaces)?"""
    for family, addr in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
        try:
            probe = socket.socket(family, socket.SOCK_STREAM)
        except OSError:  # no IPv6 on this machine
            continue
        try:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((addr, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False
        finally:
            probe.close()
    return True


def check_port(plan: LaunchPlan, node_rank: int | None, findings: Findings) -> None:
    hosts_store = plan.launcher == "deepspeed" or (plan.launcher == "torchrun" and node_rank in (0, None))
    if plan.launcher == "slurm" or not hosts_store or not is_local_address(plan.master_addr):
        return
    if not port_free(plan.master_port):
        findings.problem(f"port {plan.master_port} on this machine (master_addr {plan.master_addr}) is in use "
                         "(another run?): set master_port=... to a free port")
    else:
        findings.note(f"port {plan.master_port} on {plan.master_addr} is free")


def check_executables(plan: LaunchPlan, pdsh_runner: str | None, findings: Findings) -> None:
    wanted = []
    if plan.local is not None:
        wanted.append(plan.local.argv[0])
    if pdsh_runner:
        wanted.append(pdsh_runner)
    for exe in wanted:
        if shutil.which(exe) is None:
            findings.problem(f"{exe} not found " + ("on this machine" if "/" in exe else "on this machine's PATH")
                             + (" (is this a SLURM login node?)" if exe == "sbatch" else ""))


def preflight(plan: LaunchPlan, info: PretrainInfo, *, node_rank: int | None, base: Path, dry_run: bool,
              pdsh_runner: str | None) -> list[str]:
    """All checks for this invocation; returns the notes for the dry-run header."""
    findings = Findings(dry_run)
    findings.note(check_batch(info, plan.world_size))
    check_inputs(info, base, findings)
    findings.note(run_dir_state(Path(plan.run_dir)))
    check_port(plan, node_rank, findings)
    check_executables(plan, pdsh_runner, findings)
    return findings.notes
