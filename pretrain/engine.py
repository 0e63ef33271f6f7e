"""Everything DeepSpeed, behind one module (imported lazily by the trainer).

* :func:`setup_distributed` joins (or, outside any launcher, creates) the process group;
* :func:`build_ds_config` turns our config into a DeepSpeed config dict (plain data, testable);
* :func:`initialize` builds the engine with our AdamW + warmup/decay schedule;
* :func:`save_checkpoint` / :func:`load_checkpoint` write and read ``checkpoints/step_N``
  atomically (temporary tag renamed when every rank is done) with a ``latest`` pointer and a
  size + sha256 listing checked before resuming;
* :func:`full_state_dict` gathers the weights (also under ZeRO-3) for a Hugging Face export;
* :func:`backward_global_mean` turns a micro-batch's summed token loss into its share of the
  global batch's mean, undoing DeepSpeed's own accumulation / data-parallel averaging;
* :func:`check_checkpoint_safe` refuses checkpoint files that hold anything but tensors and the
  few DeepSpeed types (DeepSpeed itself unpickles them with ``weights_only=False``);
* :func:`check_extension_locks` names a stale C++ extension build lock instead of hanging on it.

On CPU DeepSpeed runs with gloo (ZeRO 0-3, fp32 / bf16). accelerate's DeepSpeed plugin does
not give real data parallelism on CPU, so the engine is built with ``deepspeed.initialize``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from cmedbert.artifact import atomic_write_text, sha256_file
from cmedbert.config import deep_merge
from cmedbert.errors import ArtifactError, ConfigError
from cmedbert.training import barrier, param_groups

log = logging.getLogger(__name__)

CKPT_INFO = "cmedbert_checkpoint.json"


@dataclass
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: str  # "cuda:N" or "cpu"
    backend: str


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_LAUNCH_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@contextlib.contextmanager
def distributed(backend: str | None = None) -> Iterator[DistInfo]:
    """Join the launcher's process group (torchrun / deepspeed / SLURM env), or create a
    single-rank one when called from plain Python. The group is kept and reused by later calls
    in the same process; launcher variables set here are removed again on exit, so child
    processes started later do not inherit a stale rendezvous."""
    import torch
    import torch.distributed as dist

    added: list[str] = []
    if "RANK" not in os.environ and "WORLD_SIZE" not in os.environ:  # plain Python (or a later call)
        single = {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                  "MASTER_PORT": str(_free_port())}
        added = [k for k in single if k not in os.environ]
        os.environ.update({k: single[k] for k in added})
    try:
        local_rank = int(os.environ.get("LOCAL_RANK", os.environ.get("SLURM_LOCALID", "0")))
        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(local_rank)
        backend = backend or ("nccl" if cuda else "gloo")
        import deepspeed

        deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=False, verbose=False,
                                   dist_init_required=not dist.is_initialized())
        yield DistInfo(dist.get_rank(), dist.get_world_size(), local_rank,
                       f"cuda:{local_rank}" if cuda else "cpu", dist.get_backend())
    finally:
        for k in added:
            os.environ.pop(k, None)


def grad_accumulation(global_batch: int, micro_batch: int, world_size: int) -> int:
    """Accumulation steps so that world_size x micro x accumulation == global batch."""
    per_step = micro_batch * world_size
    if global_batch % per_step:
        raise ConfigError(f"batch.global_batch={global_batch} sequences is not divisible by world size "
                          f"{world_size} x batch.micro_batch={micro_batch} = {per_step}")
    return global_batch // per_step


def build_ds_config(cfg: Any, world_size: int) -> dict[str, Any]:
    """The DeepSpeed config for ``cfg`` (a PretrainConfig) at ``world_size`` ranks, with the
    user's ``engine.ds_config`` JSON deep-merged over it. Plain data: no torch, no DeepSpeed."""
    ga = grad_accumulation(cfg.batch.global_batch, cfg.batch.micro_batch, world_size)
    precision = cfg.engine.precision
    zero: dict[str, Any] = {"stage": cfg.engine.zero_stage}
    if cfg.engine.zero_stage >= 2:
        zero.update(contiguous_gradients=True, overlap_comm=False, reduce_bucket_size=int(5e8),
                    allgather_bucket_size=int(5e8))
    if cfg.engine.zero_stage == 3:
        zero.update(stage3_gather_16bit_weights_on_model_save=False)
    ds: dict[str, Any] = {
        "train_batch_size": cfg.batch.global_batch,
        "train_micro_batch_size_per_gpu": cfg.batch.micro_batch,
        "gradient_accumulation_steps": ga,
        "gradient_clipping": float(cfg.optimizer.grad_clip),
        "zero_optimization": zero,
        "bf16": {"enabled": precision == "bf16"},
        "fp16": {"enabled": precision == "fp16", "loss_scale": 0, "initial_scale_power": 16,
                 "loss_scale_window": 1000, "hysteresis": 2, "min_loss_scale": 1},
        # our AdamW is built client side (param groups without decay on bias / LayerNorm)
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 10**12,
        "wall_clock_breakdown": False,
    }
    if cfg.engine.ds_config:
        from cmedbert.config import read_config_file

        user = read_config_file(cfg.engine.ds_config)  # errors name the file (and the parser's line)
        ds = deep_merge(ds, user)
    tb, mb, g = ds["train_batch_size"], ds["train_micro_batch_size_per_gpu"], ds["gradient_accumulation_steps"]
    if tb != mb * g * world_size:
        raise ConfigError(f"DeepSpeed config: train_batch_size={tb} != micro {mb} x accumulation {g} x world size "
                          f"{world_size}")
    return ds


