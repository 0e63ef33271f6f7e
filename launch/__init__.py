"""Launch stage: turn a launch config + a pretrain config into per-node commands
(deepspeed launcher, torchrun, SLURM), check them, print them (dry run) or run them."""
