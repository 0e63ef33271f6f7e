"""Publish, part 3: the upload folder (allowed files copied, README.md card, cmedbert.json provenance)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from cmedbert.errors import CmedbertError
from cmedbert.publish.config import PublishConfig


def build_upload_folder(cfg: PublishConfig, model_dir: Path, parts: dict[str, list[str]], card: str,
                        cfg_hash: str, manifest: dict[str, Any] | None, out: Path) -> list[str]:
    """Copy the allowed files and write README.md + cmedbert.json into ``out`` (atomically)."""
    import cmedbert
    from cmedbert.artifact import atomic_output, sha256_file

    names = parts["weights"] + parts["config"] + parts["tokenizer"] + parts["extra"]
    with atomic_output(out) as tmp:
        for n in names:
            shutil.copyfile(model_dir / n, tmp / n)
        (tmp / "README.md").write_text(card, encoding="utf-8")
        prov = {
            "cmedbert_version": cmedbert.__version__,
            "repo_id": cfg.repo_id,
            "config_hash": cfg_hash,
            "run_manifest_config_hash": (manifest or {}).get("config_hash"),
            "git_commit": (manifest or {}).get("git_commit"),
            "files": [{"path": n, "sha256": sha256_file(tmp / n), "bytes": (tmp / n).stat().st_size}
                      for n in sorted(names + ["README.md"])],
        }
        (tmp / "cmedbert.json").write_text(json.dumps(prov, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        for n in names:  # a copy that differs from its source is not publishable
            if sha256_file(tmp / n) != sha256_file(model_dir / n):
                raise CmedbertError(f"{n}: the copy in the upload folder differs from the source")
    return sorted(p.name for p in out.iterdir())
