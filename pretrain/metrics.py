"""Where metrics go: ``metrics.jsonl`` (the record), a tqdm bar and wandb, from rank 0 only.

wandb never blocks or breaks a run: mode "disabled" by default, and any wandb failure
(no network, no key) is logged once and wandb is dropped for the rest of the run.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

log = logging.getLogger("pretrain")


def memory_gb(device: str) -> float:
    """Peak accelerator memory (GiB) on GPU, resident set size on CPU."""
    import torch

    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**30
    try:
        import psutil

        return psutil.Process().memory_info().rss / 2**30
    except Exception:
        return float("nan")


def truncate_after(path: Path, step: int) -> None:
    """Drop rows logged after ``step`` (a resumed run rewrites them, so the curve stays exact)."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line).get("step", 0) <= step:
                keep.append(line)
        except json.JSONDecodeError:
            continue  # a line cut by a kill
    path.write_text("".join(l + "\n" for l in keep), encoding="utf-8")


def _clean(v: Any) -> Any:
    return None if isinstance(v, float) and not math.isfinite(v) else v


class MetricsSink:
    def __init__(self, cfg: Any, out: Path, rank: int, total_steps: int, start_step: int,
                 run_config: dict[str, Any]):
        self.cfg, self.rank, self.path = cfg, rank, out / "metrics.jsonl"
        self.bar = self.wandb = None
        if rank != 0:
            return
        truncate_after(self.path, start_step)
        self.fh = open(self.path, "a", encoding="utf-8")
        if cfg.progress_bar:
            from tqdm import tqdm

            self.bar = tqdm(total=total_steps, initial=start_step, desc="pretrain", unit="step", dynamic_ncols=True)
        if cfg.wandb_mode != "disabled":
            try:
                import wandb

                self.wandb = wandb.init(project=cfg.wandb_project, name=cfg.wandb_run_name or out.name,
                                        mode=cfg.wandb_mode, dir=str(out), config=run_config, resume="allow",
                                        settings=wandb.Settings(init_timeout=60))
            except Exception as exc:  # never let wandb stop training
                log.warning("wandb disabled for this run: %s", exc)
                self.wandb = None

    def write(self, row: dict[str, Any]) -> None:
        if self.rank != 0:
            return
        row = {k: _clean(v) for k, v in row.items()}
        self.fh.write(json.dumps(row) + "\n")
        self.fh.flush()
        if row.get("split") == "valid":
            log.info("step %d eval: loss %.4f acc %.4f", row["step"], row["loss"], row["mlm_acc"])
        if self.bar is not None and "split" not in row:
            self.bar.set_postfix(loss=f"{row['loss']:.3f}", tok_s=f"{row['tok_s']:.0f}", refresh=False)
        elif "split" not in row:
            log.info("step %d loss %.4f acc %.3f lr %.2e tok/s %.0f", row["step"], row["loss"], row["mlm_acc"],
                     row["lr"], row["tok_s"])
        if self.wandb is not None:
            try:
                prefix = "valid/" if row.get("split") == "valid" else "train/"
                self.wandb.log({prefix + k: v for k, v in row.items() if isinstance(v, (int, float))},
                               step=row["step"])
            except Exception as exc:
                log.warning("wandb logging failed, dropping wandb: %s", exc)
                self.wandb = None

    def progress(self, step: int) -> None:
        if self.bar is not None:
            self.bar.n = step
            self.bar.refresh()

    def close(self) -> None:
        if self.rank != 0:
            return
        self.fh.close()
        if self.bar is not None:
            self.bar.close()
        if self.wandb is not None:
            try:
                self.wandb.finish()
            except Exception:
                pass
