"""``cmedbert corpus build``: raw sources -> cleaned, scrubbed, deduplicated, decontaminated shards.

:func:`main` picks who runs the three passes of :mod:`cmedbert.corpus.passes`: this process
(``executor=inline``, the reference) or datatrove pipelines (:mod:`cmedbert.corpus.distributed`).
It sits above both, so the passes and the datatrove steps that reuse them never import each other
in a circle.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from cmedbert.artifact import atomic_output
from cmedbert.corpus.config import CorpusConfig
from cmedbert.corpus.passes import finish, plan_units, run_inline_pass1, split_spans  # noqa: F401  (re-exported)
from cmedbert.errors import CmedbertError


def main(cfg: CorpusConfig, out: Path, overwrite: bool = False) -> dict[str, Any]:
    """Build the corpus folder ``out`` from ``cfg`` (all three passes); returns the manifest.

    ``executor=local`` (default) and ``ray`` run the passes as datatrove pipelines
    (:mod:`cmedbert.corpus.distributed`); ``inline`` runs them in this process with a process pool
    for pass 1 (the reference the datatrove path is tested against). ``slurm`` submits jobs and
    returns no manifest: use :func:`cmedbert.corpus.distributed.submit`."""
    plan_units(cfg)  # fail on a bad path before creating anything
    if cfg.executor == "slurm":
        raise CmedbertError("executor=slurm submits jobs: run `cmedbert corpus build ... executor=slurm` "
                            "(add --dry-run to see the job scripts)")
    if cfg.executor != "inline":
        from cmedbert.corpus import distributed

        return distributed.build(cfg, out, overwrite)
    t0 = time.time()
    with atomic_output(out, overwrite=overwrite) as tmp:
        work = tmp / "_work"
        results, decontam_info, eval_inputs = run_inline_pass1(cfg, work)
        manifest = finish(cfg, tmp, results, decontam_info, eval_inputs, t0)
        shutil.rmtree(work)
    return manifest
