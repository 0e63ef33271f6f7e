"""Publish, part 5: the push (create_repo, create_branch, upload_folder). The token is resolved
by huggingface_hub itself (HF_TOKEN, then the login cache): this module only asks whether one exists
and never prints, logs or writes it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cmedbert.errors import CmedbertError
from cmedbert.publish.config import PublishConfig


def _redact(text: str, secret: str | None) -> str:
    return text.replace(secret, "***") if secret else text


def push(cfg: PublishConfig, folder: Path, cfg_hash: str) -> dict[str, Any]:
    """create_repo (+ create_branch) + upload_folder. The token stays inside huggingface_hub."""
    from huggingface_hub import HfApi, get_token

    try:
        token = get_token()  # only to say clearly when there is none; never printed or passed on
    except Exception as exc:  # e.g. a failed OIDC exchange
        raise CmedbertError(f"could not resolve a Hugging Face token: {type(exc).__name__}") from None
    if not token:
        raise CmedbertError("no Hugging Face token: set HF_TOKEN or run `hf auth login` (or use --dry-run)")
    api = HfApi()
    message = f"cmedbert publish {cfg.repo_id.split('/', 1)[1]}: config {cfg_hash}"
    try:
        url = api.create_repo(cfg.repo_id, private=cfg.private, exist_ok=True, repo_type="model")
        if cfg.revision and cfg.revision != "main":
            api.create_branch(cfg.repo_id, branch=cfg.revision, exist_ok=True, repo_type="model")
        info = api.upload_folder(repo_id=cfg.repo_id, folder_path=str(folder), repo_type="model",
                                 commit_message=message, revision=cfg.revision)
    except CmedbertError:
        raise
    except Exception as exc:  # HTTP, offline mode, permissions: one clear line, token never in it
        raise CmedbertError(_redact(f"push to {cfg.repo_id} failed: {type(exc).__name__}: {exc}", token)) from None
    return {"repo_url": str(url), "commit": str(getattr(info, "oid", "") or getattr(info, "commit_url", "") or info),
            "commit_message": message}
