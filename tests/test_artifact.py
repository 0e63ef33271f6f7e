from __future__ import annotations

import json

import pytest

from cmedbert.artifact import atomic_output, read_manifest, write_manifest
from cmedbert.errors import ArtifactError, CmedbertError


def test_atomic_output_renames_on_success(tmp_path):
    out = tmp_path / "out"
    with atomic_output(out) as tmp:
        (tmp / "a.txt").write_text("x")
        assert not out.exists()
    assert (out / "a.txt").read_text() == "x"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_atomic_output_leaves_nothing_on_failure(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with atomic_output(out) as tmp:
            (tmp / "a.txt").write_text("x")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_atomic_output_refuses_existing(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep").write_text("1")
    with pytest.raises(CmedbertError, match="already exists"):
        with atomic_output(out):
            pass
    assert (out / "keep").read_text() == "1"


def test_manifest_round_trip_and_checks(tmp_path):
    inp = tmp_path / "in.txt"
    inp.write_text("data")
    with atomic_output(tmp_path / "art") as tmp:
        (tmp / "x.bin").write_bytes(b"123")
        write_manifest(tmp, stage="corpus", config={"a": 1}, inputs=[inp], counts={"n": 1}, seed=3)
    m = read_manifest(tmp_path / "art", stage="corpus", verify_outputs=True)
    for key in ("schema_version", "stage", "inputs", "outputs", "counts", "versions", "seed", "git_commit",
                "config_hash"):
        assert key in m
    assert m["inputs"][0]["sha256"] and "x.bin" in [o["path"] for o in m["outputs"]]
    assert json.loads((tmp_path / "art" / "config.json").read_text()) == {"a": 1}
    with pytest.raises(ArtifactError, match="expected 'packed'"):
        read_manifest(tmp_path / "art", stage="packed")
    (tmp_path / "art" / "x.bin").write_bytes(b"124")
    with pytest.raises(ArtifactError, match="sha256"):
        read_manifest(tmp_path / "art", verify_outputs=True)
