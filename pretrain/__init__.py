"""Pretrain stage: MLM with whole-word / entity masking on packed shards through DeepSpeed,
from scratch or continual, exactly resumable, measured (tokens/s, MFU)."""