def lr_lambda(opt: Any, total_steps: int):
    """Multiplier of the peak lr at optimizer step s: linear warmup, then linear/cosine decay."""
    warmup = opt.warmup_steps or int(round(opt.warmup_ratio * total_steps))
    floor = opt.min_lr_ratio

    def f(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if opt.schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        if opt.schedule == "cosine":
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
        return floor + (1 - floor) * (1 - progress)

    return f


def initialize(module: Any, cfg: Any, ds_config: dict[str, Any], total_steps: int, device: str):
    """``deepspeed.initialize`` with AdamW (no decay on biases / LayerNorm) and our schedule,
    unless the user's ds_config brings its own optimizer / scheduler."""
    import deepspeed
    import torch

    groups = param_groups(module.named_parameters(), cfg.optimizer.weight_decay)
    kwargs: dict[str, Any] = {"model": module, "config": ds_config, "model_parameters": groups}
    if "optimizer" not in ds_config:
        o = cfg.optimizer
        optimizer = torch.optim.AdamW(groups, lr=o.lr, betas=(o.beta1, o.beta2), eps=o.eps,
                                      fused=device.startswith("cuda"))
        kwargs["optimizer"] = optimizer
        if "scheduler" not in ds_config:
            kwargs["lr_scheduler"] = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(o, total_steps))
    engine, _, _, _ = deepspeed.initialize(**kwargs)
    return engine


def backward_global_mean(engine: Any, loss_sum: Any, global_masked: float) -> None:
    """Backward of one micro-batch's share of the global batch's mean token loss.

    The step's gradient must be d(sum of every masked token's loss in the global batch, all
    micro-batches and ranks) / (global masked count), as in OLMo-core: with whole-word and entity
    masking the masked count varies per micro-batch, and a mean of per-micro-batch means would
    weight tokens unequally. DeepSpeed 0.19 (runtime/engine.py ``backward``) divides each loss by
    ``gradient_accumulation_steps`` unless ``scale_wrt_gas=False``, and averages gradients over
    the data-parallel ranks (``gradient_average``, ZeRO 0-3): we skip the first and multiply by
    the data-parallel size to undo the second."""
    averaged = getattr(engine, "gradient_average", True)
    factor = (engine.dp_world_size if averaged else 1) / max(float(global_masked), 1.0)
    engine.backward(loss_sum * factor, scale_wrt_gas=False)


def describe_engine(engine: Any, precision: str, world_size: int) -> str:
    import deepspeed

    return (f"DeepSpeed {deepspeed.__version__} ZeRO stage {engine.zero_optimization_stage()}, {precision}, "
            f"world size {world_size}")


# ---------------------------------------------------------------- checkpoints

def latest_step(ckpt_dir: Path) -> int | None:
    """The step the ``latest`` pointer names, or None when there is no checkpoint yet."""
    p = ckpt_dir / "latest"
    if not p.is_file():
        return None
    tag = p.read_text(encoding="utf-8").strip()
    if not tag.startswith("step_") or not tag[5:].isdigit():
        raise ArtifactError(f"{p}: corrupt latest pointer {tag!r} (expected step_N)")
    return int(tag[5:])


