#!/usr/bin/env bash
# GPU smoke check: one CUDA GPU, under 8 minutes, nothing downloaded.
#
#   bash .ci/setup                      # after installing a CUDA build of torch (README: "GPU")
#   bash benchmarks/gpu_smoke.sh [WORKDIR]
#
# 1. builds a tiny medical corpus and an in-domain WordPiece vocab from the built-in demo data
#    (cmedbert/demo_data) and packs it into 128-token sequences;
# 2. pretrains the `base` preset (BERT-base shape) for $SMOKE_STEPS steps through DeepSpeed ZeRO-2,
#    once in bf16 and once in fp16 (dynamic loss scaling); prints tokens/s and MFU from each run's
#    metrics.jsonl (steady-state rows: the first logged window is left out);
# 3. fine-tunes the bf16 checkpoint on the demo KUAKE-QIC-shaped task on the GPU (device=cuda) and
#    prints its training samples/s;
# 4. ends with one line: ok=1 bf16_tok_s=… fp16_tok_s=… mfu=… finetune_samples_s=…
#    (ok=0 and a non-zero exit status on any failure).
#
# Environment:
#   PYTHON                 interpreter with cmedbert installed (default: .venv/bin/python, else python)
#   SMOKE_STEPS            pretraining steps per run (default 300)
#   SMOKE_DEVICE=cpu       the CPU path, for machines without a GPU (CI): tiny model instead of
#                          `base`, a few steps, and the second run in fp32 (DeepSpeed has no fp16 on
#                          CPU); the last line then says fp16_tok_s=NA and fp32_tok_s=…
#   SMOKE_PEAK_TFLOPS      peak TFLOP/s of the GPU for MFU when its name is not in the table
#                          (A100/H100/H200 are known)
set -uo pipefail

cd "$(dirname "$0")/.."
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python; fi
fi
DEVICE=${SMOKE_DEVICE:-cuda}
STEPS=${SMOKE_STEPS:-300}
WORK=${1:-$(mktemp -d -t cmedbert-gpu-smoke-XXXXXX)}
mkdir -p "$WORK"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=disabled TOKENIZERS_PARALLELISM=false
T0=$(date +%s)

fail() {
  echo "gpu_smoke: FAILED: $*" >&2
  echo "ok=0 bf16_tok_s=NA fp16_tok_s=NA mfu=NA finetune_samples_s=NA failed=$(printf %s "$1" | tr ' ' '_')"
  exit 1
}
step() { echo "gpu_smoke: [$(( $(date +%s) - T0 )) s] $*" >&2; }
cm() { "$PY" -m cmedbert "$@"; }

if [ "$DEVICE" = cuda ]; then
  "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" \
    || fail "no_cuda" "torch sees no CUDA GPU (install a CUDA build of torch, see README; SMOKE_DEVICE=cpu for the CPU path)"
  "$PY" -c "import torch; print('gpu_smoke: GPU', torch.cuda.get_device_name(), 'torch', torch.__version__, 'cuda', torch.version.cuda)" >&2
  MODEL='{"preset": "base", "max_position_embeddings": 512}'
  BATCH='{"global_batch": 64, "micro_batch": 64}'
  SECOND=fp16
else
  STEPS=${SMOKE_STEPS:-6}
  MODEL='{"preset": "tiny", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 256, "max_position_embeddings": 128}'
  BATCH='{"global_batch": 8, "micro_batch": 8}'
  SECOND=fp32
fi
step "work folder $WORK, device $DEVICE, $STEPS pretraining steps per run"

# 1. corpus, vocab, packed data from the built-in demo data
"$PY" - "$WORK/corpus.json" <<'EOF' || fail "corpus_config" "cannot write the demo corpus config"
import json, sys
from cmedbert.demo import medical_corpus_config
json.dump(medical_corpus_config(), open(sys.argv[1], "w", encoding="utf-8"), ensure_ascii=False)
EOF
cm corpus build "$WORK/corpus.json" --out "$WORK/corpus" >&2 || fail "corpus" "cmedbert corpus build failed"
cm tokenizer train corpus="$WORK/corpus" vocab_size=4096 min_frequency=1 --out "$WORK/tokenizer" >&2 \
  || fail "tokenizer" "cmedbert tokenizer train failed"
cm tokenizer pack corpus="$WORK/corpus" tokenizer="$WORK/tokenizer" seq_len=128 workers=1 valid_fraction=0.05 \
  --out "$WORK/packed" >&2 || fail "pack" "cmedbert tokenizer pack failed"
step "corpus, vocab and packed data ready"

