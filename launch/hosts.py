"""Which nodes: a hostfile, a host list, or the SLURM allocation; node counts checked against
each other before anything starts."""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from cmedbert.errors import CmedbertError

_HOSTFILE_LINE = re.compile(r"^(?P<host>[^\s#=]+)\s+slots=(?P<slots>\d+)$")


@dataclass(frozen=True)
class Host:
    name: str
    slots: int | None = None  # processes the hostfile allows on it (None: not stated)


def parse_hostfile(path: str | Path) -> list[Host]:
    """An MPI-style hostfile: ``HOST slots=N`` per line, ``#`` comments and blank lines ignored.

    Any other line, a zero slot count or a host listed twice is an error naming file and line
    (the deepspeed launcher would otherwise fail later, on the cluster, with less to go on).
    """
    path = Path(path)
    if not path.is_file():
        raise CmedbertError(f"hostfile {path} not found")
    hosts: list[Host] = []
    seen: dict[str, int] = {}
    for lineno, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        m = _HOSTFILE_LINE.match(line)
        if not m:
            raise CmedbertError(f"hostfile {path} line {lineno}: {raw.strip()!r} is not 'HOST slots=N'")
        host, slots = m["host"], int(m["slots"])
        if slots < 1:
            raise CmedbertError(f"hostfile {path} line {lineno}: {host} has slots=0")
        if host in seen:
            raise CmedbertError(f"hostfile {path} line {lineno}: {host} is already listed on line {seen[host]}")
        seen[host] = lineno
        hosts.append(Host(host, slots))
    if not hosts:
        raise CmedbertError(f"hostfile {path} lists no hosts")
    return hosts


def check_slots(hosts: list[Host], per_node: int, hostfile: Path | None) -> None:
    """Every node must offer ``per_node`` slots (heterogeneous nodes are not supported: the world
    size and batch split assume the same number of processes per node)."""
    for h in hosts:
        if h.slots is not None and h.slots < per_node:
            raise CmedbertError(f"hostfile {hostfile}: {h.name} has slots={h.slots} but gpus_per_node = {per_node}")


def render_hostfile(hosts: list[Host], slots: int) -> str:
    """The hostfile the deepspeed launcher is given: every node with ``slots`` processes."""
    return "".join(f"{h.name} slots={slots}\n" for h in hosts)


def expand_nodelist(nodelist: str) -> list[str]:
    """SLURM's compressed host list -> names, in order: ``gpu[01-03,07],login1`` ->
    ``gpu01 gpu02 gpu03 gpu07 login1`` (what ``scontrol show hostnames`` prints; pure Python so it
    works on a node without SLURM tools and in tests)."""
    out: list[str] = []
    for item in _split_top_level(nodelist.strip()):
        parts = re.split(r"(\[[^\]]*\])", item)
        choices: list[list[str]] = []
        for part in parts:
            if part.startswith("["):
                choices.append(_expand_range(part[1:-1], nodelist))
            elif part:
                choices.append([part])
        out.extend("".join(p) for p in itertools.product(*choices))
    if not out:
        raise CmedbertError(f"SLURM node list {nodelist!r} is empty")
    return out


def _split_top_level(text: str) -> list[str]:
    items, depth, cur = [], 0, ""
    for ch in text:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
            if depth < 0:
                raise CmedbertError(f"SLURM node list {text!r}: unbalanced ']'")
        if ch == "," and depth == 0:
            items.append(cur)
            cur = ""
        else:
            cur += ch
    if depth != 0:
        raise CmedbertError(f"SLURM node list {text!r}: unbalanced '['")
    items.append(cur)
    return [i for i in items if i]


def _expand_range(spec: str, whole: str) -> list[str]:
    out = []
    for piece in spec.split(","):
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", piece.strip())
        if not m:
            raise CmedbertError(f"SLURM node list {whole!r}: cannot read range {piece!r}")
        lo, hi = m[1], m[2] or m[1]
        if int(hi) < int(lo):
            raise CmedbertError(f"SLURM node list {whole!r}: range {piece!r} runs backwards")
        width = len(lo)
        out.extend(str(i).zfill(width) for i in range(int(lo), int(hi) + 1))
    return out


def slurm_allocation(environ: Mapping[str, str]) -> list[str] | None:
    """The nodes of the SLURM allocation this process runs in (None outside one).

    SLURM_NNODES and SLURM_JOB_NODELIST must agree; a disagreement means a broken environment
    (e.g. a copied job script with a stale variable) and is an error.
    """
    nodelist = environ.get("SLURM_JOB_NODELIST") or environ.get("SLURM_NODELIST")
    nnodes = environ.get("SLURM_NNODES") or environ.get("SLURM_JOB_NUM_NODES")
    if not nodelist and not nnodes:
        return None
    if not nodelist:
        raise CmedbertError(f"SLURM_NNODES={nnodes} is set but SLURM_JOB_NODELIST is not: cannot tell the nodes")
    hosts = expand_nodelist(nodelist)
    if nnodes is not None and nnodes.strip() and int(nnodes) != len(hosts):
        raise CmedbertError(f"SLURM allocation is inconsistent: SLURM_NNODES={nnodes} but "
                            f"SLURM_JOB_NODELIST={nodelist} has {len(hosts)} nodes")
    return hosts


def resolve_nodes(*, nodes: list[str], hostfile: Path | None, nnodes: int | None, launcher: str,
                  environ: Mapping[str, str]) -> list[Host]:
    """The nodes of this run in node-rank order, from (first that is set) hostfile, node list,
    SLURM allocation. ``nnodes`` and an enclosing SLURM allocation must agree with them.

    For ``launcher = "slurm"`` the nodes are not known before the job starts: placeholders
    ``$NODE0 ...`` are returned (``nnodes`` of them) and the sbatch script checks the count.
    """
    allocation = slurm_allocation(environ) if launcher != "slurm" else None
    if launcher == "slurm":
        assert nnodes is not None  # LaunchConfig.validate
        return [Host(f"<node {i} of the allocation>") for i in range(nnodes)]
    if hostfile is not None:
        hosts, source = parse_hostfile(hostfile), f"hostfile {hostfile}"
    elif nodes:
        hosts, source = [Host(n) for n in nodes], "config key 'nodes'"
    elif allocation is not None:
        hosts, source = [Host(n) for n in allocation], "the SLURM allocation"
    else:
        raise CmedbertError("no nodes: set 'nodes' (host names) or 'hostfile', or run inside a SLURM allocation")
    if nnodes is not None and nnodes != len(hosts):
        raise CmedbertError(f"nnodes = {nnodes} but {source} has {len(hosts)} node(s): "
                            f"{', '.join(h.name for h in hosts)}")
    if allocation is not None and len(allocation) != len(hosts):
        raise CmedbertError(
            f"this run wants {len(hosts)} node(s) ({source}) but the SLURM allocation has "
            f"{len(allocation)} (SLURM_NNODES={environ.get('SLURM_NNODES', '?')}, "
            f"SLURM_JOB_NODELIST={environ.get('SLURM_JOB_NODELIST', environ.get('SLURM_NODELIST', '?'))})")
    return hosts
