"""Running what belongs on this machine: signals reach the child (so a scheduler's SIGTERM turns
into the trainer's checkpoint), the exit code comes back, and the node rank is found."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time

import pytest

from cmedbert.errors import CmedbertError
from cmedbert.launch.hosts import Host
from cmedbert.launch.preflight import pick_node_rank

CHILD = """
import signal, sys, time, pathlib
out = pathlib.Path(sys.argv[1])
def term(*_):
    out.write_text("checkpoint")
    sys.exit(0)
signal.signal(signal.SIGTERM, term)
out.with_suffix(".ready").write_text("ready")
time.sleep(60)
sys.exit(3)
"""

PARENT = """
import sys
from cmedbert.launch.plan import NodeCommand
from cmedbert.launch.run import run_command
cmd = NodeCommand(0, "here", [sys.executable, "-c", sys.argv[1], sys.argv[2]], {"X": "1"}, ".", "test")
sys.exit(run_command(cmd) + 40)
"""


def test_sigterm_to_launch_is_forwarded_to_the_child(tmp_path):
    marker = tmp_path / "marker.txt"
    proc = subprocess.Popen([sys.executable, "-c", PARENT, CHILD, str(marker)], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not marker.with_suffix(".ready").exists():
        assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read()
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 40  # the child's exit code (0) comes back through run_command
    assert marker.read_text() == "checkpoint"


def test_node_rank_from_flag_slurm_or_host_name():
    hosts = [Host("gpu-a"), Host(socket.gethostname()), Host("gpu-c")]
    assert pick_node_rank("torchrun", False, hosts, 2, False, {}) == 2
    assert pick_node_rank("torchrun", False, hosts, None, False, {"SLURM_NODEID": "0"}) == 0
    assert pick_node_rank("torchrun", False, hosts, None, False, {}) == 1
    assert pick_node_rank("deepspeed", False, hosts, None, False, {}) is None  # one launcher for all nodes
    assert pick_node_rank("torchrun", False, [Host("only")], None, False, {}) == 0
    with pytest.raises(CmedbertError, match="pass --node-rank N"):
        pick_node_rank("torchrun", False, [Host("gpu-a"), Host("gpu-b")], None, False, {})
