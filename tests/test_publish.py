"""`cmedbert publish`: upload folder, model card, verification and the (faked) Hub push.

Only the Hub API is faked (HfApi.create_repo / create_branch / upload_folder): everything
else is real, on a tiny BertForMaskedLM built here.
"""

from __future__ import annotations

import json
import shutil
import statistics
from pathlib import Path

import pytest

from cmedbert.artifact import write_manifest
from cmedbert.cli import main as cli_main

PLANTED_TOKEN = "hf_plantedTOKENdoNotLeak0123456789abcdef"
DEMO = Path(__file__).resolve().parent.parent / "cmedbert" / "demo_data"
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def _chars() -> list[str]:
    text = (DEMO / "medical" / "qa.jsonl").read_text(encoding="utf-8")
    return sorted({c for c in text if "\u4e00" <= c <= "\u9fff"})[:300] + list("0123456789.%")


def make_model(folder: Path, seed: int = 0) -> Path:
    """A tiny BERT MLM folder (safetensors + tokenizer), loadable with the Auto classes."""
    import torch
    from transformers import BertConfig, BertForMaskedLM, BertTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    vocab = SPECIALS + _chars()
    tok = BertTokenizer(vocab={t: i for i, t in enumerate(vocab)}, do_lower_case=False,
                        tokenize_chinese_chars=True, strip_accents=None)
    tok.save_pretrained(str(folder))
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=64)
    BertForMaskedLM(cfg).save_pretrained(str(folder), safe_serialization=True)
    return folder


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """RUN/ with RUN/model (+ extension.json), RUN/manifest.json -> a corpus manifest."""
    root = tmp_path_factory.mktemp("pub")
    corpus = root / "corpus"
    corpus.mkdir()
    write_manifest(corpus, stage="corpus", config={"sources": ["demo"]},
                   counts={"records_in": 480, "records_out": 431, "dropped": {"duplicate": 9},
                           "pii": {"phone": 2, "email": 1}, "decontaminated": {"KUAKE-QIC": 1},
                           "per_source": {"toyhom-demo": 140, "meddialog-demo": 30}})
    run = root / "run-continual"
    model = make_model(run / "model")
    (model / "extension.json").write_text(json.dumps({
        "base": str(root / "general-base"), "base_vocab_size": 250, "mode": "default",
        "tokens": [{"token": "糖", "id": 250, "origin": "corpus", "count": 40, "base_pieces": [1]},
                   {"token": "胍", "id": 251, "origin": "term", "count": 12, "base_pieces": [1]}]},
        ensure_ascii=False), encoding="utf-8")
    write_manifest(run, stage="pretrain", config={"init": "continual", "lr": 5e-4, "out": str(run),
                                                  "corpus": str(corpus)},
                   inputs=[corpus], counts={"steps": 40, "tokens_seen": 81920},
                   extra={"pretrain": {"init": "continual", "init_from": str(root / "general-base"),
                                       "world_size": 1, "final_eval": {"loss": 6.2, "mlm_acc": 0.05}}})
    return run


@pytest.fixture(scope="module")
def results_file(run_dir) -> Path:
    """A finetune output: results.jsonl with rows for this run (3 seeds) and for another checkpoint."""
    ft = run_dir.parent / "finetune"
    ft.mkdir()
    rows = []
    for seed, (qic, ner) in zip((1, 2, 3), [(0.50, 0.30), (0.56, 0.34), (0.53, 0.29)]):
        rows.append(dict(checkpoint="run-continual", task="KUAKE-QIC", seed=seed, split="dev", metric="accuracy",
                         value=qic, config_hash="aaaa", data={"files": {"KUAKE-QIC_dev.json": "x"}, "official": True}))
        # like the demo's built-in CMeEE-shaped task: not the official files
        rows.append(dict(checkpoint="run-continual", task="CMeEE", seed=seed, split="dev", metric="f1",
                         value=ner, config_hash="bbbb", data={"files": {"CMeEE_dev.json": "y"}, "official": False}))
        rows.append(dict(checkpoint="scratch", task="KUAKE-QIC", seed=seed, split="dev", metric="accuracy",
                         value=0.99, config_hash="aaaa"))
    (ft / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    (ft / "manifest.json").write_text(json.dumps({"stage": "finetune", "checkpoints": {
        "run-continual": str(run_dir / "model"), "scratch": str(run_dir.parent / "other" / "model")}}),
        encoding="utf-8")
    return ft / "results.jsonl"


@pytest.fixture
def fake_hub(monkeypatch):
    """Recording stand-ins for the three Hub calls publish makes: the only faked network."""
    from huggingface_hub import HfApi

    calls: list[tuple[str, tuple, dict]] = []

    def create_repo(self, repo_id, **kw):
        calls.append(("create_repo", (repo_id,), kw))
        return f"https://huggingface.co/{repo_id}"

    def create_branch(self, repo_id, **kw):
        calls.append(("create_branch", (repo_id,), kw))

    def upload_folder(self, **kw):
        kw = dict(kw, files=sorted(p.name for p in Path(kw["folder_path"]).iterdir()))
        calls.append(("upload_folder", (), kw))
        return type("CommitInfo", (), {"oid": "0123abcd"})()

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "create_branch", create_branch)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    return calls


