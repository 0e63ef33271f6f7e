"""Hostfiles, SLURM node lists and node counts: each mistake is one clear error."""

from __future__ import annotations

import pytest

from cmedbert.errors import CmedbertError
from cmedbert.launch.hosts import Host, expand_nodelist, parse_hostfile, resolve_nodes, slurm_allocation


def test_hostfile_with_comments_and_blank_lines(tmp_path):
    p = tmp_path / "hosts"
    p.write_text("# cluster A\nnode01 slots=8\n\nnode02 slots=4  # half node\n", encoding="utf-8")
    assert parse_hostfile(p) == [Host("node01", 8), Host("node02", 4)]


@pytest.mark.parametrize("bad_line, fragment", [
    ("node02 8", "line 2: 'node02 8' is not 'HOST slots=N'"),
    ("node02 slots=eight", "line 2: 'node02 slots=eight' is not 'HOST slots=N'"),
    ("node02 slots=8 extra", "line 2"),
    ("node02 slots=0", "line 2: node02 has slots=0"),
    ("node01 slots=8", "line 2: node01 is already listed on line 1"),
])
def test_malformed_hostfile_line_names_file_and_line(tmp_path, bad_line, fragment):
    p = tmp_path / "hosts"
    p.write_text(f"node01 slots=8\n{bad_line}\nnode03 slots=8\n", encoding="utf-8")
    with pytest.raises(CmedbertError) as exc:
        parse_hostfile(p)
    assert str(p) in str(exc.value) and fragment in str(exc.value)


def test_empty_or_missing_hostfile(tmp_path):
    p = tmp_path / "hosts"
    p.write_text("# nothing\n", encoding="utf-8")
    with pytest.raises(CmedbertError, match="lists no hosts"):
        parse_hostfile(p)
    with pytest.raises(CmedbertError, match="not found"):
        parse_hostfile(tmp_path / "missing")


@pytest.mark.parametrize("nodelist, hosts", [
    ("node01", ["node01"]),
    ("gpu[01-03,07]", ["gpu01", "gpu02", "gpu03", "gpu07"]),
    ("gpu[8-10],login1", ["gpu8", "gpu9", "gpu10", "login1"]),
    ("r[1-2]-n[01-02]", ["r1-n01", "r1-n02", "r2-n01", "r2-n02"]),
])
def test_expand_slurm_nodelist(nodelist, hosts):
    assert expand_nodelist(nodelist) == hosts


@pytest.mark.parametrize("nodelist", ["gpu[01-03", "gpu01]", "gpu[a-b]", "gpu[05-01]"])
def test_bad_slurm_nodelist(nodelist):
    with pytest.raises(CmedbertError, match="SLURM node list"):
        expand_nodelist(nodelist)


def test_slurm_allocation_counts_must_agree():
    assert slurm_allocation({}) is None
    assert slurm_allocation({"SLURM_NNODES": "2", "SLURM_JOB_NODELIST": "gpu[1-2]"}) == ["gpu1", "gpu2"]
    with pytest.raises(CmedbertError, match="SLURM_NNODES=3 but SLURM_JOB_NODELIST=gpu\\[1-2\\] has 2"):
        slurm_allocation({"SLURM_NNODES": "3", "SLURM_JOB_NODELIST": "gpu[1-2]"})


def test_node_count_must_match_the_allocation():
    alloc = {"SLURM_NNODES": "2", "SLURM_JOB_NODELIST": "gpu[1-2]"}
    with pytest.raises(CmedbertError, match="wants 4 node.*allocation has 2 .*SLURM_NNODES=2"):
        resolve_nodes(nodes=["a", "b", "c", "d"], hostfile=None, nnodes=None, launcher="torchrun", environ=alloc)
    with pytest.raises(CmedbertError, match="nnodes = 4 but the SLURM allocation has 2"):
        resolve_nodes(nodes=[], hostfile=None, nnodes=4, launcher="torchrun", environ=alloc)
    hosts = resolve_nodes(nodes=[], hostfile=None, nnodes=2, launcher="deepspeed", environ=alloc)
    assert [h.name for h in hosts] == ["gpu1", "gpu2"]


def test_nnodes_must_match_the_node_list_and_nodes_must_be_given():
    with pytest.raises(CmedbertError, match="nnodes = 3 but config key 'nodes' has 2"):
        resolve_nodes(nodes=["a", "b"], hostfile=None, nnodes=3, launcher="torchrun", environ={})
    with pytest.raises(CmedbertError, match="no nodes"):
        resolve_nodes(nodes=[], hostfile=None, nnodes=None, launcher="torchrun", environ={})


def test_hostfile_node_with_fewer_slots_than_gpus_per_node(tmp_path):
    from cmedbert.launch.hosts import check_slots

    p = tmp_path / "hosts"
    p.write_text("node01 slots=8\nnode02 slots=4\n", encoding="utf-8")
    hosts = parse_hostfile(p)
    check_slots(hosts, 4, p)
    with pytest.raises(CmedbertError, match=f"hostfile {p}: node02 has slots=4 but gpus_per_node = 8"):
        check_slots(hosts, 8, p)