def save_checkpoint(engine: Any, ckpt_dir: Path, step: int, client_state: dict[str, Any], keep_last: int,
                    rank: int) -> Path:
    """Write ``ckpt_dir/step_N`` via a temporary tag, list its files with sizes and sha256,
    move the ``latest`` pointer, prune to the last ``keep_last``. Collective: all ranks call it."""
    tag, tmp_tag = f"step_{step}", f".tmp-step_{step}"
    final, tmp = ckpt_dir / tag, ckpt_dir / tmp_tag
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
    barrier()
    engine.save_checkpoint(str(ckpt_dir), tag=tmp_tag, client_state=client_state, save_latest=False)
    barrier()
    if rank == 0:
        files = sorted(p for p in tmp.rglob("*") if p.is_file())
        listing = [{"path": str(p.relative_to(tmp)), "bytes": p.stat().st_size, "sha256": sha256_file(p)}
                   for p in files]
        atomic_write_text(tmp / CKPT_INFO, json.dumps({"step": step, "client_state": client_state,
                                                       "files": listing}, indent=1) + "\n")
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        atomic_write_text(ckpt_dir / "latest", tag + "\n")
        steps = sorted(int(p.name[5:]) for p in ckpt_dir.glob("step_*") if p.name[5:].isdigit())
        for old in steps[:-keep_last]:
            shutil.rmtree(ckpt_dir / f"step_{old}", ignore_errors=True)
    barrier()
    return final


def verify_checkpoint(folder: Path, check_hashes: bool = True) -> dict[str, Any]:
    """Check a checkpoint folder against its file listing; return its info. Raises ArtifactError."""
    info_path = folder / CKPT_INFO
    if not folder.is_dir():
        raise ArtifactError(f"checkpoint {folder} is missing (named by checkpoints/latest)")
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArtifactError(f"checkpoint {folder}: {CKPT_INFO} is missing (incomplete checkpoint)") from None
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{info_path}: invalid JSON at line {exc.lineno}: {exc.msg}") from None
    for row in info.get("files", []):
        p = folder / row["path"]
        if not p.is_file():
            raise ArtifactError(f"checkpoint {folder}: file {row['path']} is missing")
        if p.stat().st_size != row["bytes"]:
            raise ArtifactError(f"checkpoint {folder}: file {row['path']} has {p.stat().st_size} bytes, "
                                f"expected {row['bytes']} (corrupt or truncated)")
        if check_hashes and sha256_file(p) != row["sha256"]:
            raise ArtifactError(f"checkpoint {folder}: file {row['path']} does not match its sha256 (corrupt)")
    return info


def _safe_checkpoint_globals() -> list[Any]:
    """The non-tensor types DeepSpeed 0.19 writes into checkpoints (found by saving ZeRO 0-3 x
    fp32/bf16 checkpoints and listing ``torch.serialization.get_unsafe_globals_in_checkpoint``;
    fp16's dynamic scaler added). Allow-listed classes are rebuilt from plain state, never called
    with arbitrary arguments."""
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return [LossScaler, DynamicLossScaler, ZeroStageEnum, fragment_address]


def check_checkpoint_safe(folder: Path) -> None:
    """Load every ``*.pt`` of a checkpoint folder with ``torch.load(weights_only=True)`` and the
    DeepSpeed allow-list (storages memory-mapped, so this reads little); raise ArtifactError
    naming the first file that holds anything else. Called before DeepSpeed, which unpickles
    these files with ``weights_only=False``, touches them."""
    import pickle

    import torch

    allowed = _safe_checkpoint_globals()
    allowed_names = {f"{c.__module__}.{c.__qualname__}" for c in allowed}
    for path in sorted(folder.rglob("*.pt")):
        try:
            with torch.serialization.safe_globals(allowed):
                try:
                    torch.load(path, map_location="cpu", weights_only=True, mmap=True)
                except RuntimeError as exc:  # legacy (non-zip) format cannot be memory-mapped
                    if "mmap" not in str(exc):
                        raise
                    torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            try:
                unsafe = [g for g in torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
                          if g not in allowed_names]
            except Exception:
                unsafe = []
            what = f"it references {', '.join(unsafe[:3])}" if unsafe else "it is not a plain tensor checkpoint"
            raise ArtifactError(f"refusing to load checkpoint file {path}: {what}, which could run code when "
                                f"unpickled; resume with --trust-checkpoint (checkpoint.trust_checkpoint=true) only "
                                f"if you made this checkpoint yourself") from None
        except Exception as exc:
            raise ArtifactError(f"checkpoint file {path} cannot be read: {type(exc).__name__}: "
                                f"{str(exc).splitlines()[0] if str(exc) else ''}") from None


def load_checkpoint(engine: Any, ckpt_dir: Path, step: int) -> dict[str, Any]:
    """Load ``ckpt_dir/step_N`` into ``engine`` (weights, optimizer, scheduler); return the client state."""
    try:
        path, client_state = engine.load_checkpoint(str(ckpt_dir), tag=f"step_{step}")
    except Exception as exc:  # torch.load / DeepSpeed errors on a damaged checkpoint
        raise ArtifactError(f"checkpoint {ckpt_dir / f'step_{step}'} cannot be loaded: "
                            f"{type(exc).__name__}: {exc}") from None
    if path is None:
        raise ArtifactError(f"checkpoint {ckpt_dir / f'step_{step}'} cannot be loaded")
    return client_state or {}