EXPECTED_FILES = {"model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json",
                  "extension.json", "README.md", "cmedbert.json"}


@pytest.fixture(scope="module")
def dry_run(run_dir, results_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("dry") / "upload"
    import io
    from contextlib import redirect_stdout

    buf = io.StringIO()
    with redirect_stdout(buf):
        rc = cli_main(["publish", str(run_dir / "model"), "repo_id=my-org/cmedbert-tiny",
                       f'results=["{results_file}"]', "--dry-run", "--out", str(out)])
    assert rc == 0
    return out, buf.getvalue()


def test_dry_run_folder_lists_files_loads_and_round_trips(dry_run, run_dir):
    import torch
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    out, stdout = dry_run
    names = {p.name for p in out.iterdir()}
    assert EXPECTED_FILES <= names
    assert not {n for n in names if n.endswith((".bin", ".pt", ".pkl"))}
    for n in EXPECTED_FILES:
        assert n in stdout, n
    assert "dry run: nothing uploaded" in stdout and "fill-mask top-5 identical" in stdout

    src, up = run_dir / "model", out
    tok_s, tok_u = AutoTokenizer.from_pretrained(str(src)), AutoTokenizer.from_pretrained(str(up))
    text = ["患者确诊2型糖尿病后需要长期服用二甲双[MASK]控制血糖。", "血糖控制不理想"]
    enc = tok_u(text, return_tensors="pt", padding=True)
    assert enc["input_ids"].tolist() == tok_s(text, return_tensors="pt", padding=True)["input_ids"].tolist()
    assert (enc["input_ids"] != tok_u.unk_token_id).float().mean() > 0.5  # the vocab really covers the text
    with torch.no_grad():
        a = AutoModelForMaskedLM.from_pretrained(str(src)).eval()(**enc).logits
        b = AutoModelForMaskedLM.from_pretrained(str(up)).eval()(**enc).logits
    assert torch.equal(a, b)
    prov = json.loads((out / "cmedbert.json").read_text(encoding="utf-8"))
    assert {f["path"] for f in prov["files"]} == EXPECTED_FILES - {"cmedbert.json"}


def test_model_card_parses_and_carries_the_results(dry_run, run_dir):
    from huggingface_hub import ModelCard

    out, _ = dry_run
    card = ModelCard.load(out / "README.md")
    d = card.data
    assert d.language == "zh" and d.license == "apache-2.0" and d.pipeline_tag == "fill-mask"
    assert {"cmedbert", "medical", "chinese", "vocab-extension", "init-continual"} <= set(d.tags)
    assert d.datasets == ["meddialog-demo", "toyhom-demo"]
    got = {(r.dataset_config, r.metric_type): r.metric_value for r in d.eval_results}
    assert got == {("KUAKE-QIC", "accuracy"): round(statistics.fmean([0.50, 0.56, 0.53]), 4),
                   ("CMeEE", "f1"): round(statistics.fmean([0.30, 0.34, 0.29]), 4)}  # "scratch" rows excluded
    assert {r.task_type for r in d.eval_results} == {"text-classification", "token-classification"}
    # "CBLUE" only for the official files
    names = {r.dataset_config: (r.dataset_type, r.dataset_name) for r in d.eval_results}
    assert names["KUAKE-QIC"] == ("cblue", "CBLUE KUAKE-QIC")
    assert names["CMeEE"][0] != "cblue" and not names["CMeEE"][1].startswith("CBLUE") and "not the official" in names["CMeEE"][1]
    text = card.text
    assert "## Evaluation (CBLUE)" not in text and "| CMeEE | CBLUE-format, not official |" in text
    for needle in ("## Training data", "records_out 431", "pii: phone 2, email 1", "## Tokenizer and vocabulary",
                   "extended", "2 new tokens", "## Training configuration", "tokens_seen = 81,920",
                   "## Intended use", "## Limitations", "Not for clinical decisions", "不能用于临床"):
        assert needle in text, needle
    assert str(run_dir.parent) not in (out / "README.md").read_text(encoding="utf-8")  # no local paths


def test_push_calls_the_hub_api_and_never_leaks_the_token(run_dir, results_file, tmp_path, monkeypatch,
                                                          fake_hub, capsys, caplog):
    monkeypatch.setenv("HF_TOKEN", PLANTED_TOKEN)
    out = tmp_path / "upload"
    caplog.set_level("DEBUG")
    rc = cli_main(["-v", "publish", str(run_dir / "model"), "repo_id=my-org/cmedbert-tiny", "private=true",
                   "revision=exp-1", f'results=["{results_file}"]', "--out", str(out)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    run_hash = json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))["config_hash"]
    assert [c[0] for c in fake_hub] == ["create_repo", "create_branch", "upload_folder"]
    _, args, kw = fake_hub[0]
    assert args == ("my-org/cmedbert-tiny",) and kw["private"] is True and kw["exist_ok"] is True
    assert "token" not in kw
    _, args, kw = fake_hub[1]
    assert args == ("my-org/cmedbert-tiny",) and kw["branch"] == "exp-1" and kw["exist_ok"] is True
    _, _, kw = fake_hub[2]
    assert kw["repo_id"] == "my-org/cmedbert-tiny" and kw["revision"] == "exp-1"
    assert Path(kw["folder_path"]) == out and set(kw["files"]) == EXPECTED_FILES
    assert f"config {run_hash}" in kw["commit_message"]
    assert "token" not in kw
    assert "pushed to https://huggingface.co/my-org/cmedbert-tiny" in captured.out

    # the planted token appears nowhere: stdout, stderr, logs, any file written
    assert PLANTED_TOKEN not in captured.out + captured.err + caplog.text
    for root in (tmp_path, run_dir.parent):
        for p in root.rglob("*"):
            if p.is_file():
                assert PLANTED_TOKEN.encode() not in p.read_bytes(), p


def test_push_to_main_skips_create_branch_and_removes_the_temporary_folder(run_dir, monkeypatch, fake_hub, capsys):
    monkeypatch.setenv("HF_TOKEN", PLANTED_TOKEN)
    rc = cli_main(["publish", str(run_dir / "model"), "repo_id=org/m"])
    assert rc == 0
    assert [c[0] for c in fake_hub] == ["create_repo", "upload_folder"]
    assert fake_hub[0][2]["private"] is False and fake_hub[1][2]["revision"] is None
    assert "removed after the push" in capsys.readouterr().out
    assert not Path(fake_hub[1][2]["folder_path"]).exists()


def test_failed_verification_uploads_nothing_and_leaves_no_folder(run_dir, tmp_path, monkeypatch, fake_hub,
                                                                   capsys):
    from transformers import AutoTokenizer

    monkeypatch.setenv("HF_TOKEN", PLANTED_TOKEN)
    model = _copy_model(run_dir, tmp_path / "model")
    tok = AutoTokenizer.from_pretrained(str(model))
    tok.add_tokens(["糖尿病", "胰岛素"])  # extended tokenizer, embeddings never resized
    tok.save_pretrained(str(model))
    out = tmp_path / "upload"
    rc = cli_main(["publish", str(model), "repo_id=org/name", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and "embeddings not resized" in err
    assert fake_hub == [] and not out.exists()


def _copy_model(run_dir: Path, dest: Path) -> Path:
    shutil.copytree(run_dir / "model", dest)
    return dest


def _bad_no_tokenizer(run_dir, tmp_path):
    m = _copy_model(run_dir, tmp_path / "model")
    for n in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        (m / n).unlink(missing_ok=True)
    return m, "no tokenizer files"


def _bad_pickled_weights(run_dir, tmp_path):
    import torch
    from safetensors.torch import load_file

    m = _copy_model(run_dir, tmp_path / "model")
    torch.save(load_file(str(m / "model.safetensors")), str(m / "pytorch_model.bin"))
    (m / "model.safetensors").unlink()
    return m, "refusing pickled files pytorch_model.bin"


def _bad_pickle_beside_safetensors(run_dir, tmp_path):
    import torch

    m = _copy_model(run_dir, tmp_path / "model")
    torch.save({"lr": 1.0}, str(m / "training_args.bin"))
    return m, "refusing pickled files training_args.bin"


def _bad_no_weights(run_dir, tmp_path):
    m = _copy_model(run_dir, tmp_path / "model")
    (m / "model.safetensors").unlink()
    return m, "no *.safetensors weights"


@pytest.mark.parametrize("make_bad", [_bad_no_tokenizer, _bad_pickled_weights, _bad_pickle_beside_safetensors,
                                      _bad_no_weights], ids=lambda f: f.__name__[5:])
def test_bad_model_folders_fail_clearly_and_upload_nothing(make_bad, run_dir, tmp_path, monkeypatch, fake_hub,
                                                           capsys):
    monkeypatch.setenv("HF_TOKEN", PLANTED_TOKEN)
    model, message = make_bad(run_dir, tmp_path)
    out = tmp_path / "upload"
    rc = cli_main(["publish", str(model), "repo_id=org/name", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("cmedbert publish: error:") and message in err and str(model) in err
    assert fake_hub == [] and not out.exists()
    assert PLANTED_TOKEN not in err


@pytest.mark.parametrize("repo_id", ["no-namespace", "a/b/c", "org/na me", "org/x--y", "org/", "/name",
                                     "org/name.git", "-org/name", "org/" + "n" * 97])
def test_bad_repo_ids_fail_before_any_work(repo_id, run_dir, tmp_path, monkeypatch, fake_hub, capsys):
    monkeypatch.setenv("HF_TOKEN", PLANTED_TOKEN)
    out = tmp_path / "upload"
    rc = cli_main(["publish", str(run_dir / "model"), f"repo_id={repo_id}", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and "config key 'repo_id'" in err and "ORG/NAME" in err
    assert fake_hub == [] and not out.exists()


def test_no_token_is_a_clear_error_and_nothing_is_uploaded(run_dir, tmp_path, monkeypatch, fake_hub, capsys):
    from huggingface_hub import constants

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    rc = cli_main(["publish", str(run_dir / "model"), "repo_id=org/name", "--out", str(tmp_path / "u")])
    err = capsys.readouterr().err
    assert rc == 2 and "no Hugging Face token" in err
    assert fake_hub == []


def test_bad_results_line_names_file_and_line(run_dir, tmp_path, fake_hub, capsys):
    bad = tmp_path / "results.jsonl"
    bad.write_text('{"checkpoint": "x", "task": "KUAKE-QIC", "seed": 1, "split": "dev", "metric": "accuracy", '
                   '"value": 0.5}\n{not json\n', encoding="utf-8")
    rc = cli_main(["publish", str(run_dir / "model"), "repo_id=org/name",
                   f'results=["{bad}"]', "--dry-run", "--out", str(tmp_path / "u")])
    err = capsys.readouterr().err
    assert rc == 2 and f"{bad}:2: invalid JSON" in err
    assert not (tmp_path / "u").exists() and fake_hub == []


def test_a_one_seed_card_says_n_1_and_gives_no_std():
    from cmedbert.publish.card import _results_section
    from cmedbert.publish.checks import summarize

    rows = [dict(task="KUAKE-QIC", split="dev", metric="accuracy", seed=1, value=0.5, config_hash="h",
                 data={"official": True})]
    text = "\n".join(_results_section(summarize(rows)))
    assert "## Evaluation (CBLUE)" in text and "one seed (n=1)" in text
    assert "| KUAKE-QIC | official CBLUE | dev | accuracy | 0.5000 | – | 1 |" in text


def test_summarize_results_averages_seeds_once_each():
    from cmedbert.publish.checks import summarize

    rows = [dict(task="T", split="dev", metric="f1", seed=s, value=v, config_hash="h")
            for s, v in [(1, 0.2), (2, 0.4), (2, 0.4), (3, 0.6)]]
    (s,) = summarize(rows)
    assert s["n"] == 3 and s["mean"] == pytest.approx(0.4) and s["std"] == pytest.approx(0.2)
