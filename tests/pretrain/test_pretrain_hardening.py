"""Hardening of the pretrain stage (issue #12): the whole config and its inputs are checked before
DeepSpeed starts and nothing is written into --out until they pass; a stale C++ extension build
lock is named in one line instead of hanging; a resumed checkpoint that holds anything but
tensors and DeepSpeed's own types is refused before DeepSpeed unpickles it."""

import json
import os
import pathlib
import shutil
import subprocess
import sys
import time

import pytest
import torch

from cmedbert.artifact import sha256_file
from cmedbert.cli import main as cli_main
from cmedbert.config import load_config, to_dict
from cmedbert.errors import CmedbertError
from cmedbert.pretrain.config import PretrainConfig
from cmedbert.pretrain.testing import tiny_run_config, tiny_setup
from cmedbert.pretrain.train import main

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_setup(tmp_path_factory.mktemp("hard"))


def _cli(cfg: dict, out, tmp_path, *flags) -> int:
    p = tmp_path / f"cfg-{time.monotonic_ns()}.json"
    p.write_text(json.dumps(cfg))
    return cli_main(["pretrain", str(p), "--out", str(out), *flags])


@pytest.mark.parametrize("bad, message", [
    ({"model": {"num_attention_heads": 3}}, "model.num_attention_heads=3 does not divide model.hidden_size=32"),
    ({"optimizer": {"lr": -0.001}}, "'optimizer.lr' must be > 0"),
    ({"optimizer": {"lr": 0.0}}, "'optimizer.lr' must be > 0"),
    ({"model": {"max_position_embeddings": 16}}, "max_position_embeddings=16 is shorter than the packed seq_len 32"),
    ({"model": {"intermediate_size": -4}}, "'model.intermediate_size' must be > 0"),
])
def test_bad_config_writes_nothing_and_the_corrected_rerun_works(tiny, tmp_path, capsys, bad, message):
    tok, packed = tiny
    out = tmp_path / "run"
    good = tiny_run_config(tok, packed, max_steps=1)
    broken = json.loads(json.dumps(good))
    for section, values in bad.items():
        broken[section].update(values)
    assert _cli(broken, out, tmp_path) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("cmedbert pretrain: error: ") and message in err[-1], err
    assert "Traceback" not in "\n".join(err)
    assert not out.exists()  # no config.json left behind to refuse the corrected run
    assert _cli(good, out, tmp_path) == 0
    assert json.loads((out / "manifest.json").read_text())["counts"]["steps"] == 1


def test_run_folder_left_without_checkpoint_accepts_a_corrected_config(tiny, tmp_path):
    """A run that failed after pinning its config (e.g. inside DeepSpeed) but before its first
    checkpoint trained nothing: the corrected config is pinned instead of refused."""
    tok, packed = tiny
    out = tmp_path / "run"
    out.mkdir()
    (out / "checkpoints").mkdir()
    old = load_config(PretrainConfig, None, [], base=tiny_run_config(tok, packed, max_steps=1, seed=1))
    (out / "config.json").write_text(json.dumps(to_dict(old)))  # differs in the seed only
    m = main(load_config(PretrainConfig, None, [], base=tiny_run_config(tok, packed, max_steps=1)), out)
    assert m["counts"]["steps"] == 1 and json.loads((out / "config.json").read_text())["seed"] == 42


def test_stale_extension_build_lock_is_named_instead_of_hanging(tiny, tmp_path, repo_root):
    tok, packed = tiny
    ext = tmp_path / "torch_extensions"
    lock = ext / "deepspeed_shm_comm" / "lock"
    lock.parent.mkdir(parents=True)
    lock.write_text("")
    os.utime(lock, (time.time() - 3600, time.time() - 3600))  # a build killed an hour ago
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps(tiny_run_config(tok, packed, max_steps=1)))
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                             "MASTER_PORT")}
    env.update(TORCH_EXTENSIONS_DIR=str(ext), OMP_NUM_THREADS="1")
    t0 = time.perf_counter()
    try:
        r = subprocess.run([sys.executable, "-m", "cmedbert.cli", "pretrain", str(cfg), "--out", str(tmp_path / "run")],
                           env=env, cwd=repo_root, capture_output=True, text=True, timeout=90)
    except subprocess.TimeoutExpired:
        pytest.fail("pretrain hung on the stale extension build lock")
    assert r.returncode == 2, r.stderr[-2000:]
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("cmedbert pretrain: error: stale C++ extension build lock") and str(lock) in last, last
    assert "Traceback" not in r.stderr
    assert lock.exists() and not (tmp_path / "run").exists()
    assert time.perf_counter() - t0 < 60


class _Payload:
    """Unpickling this creates a marker file (a stand-in for any code an attacker runs)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (pathlib.Path(self.marker),)


def _plant_payload(step_dir, pattern, marker):
    """What an attacker with write access to the run folder does: add an object to a checkpoint
    file and refresh the size + sha256 listing beside it."""
    [target] = step_dir.glob(pattern)
    state = torch.load(target, weights_only=False)
    state["note"] = _Payload(marker)
    torch.save(state, target)
    info_path = step_dir / "cmedbert_checkpoint.json"
    info = json.loads(info_path.read_text())
    for row in info["files"]:
        p = step_dir / row["path"]
        row.update(bytes=p.stat().st_size, sha256=sha256_file(p))
    info_path.write_text(json.dumps(info))
    return target


@pytest.mark.parametrize("zero_stage, precision, pattern", [(2, "fp32", "mp_rank_00_model_states.pt"),
                                                             (3, "bf16", "bf16_*optim_states.pt")])
def test_pickle_payload_in_checkpoint_is_refused_on_resume(tiny, tmp_path, capsys, zero_stage, precision, pattern):
    tok, packed = tiny
    cfg = tiny_run_config(tok, packed, max_steps=4, checkpoint={"every": 2, "keep_last": 2},
                          engine={"zero_stage": zero_stage, "precision": precision})
    r = tmp_path / "run"
    assert _cli(cfg, r, tmp_path) == 0
    # an intact checkpoint of every kind DeepSpeed writes (model + ZeRO optimizer states) passes the check
    (r / "manifest.json").unlink()  # pretend the run was killed after step 4's checkpoint
    shutil.rmtree(r / "model")
    assert _cli(cfg, r, tmp_path) == 0
    (r / "manifest.json").unlink()
    shutil.rmtree(r / "model")
    marker = tmp_path / "payload-ran"
    bad = _plant_payload(r / "checkpoints" / "step_4", pattern, marker)
    before = (r / "metrics.jsonl").read_text()
    assert _cli(cfg, r, tmp_path) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"cmedbert pretrain: error: refusing to load checkpoint file {bad}"), err[-1]
    assert "pathlib" in err[-1] and "--trust-checkpoint" in err[-1]
    assert not marker.exists()  # the payload never ran
    assert (r / "metrics.jsonl").read_text() == before
    # with the explicit flag DeepSpeed unpickles the file as it always did: the payload runs (documented)
    assert _cli(cfg, r, tmp_path, "--trust-checkpoint") == 0
    assert marker.exists()
    assert json.loads((r / "manifest.json").read_text())["counts"]["steps"] == 4


def test_trust_checkpoint_is_a_config_key_too(tiny):
    tok, packed = tiny
    cfg = load_config(PretrainConfig, None, ["checkpoint.trust_checkpoint=true"], base=tiny_run_config(tok, packed))
    assert cfg.checkpoint.trust_checkpoint is True
    with pytest.raises(CmedbertError):
        load_config(PretrainConfig, None, ["checkpoint.trust_checkpoint=maybe"], base=tiny_run_config(tok, packed))
