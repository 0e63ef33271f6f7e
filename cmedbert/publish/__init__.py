"""`cmedbert publish`: a checked Hugging Face upload folder with a model card, then a push.

    cmedbert publish [CONFIG] model_dir=runs/med-continual/model repo_id=my-org/cmedbert-small \
        [private=true] [revision=R] [results='["finetune/results.jsonl"]'] [key=value ...] [--dry-run] [--out UPLOAD_DIR]
    cmedbert publish runs/med-continual/model repo_id=my-org/cmedbert-small --dry-run   # MODEL_DIR shortcut

Every option is a field of :class:`~cmedbert.publish.config.PublishConfig` (``cmedbert publish
--help`` lists them), set from a config file and/or ``key=value`` overrides like every other
subcommand. ``main`` reads in this order, one module per part:

1. :mod:`~cmedbert.publish.checks`: repo id form, model folder (safetensors weights only, never
   pickles; config.json; tokenizer files), the run's manifest, this model's results rows
   (read, validated and aggregated over seeds by :mod:`cmedbert.finetune.results`);
2. :mod:`~cmedbert.publish.card`: the model card (``ModelCardData`` metadata with the CBLUE
   ``model-index``; ``ModelCard.from_template``: training data, tokenizer, training config, intended
   use, limitations, not for clinical decisions);
3. :mod:`~cmedbert.publish.upload`: the upload folder, atomically: weights, config, tokenizer files,
   ``extension.json`` (if the tokenizer was extended), ``cmedbert.json`` (provenance: hashes of every
   file) and ``README.md``;
4. :mod:`~cmedbert.publish.verify`: the folder loads with AutoModelForMaskedLM / AutoTokenizer, its
   logits equal the source's, and a fill-mask pipeline gives the same top predictions;
5. unless ``dry_run``: :mod:`~cmedbert.publish.push`: ``HfApi().create_repo`` (+ ``create_branch``
   for a revision other than main) and ``upload_folder`` with the config hash in the commit message.

The upload folder deliberately carries no cmedbert ``manifest.json``/``config.json`` pair: its
``config.json`` must be the model's Hugging Face config. ``cmedbert.json`` holds the provenance.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

from cmedbert.errors import CmedbertError

log = logging.getLogger("cmedbert.publish")


def main(cfg: Any, out: str | Path | None = None) -> dict[str, Any]:
    """Check, build the card and folder (``out``, default a temporary one), verify, (push).
    Returns a summary; nothing is pushed unless every check passes."""
    from cmedbert.publish import card, checks, push, upload, verify

    cfg.validate()
    model_dir = Path(cfg.model_dir)
    parts = checks.check_model_dir(model_dir)
    manifest = checks.run_manifest(model_dir)
    rows = checks.model_results([Path(r) for r in cfg.results], model_dir, cfg.checkpoint_name)
    if cfg.results and not rows:
        log.warning("no rows for this checkpoint in %s (set checkpoint_name=NAME to match rows by name)",
                    ", ".join(cfg.results))
    summary = checks.summarize(rows)
    cfg_hash = checks.publish_config_hash(model_dir, manifest)
    text = card.build_card(cfg, model_dir, parts, summary, manifest, cfg_hash)
    folder = Path(out) if out else Path(tempfile.mkdtemp(prefix="cmedbert-publish-")) / "upload"
    files = upload.build_upload_folder(cfg, model_dir, parts, text, cfg_hash, manifest, folder)
    try:
        check = verify.verify_upload(model_dir, folder, cfg.sentences, cfg.top_k)
    except CmedbertError:
        shutil.rmtree(folder, ignore_errors=True)  # an unverified folder is not left for a manual upload
        raise
    result: dict[str, Any] = {"folder": str(folder), "files": files, "skipped": parts["skipped"], "results": summary,
                              "sizes": {n: (folder / n).stat().st_size for n in files}, "config_hash": cfg_hash,
                              "verify": check, "pushed": False, "kept": True}
    if not cfg.dry_run:
        result.update(push.push(cfg, folder, cfg_hash), pushed=True)
        if not out:  # a temporary copy of the weights is not worth keeping once it is on the Hub
            shutil.rmtree(folder.parent, ignore_errors=True)
            result["kept"] = False
    return result


# ------------------------------------------------------------------------------------- CLI
def register(sub: argparse._SubParsersAction) -> None:
    from cmedbert.cliargs import add_config_args
    from cmedbert.config import describe
    from cmedbert.publish.config import PublishConfig

    keys = "\n".join(f"  {k} = {d}\n      {h}" for k, d, h in describe(PublishConfig))
    p = sub.add_parser("publish", help="check, verify and push a model folder to the Hugging Face Hub",
                       description=__doc__, epilog="config keys:\n" + keys,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(p, out_required=False)
    p.add_argument("--dry-run", action="store_true", help="same as dry_run=true: build and verify, upload nothing")
    p.set_defaults(func=_run)


def load(items: list[str], dry_run: bool = False) -> Any:
    """``[CONFIG | MODEL_DIR] [key=value ...]`` -> PublishConfig (a folder first is model_dir=FOLDER)."""
    import json

    from cmedbert.cliargs import split_config_args
    from cmedbert.config import load_config
    from cmedbert.publish.config import PublishConfig

    shortcut = []
    if items and Path(items[0]).is_dir():
        shortcut, items = [f"model_dir={json.dumps(items[0])}"], items[1:]
    path, overrides = split_config_args(items)
    return load_config(PublishConfig, path, shortcut + overrides + (["dry_run=true"] if dry_run else []))


def _run(args: argparse.Namespace) -> int:
    cfg = load(args.args, args.dry_run)
    res = main(cfg, args.out)
    print(f"upload folder: {res['folder']}" + ("" if res["kept"] else " (temporary, removed after the push)"))
    for name in res["files"]:
        print(f"  {name}  ({res['sizes'][name]:,} bytes)")
    if res["skipped"]:
        print(f"not published from {cfg.model_dir}: {', '.join(res['skipped'])}")
    v = res["verify"]
    print(f"verified: loads with AutoModelForMaskedLM/AutoTokenizer; fill-mask top-{v['top_k']} identical to "
          f"the source on {v['sentences']} sentences (max |logit diff| {v['max_abs_logit_diff']:.1e})")
    for s in res["results"]:
        print(f"result: {s['task']} {s['split']} {s['metric']} {s['mean']:.4f} ± {s['std']:.4f} (n={s['n']})")
    if res["pushed"]:
        print(f"pushed to {res['repo_url']} ({res['commit_message']})")
    else:
        print(f"dry run: nothing uploaded; would push to {cfg.repo_id}"
              + (f" revision {cfg.revision}" if cfg.revision else "") + f" with config {res['config_hash']}")
    return 0