def full_state_dict(engine: Any) -> dict[str, Any] | None:
    """The full fp32 weights of the wrapped HF model on rank 0 (None elsewhere), gathering the
    partitions under ZeRO-3. Collective: all ranks call it."""
    import torch
    import torch.distributed as dist

    module = engine.module
    rank = dist.get_rank() if dist.is_initialized() else 0
    if engine.zero_optimization_stage() == 3:
        import deepspeed

        out = {}
        keep = set(module.hf.state_dict().keys())  # persistent tensors only
        for name, p in module.hf.named_parameters():
            with deepspeed.zero.GatheredParameters([p], modifier_rank=None):
                if rank == 0:
                    out[name] = p.detach().to("cpu", torch.float32).clone()
        for name, b in module.hf.named_buffers():
            if rank == 0 and name in keep:
                out[name] = b.detach().cpu().clone()
        return out if rank == 0 else None
    if rank != 0:
        return None
    return {k: v.detach().to("cpu").float() if v.is_floating_point() else v.detach().cpu()
            for k, v in module.hf.state_dict().items()}


# ---------------------------------------------------------------- C++ extension build lock

def extension_build_root() -> Path:
    """Where torch builds JIT C++ extensions (DeepSpeed's CPU communication op on CPU): as
    ``torch.utils.cpp_extension._get_build_directory`` does, ``$TORCH_EXTENSIONS_DIR`` or
    torch's default root plus a ``py<ver>_<accelerator>`` folder."""
    import sys

    root = os.environ.get("TORCH_EXTENSIONS_DIR")
    if root:
        return Path(root)
    import torch
    from torch.utils.cpp_extension import get_default_build_root

    if torch.version.hip is not None:
        accel = f"rocm{torch.version.hip.replace('.', '')}"
    elif torch.version.cuda is not None:
        accel = f"cu{torch.version.cuda.replace('.', '')}"
    else:
        accel = "cpu"
    py = f"py{sys.version_info.major}{sys.version_info.minor}{getattr(sys, 'abiflags', '')}"
    return Path(get_default_build_root()) / f"{py}_{accel}"


def _processes_working_in(folder: Path) -> bool:
    """Whether a process on this machine has its working directory in ``folder`` (torch runs
    ninja and the compiler there while it builds)."""
    target = str(folder.resolve())
    for cwd in Path("/proc").glob("[0-9]*/cwd"):
        try:
            where = os.readlink(cwd)
        except OSError:
            continue
        if where == target or where.startswith(target + os.sep):
            return True
    return False


def check_extension_locks(root: Path | None = None, min_age_s: float = 10.0) -> None:
    """Raise one line naming a stale extension build lock: torch's ``FileBaton`` waits forever
    on ``ROOT/NAME/lock`` left behind by a killed build. A lock is stale when it is older than
    ``min_age_s`` and no process on this machine works in its build folder (a live build runs
    ninja there; a lock from a builder on another node sharing this folder cannot be seen)."""
    import time

    root = root or extension_build_root()
    if not root.is_dir():
        return
    for lock in sorted(root.glob("*/lock")):
        try:
            age = time.time() - lock.stat().st_mtime
        except FileNotFoundError:  # released meanwhile
            continue
        if age >= min_age_s and not _processes_working_in(lock.parent):
            raise ArtifactError(f"stale C++ extension build lock {lock} ({age / 60:.0f} min old, no build running "
                                f"on this machine): a build was killed; delete that file and re-run")


def full_grads(engine: Any) -> dict[str, Any] | None:
    """The full fp32 gradients of the wrapped HF model's parameters (ZeRO 0-3 partitions gathered)
    on rank 0, None elsewhere. Valid after the accumulation step's last backward pass and before
    ``engine.step()``. Collective: all ranks call it."""
    import torch
    import torch.distributed as dist
    from deepspeed.utils import safe_get_full_grad

    rank = dist.get_rank() if dist.is_initialized() else 0
    out = {}
    for name, p in engine.module.hf.named_parameters():
        g = safe_get_full_grad(p)
        if rank == 0 and g is not None:
            out[name] = g.detach().to("cpu", torch.float32).clone()
    return out if rank == 0 else None


def teardown(engine: Any) -> None:
    """Free what one training call holds so a later call in the same process starts clean.
    The process group stays up (cheap, reusable); DeepSpeed's engine objects are released."""
    import gc

    try:
        engine.destroy()
    except Exception:  # destroy() is best effort across DeepSpeed versions
        pass
    gc.collect()
