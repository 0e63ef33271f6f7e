"""Where does one pretraining step go? The real trainer (``pretrain.train.main``: DeepSpeed engine,
masked-only MLM head, prefetching batches) under ``torch.profiler`` for a few steps.

Why: on an H200 the BERT-base step took ~75-90 ms at batch 64 *and* at batch 256 (MFU 5.6 % vs
19 %, docs/experiments/gpu-smoke-h200.md): a fixed per-step cost that the smoke check cannot
locate. The trainer marks its parts with ``record_function`` ranges (``cmedbert.data``,
``cmedbert.forward``, ``cmedbert.backward``, ``cmedbert.optimizer``, ``cmedbert.stats``); this
script reports each range's host time per step, the device's busy time per step (summed kernel
time; accelerators only) and the operators with the most host time, and writes a Chrome trace.

    python benchmarks/step_profile.py [--model base|tiny] [--batch 64] [--seq-len 128] \\
        [--zero-stage 2] [--precision bf16|fp32] [--skip 5] [--steps 10] --out DIR

The data is synthetic (token ids do not change a step's cost; its shape does): a vocab of
``--vocab`` CJK characters, packed rows of ``--seq-len`` tokens, whole-word flags at random.

Last line: ``step_ms=… device_busy_ms=… host_only_ms=… data_ms=… forward_ms=… backward_ms=…
optimizer_ms=… stats_ms=… top_host_op=… device=…`` (``device_busy_ms`` and ``host_only_ms`` are
``NA`` on CPU, where host and device are the same).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from cmedbert.pretrain.train import Callback  # noqa: E402

RANGES = ("data", "forward", "backward", "optimizer", "stats")
MODELS = {
    "base": {"preset": "base", "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
             "intermediate_size": 3072},
    "tiny": {"preset": "tiny", "hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2,
             "intermediate_size": 512},
}


class StepProfiler(Callback):
    """A trainer callback: profiles the steps ``skip`` .. ``skip + steps`` (after warm-up)."""

    def __init__(self, skip: int, steps: int, trace: Path):
        self.skip, self.steps, self.trace = skip, steps, trace
        self.prof = None
        self.t0 = 0.0
        self.wall_s = 0.0

    def on_train_start(self, trainer) -> None:
        if self.skip == 0:
            self._start()

    def on_step_end(self, trainer, stats) -> None:
        if trainer.state.step == self.skip and self.prof is None:
            self._start()
        elif trainer.state.step == self.skip + self.steps and self.prof is not None:
            self._stop()

    def on_train_end(self, trainer) -> None:
        if self.prof is not None and not self.wall_s:
            self._stop()

    def _start(self) -> None:
        import torch
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
        _sync()
        self.prof = profile(activities=activities)
        self.prof.__enter__()
        self.t0 = time.perf_counter()

    def _stop(self) -> None:
        _sync()
        self.wall_s = time.perf_counter() - self.t0
        self.prof.__exit__(None, None, None)
        self.prof.export_chrome_trace(str(self.trace))


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _device_time_us(event) -> float:
    """An event's own device time (the attribute's name changed across torch versions)."""
    for name in ("self_device_time_total", "self_cuda_time_total"):
        if hasattr(event, name):
            return float(getattr(event, name))
    return 0.0


def summarize(prof, wall_s: float, steps: int, on_device: bool) -> tuple[dict[str, str], list[str]]:
    """Per-step figures (ms) from the profile, and a table of the operators with most host time."""
    events = prof.key_averages()
    by_name = {e.key: e for e in events}
    kv: dict[str, str] = {"step_ms": f"{1000 * wall_s / steps:.2f}"}
    if on_device:
        busy = sum(_device_time_us(e) for e in events if not e.key.startswith("cmedbert.")) / 1000 / steps
        kv["device_busy_ms"] = f"{busy:.2f}"
        kv["host_only_ms"] = f"{1000 * wall_s / steps - busy:.2f}"  # the step's time the device sat idle
    else:
        kv["device_busy_ms"] = kv["host_only_ms"] = "NA"
    for r in RANGES:
        e = by_name.get(f"cmedbert.{r}")
        kv[f"{r}_ms"] = f"{e.cpu_time_total / 1000 / steps:.2f}" if e is not None else "NA"
    ops = sorted((e for e in events if not e.key.startswith(("cmedbert.", "ProfilerStep"))),
                 key=lambda e: e.self_cpu_time_total, reverse=True)
    kv["top_host_op"] = ops[0].key.replace(" ", "_") if ops else "NA"
    table = [f"{'operator':60} {'calls/step':>10} {'host ms/step':>12} {'device ms/step':>14}"]
    for e in ops[:15]:
        table.append(f"{e.key[:60]:60} {e.count / steps:10.1f} {e.self_cpu_time_total / 1000 / steps:12.3f} "
                     f"{_device_time_us(e) / 1000 / steps:14.3f}")
    return kv, table


def build_config(args: argparse.Namespace, work: Path) -> dict:
    from cmedbert.pretrain.testing import tiny_run_config, tiny_setup

    n_rows = max(args.batch * 4, 256)
    tok, packed = tiny_setup(work / "data", seq_len=args.seq_len, n_train=n_rows, n_valid=16, n_chars=args.vocab)
    model = {**MODELS[args.model], "max_position_embeddings": max(128, args.seq_len)}
    return tiny_run_config(tok, packed, max_steps=args.skip + args.steps + 1, model=model,
                           batch={"global_batch": args.batch, "micro_batch": args.batch},
                           optimizer={"lr": 1e-4, "warmup_steps": 1},
                           engine={"zero_stage": args.zero_stage, "precision": args.precision},
                           metrics={"log_every": 1000, "progress_bar": False, "wandb_mode": "disabled"})


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=sorted(MODELS), default="base")
    ap.add_argument("--batch", type=int, default=64, help="sequences per step (one micro-batch, one rank)")
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--vocab", type=int, default=21128, help="CJK characters in the synthetic vocab")
    ap.add_argument("--zero-stage", type=int, default=2)
    ap.add_argument("--precision", default=None, help="bf16 on an accelerator, fp32 on CPU unless given")
    ap.add_argument("--skip", type=int, default=5, help="warm-up steps before profiling")
    ap.add_argument("--steps", type=int, default=10, help="steps profiled")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    ap.add_argument("--out", required=True, help="work folder: synthetic data, the run, trace.json")
    args = ap.parse_args(argv)
    import torch

    from cmedbert.config import load_config
    from cmedbert.pretrain.config import PretrainConfig
    from cmedbert.pretrain.train import main as pretrain_main

    if args.threads:
        torch.set_num_threads(args.threads)
    on_device = torch.cuda.is_available()
    args.precision = args.precision or ("bf16" if on_device else "fp32")
    work = Path(args.out)
    if (work / "run").exists():
        sys.exit(f"{work / 'run'} exists: choose another --out")
    cfg = load_config(PretrainConfig, None, [], base=build_config(args, work))
    profiler = StepProfiler(args.skip, args.steps, work / "trace.json")
    pretrain_main(cfg, work / "run", callbacks=[profiler])
    if profiler.prof is None or not profiler.wall_s:
        sys.exit("the run ended before the profiled steps")
    kv, table = summarize(profiler.prof, profiler.wall_s, args.steps, on_device)
    kv["device"] = torch.cuda.get_device_name(0).replace(" ", "_") if on_device else "cpu"
    print(f"{args.model} batch {args.batch} x seq {args.seq_len}, ZeRO-{args.zero_stage} {args.precision}, "
          f"{args.steps} steps profiled after {args.skip}; trace: {work / 'trace.json'}")
    print("\n".join(table))
    print(" ".join(f"{k}={v}" for k, v in kv.items()))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