# 2. pretraining, ZeRO-2, bf16 then fp16 (CPU path: fp32)
pretrain() {  # pretrain PRECISION
  local prec=$1 cfg="$WORK/pretrain-$1.json"
  "$PY" - "$cfg" "$WORK" "$prec" "$STEPS" "$MODEL" "$BATCH" "${SMOKE_PEAK_TFLOPS:-}" <<'EOF' || return 1
import json, sys
cfg_path, work, prec, steps, model, batch, peak = sys.argv[1:]
cfg = {"tokenizer": f"{work}/tokenizer", "data": {"path": f"{work}/packed"}, "init": "scratch", "seed": 0,
       "model": json.loads(model), "batch": json.loads(batch),
       "optimizer": {"lr": 2e-4, "warmup_ratio": 0.05}, "train": {"max_steps": int(steps)},
       "engine": {"zero_stage": 2, "precision": prec},
       "checkpoint": {"every": 0, "keep_last": 1}, "eval": {"every": 0, "max_sequences": 64},
       "metrics": {"log_every": max(1, int(steps) // 10), "progress_bar": False, "wandb_mode": "disabled"}}
if peak:
    cfg["metrics"]["peak_tflops"] = float(peak)
json.dump(cfg, open(cfg_path, "w"))
EOF
  cm pretrain "$cfg" --out "$WORK/pretrain-$prec" >&2
}
summary() {  # summary RUN_DIR -> "TOK_S MFU" (steady-state rows: the first window is warm-up)
  "$PY" - "$1/metrics.jsonl" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
rows = [r for r in rows if r.get("split", "train") == "train" and r.get("tok_s")]
if not rows:
    sys.exit("no training rows in metrics.jsonl")
steady = rows[1:] or rows
tok_s = sum(r["tok_s"] for r in steady) / len(steady)
mfus = [r["mfu"] for r in steady if r.get("mfu") is not None]
print(f"{tok_s:.0f} {sum(mfus) / len(mfus):.4f}" if mfus else f"{tok_s:.0f} NA")
EOF
}
pretrain bf16 || fail "pretrain_bf16" "bf16 pretraining failed"
S=$(summary "$WORK/pretrain-bf16") || fail "metrics_bf16" "no metrics from the bf16 run"
read -r BF16_TOK BF16_MFU <<< "$S"
step "bf16: $BF16_TOK tokens/s, MFU $BF16_MFU"
pretrain "$SECOND" || fail "pretrain_$SECOND" "$SECOND pretraining failed"
S=$(summary "$WORK/pretrain-$SECOND") || fail "metrics_$SECOND" "no metrics from the $SECOND run"
read -r SECOND_TOK SECOND_MFU <<< "$S"
step "$SECOND: $SECOND_TOK tokens/s, MFU $SECOND_MFU"

# 3. fine-tuning one task on the device, from the bf16 checkpoint
cm finetune "models={smoke='$WORK/pretrain-bf16/model'}" "tasks=['KUAKE-QIC']" "seeds=[0]" \
  "data_dir='cmedbert/demo_data/cblue'" hp.epochs=3 hp.batch_size=32 hp.lr=1e-4 hp.patience=0 \
  "device=$DEVICE" --out "$WORK/finetune" >&2 || fail "finetune" "cmedbert finetune failed"
FT_S=$("$PY" - "$WORK/finetune" "$DEVICE" <<'EOF'
import json, pathlib, sys
folder, device = pathlib.Path(sys.argv[1]), sys.argv[2]
scores = json.loads(next(folder.rglob("dev_scores.json")).read_text())
if scores.get("device") != device:
    sys.exit(f"fine-tuning ran on {scores.get('device')}, not {device}")
log = [json.loads(l) for l in next(folder.rglob("train_log.jsonl")).read_text().splitlines()]
print(f"{[r for r in log if 'train_samples_s' in r][-1]['train_samples_s']:.0f}")
EOF
) || fail "finetune_metrics" "no fine-tuning throughput (or not on $DEVICE)"
step "fine-tuning: $FT_S samples/s on $DEVICE; total $(( $(date +%s) - T0 )) s"

if [ "$DEVICE" = cuda ]; then
  echo "ok=1 bf16_tok_s=$BF16_TOK fp16_tok_s=$SECOND_TOK mfu=$BF16_MFU finetune_samples_s=$FT_S"
else
  echo "ok=1 bf16_tok_s=$BF16_TOK fp16_tok_s=NA fp32_tok_s=$SECOND_TOK mfu=$BF16_MFU finetune_samples_s=$FT_S device=cpu"
fi
