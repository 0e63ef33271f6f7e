"""The trainer in-process: run folder, finished runs, repeated calls, continual with an extended
tokenizer, sequence-length phases, and bad input refused before any step."""

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForMaskedLM, AutoTokenizer

from cmedbert.config import load_config
from cmedbert.errors import CmedbertError
from cmedbert.pretrain.config import PretrainConfig
from cmedbert.pretrain.testing import (extend_tokenizer, synthetic_split, tiny_run_config, tiny_setup, write_packed)
from cmedbert.pretrain.train import main

torch.set_num_threads(1)  # tiny models; the CPU is shared with other test processes


def run(d, out):
    return main(load_config(PretrainConfig, None, [], base=d), out)


def rows(run_dir, split=None):
    out = [json.loads(l) for l in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    return [r for r in out if r.get("split") == split]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_setup(tmp_path_factory.mktemp("tiny"))


def test_run_folder_and_finished_run(tiny, tmp_path, caplog):
    tok, packed = tiny
    cfg = tiny_run_config(tok, packed, max_steps=6, checkpoint={"every": 2, "keep_last": 2, "hf_export_steps": [4]},
                          eval={"every": 3, "max_sequences": 16})
    with caplog.at_level(logging.INFO, logger="pretrain"):
        m = run(cfg, tmp_path / "run")
    assert "engine: DeepSpeed" in caplog.text and "ZeRO stage 2, fp32, world size 1" in caplog.text
    r = tmp_path / "run"
    assert m["stage"] == "pretrain" and m["counts"]["steps"] == 6
    assert m["counts"]["tokens_seen"] == 6 * 4 * 32  # synthetic data has no padding
    assert sorted(p.name for p in (r / "checkpoints").glob("step_*")) == ["step_4", "step_6"]  # keep_last=2
    assert (r / "checkpoints" / "latest").read_text().strip() == "step_6"
    assert (r / "hf" / "step_4" / "model.safetensors").is_file()
    model = AutoModelForMaskedLM.from_pretrained(str(r / "model"))
    tok2 = AutoTokenizer.from_pretrained(str(r / "model"))
    assert len(tok2) == model.config.vocab_size == 205
    assert (r / "model" / "model.safetensors").is_file()
    train = rows(r)
    assert [x["step"] for x in train] == [1, 2, 3, 4, 5, 6]
    assert all(k in train[0] for k in ("loss", "mlm_acc", "lr", "grad_norm", "tok_s", "mfu", "tokens_seen", "mem_gb"))
    assert all(np.isfinite(x["loss"]) and x["grad_norm"] > 0 for x in train)
    assert train[0]["lr"] == pytest.approx(3e-3) and train[-1]["lr"] < train[1]["lr"]  # warmup 1, linear decay
    assert [x["step"] for x in rows(r, "valid")] == [3, 6]
    # a finished run is returned as is, not retrained
    before = (r / "metrics.jsonl").read_text()
    again = run(cfg, r)
    assert again["created"] == m["created"] and (r / "metrics.jsonl").read_text() == before
    # ... and a different config on the same folder is refused
    cfg2 = dict(cfg, seed=7)
    with pytest.raises(CmedbertError, match="different config"):
        run(cfg2, r)
    # a smaller budget cannot shorten a finished run; a larger one extends it from checkpoints/latest
    with pytest.raises(CmedbertError, match="can be extended, not shortened"):
        run(dict(cfg, train={"max_steps": 4}), r)
    longer = run(dict(cfg, train={"max_steps": 8}), r)
    assert longer["counts"]["steps"] == 8 and [x["step"] for x in rows(r)][-2:] == [7, 8]


def test_scratch_then_continual_with_extended_tokenizer_in_one_process(tiny, tmp_path):
    tok, packed = tiny
    base = run(tiny_run_config(tok, packed, max_steps=3), tmp_path / "base")
    assert base["counts"]["steps"] == 3
    ext = extend_tokenizer(tok, tmp_path / "ext", ["\u4e00\u4e01", "\u4e02\u4e03\u4e04", "\u4e10\u4e11"])
    n_ext = len(AutoTokenizer.from_pretrained(str(ext)))
    ids, flags = synthetic_split(np.random.default_rng(3), 32, 32, n_ext)
    packed_ext = write_packed(tmp_path / "packed_ext", ext, {"train": (ids, flags), "valid": (ids[:8], flags[:8])})
    cfg = tiny_run_config(ext, packed_ext, max_steps=3, init="continual", init_from=str(tmp_path / "base" / "model"),
                          checkpoint={"hf_export_steps": [0]})
    m = run(cfg, tmp_path / "cont")
    assert m["counts"]["steps"] == 3 and m["pretrain"]["init"] == "continual"
    start = load_file(str(tmp_path / "cont" / "hf" / "step_0" / "model.safetensors"))
    base_w = load_file(str(tmp_path / "base" / "model" / "model.safetensors"))
    emb, base_emb = start["bert.embeddings.word_embeddings.weight"], base_w["bert.embeddings.word_embeddings.weight"]
    assert emb.shape[0] == n_ext == base_emb.shape[0] + 3
    assert torch.equal(emb[:205], base_emb)
    for row in json.loads((ext / "extension.json").read_text())["tokens"]:
        assert torch.allclose(emb[row["id"]], base_emb[row["base_pieces"]].mean(0), atol=1e-7)
    end = load_file(str(tmp_path / "cont" / "model" / "model.safetensors"))
    assert not torch.equal(end["bert.embeddings.word_embeddings.weight"], emb)  # and it trained


def test_seq_len_phases_and_token_budget(tiny, tmp_path):
    tok, packed32 = tiny
    rng = np.random.default_rng(5)
    packed16 = write_packed(tmp_path / "packed16", tok, {"train": synthetic_split(rng, 32, 16, 205),
                                                         "valid": synthetic_split(rng, 8, 16, 205)})
    cfg = tiny_run_config(tok, packed32, data={"path": None, "phases": [{"path": str(packed16), "fraction": 0.5},
                                                                        {"path": str(packed32), "fraction": 0.5}]},
                          train={"max_steps": None, "train_tokens": 4 * (16 + 32) * 2})
    m = run(cfg, tmp_path / "ph")
    assert m["counts"]["steps"] == 4 and m["counts"]["tokens_seen"] == 4 * (2 * 16 + 2 * 32)
    assert [r["seq_len"] for r in rows(tmp_path / "ph")] == [16, 16, 32, 32]


def _no_training_happened(run_dir):
    return not (run_dir / "metrics.jsonl").exists() or rows(run_dir) == []


def test_bad_input_fails_before_any_step(tiny, tmp_path):
    tok, packed = tiny
    other = tiny_setup(tmp_path / "other", n_chars=150)[0]
    with pytest.raises(CmedbertError, match="re-pack"):
        run(tiny_run_config(other, packed), tmp_path / "r1")
    assert _no_training_happened(tmp_path / "r1")
    with pytest.raises(CmedbertError, match="train_batch_size=4 != micro 3"):
        run(tiny_run_config(tok, packed, engine={"ds_config": _ds(tmp_path)}), tmp_path / "r2")
    assert _no_training_happened(tmp_path / "r2")
    with pytest.raises(CmedbertError, match="not found|manifest"):
        run(tiny_run_config(tok, tmp_path / "nope"), tmp_path / "r3")
    with pytest.raises(CmedbertError, match="fp16.*needs a GPU"):
        run(tiny_run_config(tok, packed, engine={"precision": "fp16"}), tmp_path / "r4")
    assert _no_training_happened(tmp_path / "r4")


def test_wandb_failure_never_stops_a_run_and_mfu_is_reported(tiny, tmp_path, monkeypatch):
    import wandb

    def broken_init(*a, **k):
        raise RuntimeError("no network")

    monkeypatch.setattr(wandb, "init", broken_init)
    tok, packed = tiny
    m = run(tiny_run_config(tok, packed, max_steps=2, metrics={"wandb_mode": "online", "peak_tflops": 0.5,
                                                               "log_every": 1, "progress_bar": True}), tmp_path / "w")
    assert m["counts"]["steps"] == 2
    assert all(0 < r["mfu"] < 1 for r in rows(tmp_path / "w"))


def _ds(tmp_path):
    p = tmp_path / "ds.json"
    p.write_text(json.dumps({"train_micro_batch_size_per_gpu": 3}))
    return str(p)


def test_corrupt_checkpoint_is_refused_before_any_step(tiny, tmp_path):
    tok, packed = tiny
    cfg = tiny_run_config(tok, packed, max_steps=4, checkpoint={"every": 2, "keep_last": 3})
    run(cfg, tmp_path / "run")
    r = tmp_path / "run"
    (r / "manifest.json").unlink()  # pretend it was killed after step 4's checkpoint
    shutil.rmtree(r / "model")
    before = (r / "metrics.jsonl").read_text()
    ck = r / "checkpoints" / "step_4" / "mp_rank_00_model_states.pt"
    data = ck.read_bytes()
    ck.write_bytes(data[: len(data) // 2])
    with pytest.raises(CmedbertError, match="corrupt or truncated"):
        run(cfg, r)
    ck.write_bytes(data[:-8] + b"XXXXXXXX")
    with pytest.raises(CmedbertError, match="sha256"):
        run(cfg, r)
    (r / "checkpoints" / "latest").write_text("garbage\n")
    with pytest.raises(CmedbertError, match="latest pointer"):
        run(cfg, r)
    assert (r / "metrics.jsonl").read_text() == before
    # the intact older checkpoint still resumes
    (r / "checkpoints" / "latest").write_text("step_2\n")
    m = run(cfg, r)
    assert m["counts"]["steps"] == 4
