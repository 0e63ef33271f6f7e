"""Run one pretraining step and save the reduced gradients (before the optimizer update).

    python grad_probe.py CONFIG.json RUN_DIR GRADS.pt        # one rank
    torchrun --nproc_per_node 2 grad_probe.py CONFIG.json RUN_DIR GRADS.pt

Used by test_pretrain_global_loss.py; the same ``main`` the CLI runs, with one extra callback.
"""

import json
import logging
import sys

import torch

from cmedbert.config import load_config
from cmedbert.pretrain import engine as eng
from cmedbert.pretrain.config import PretrainConfig
from cmedbert.pretrain.train import Callback, main


class SaveGrads(Callback):
    def __init__(self, path: str):
        self.path, self.saved = path, False

    def on_gradients_ready(self, trainer) -> None:
        if self.saved:
            return
        grads = eng.full_grads(trainer.engine)  # collective
        if grads is not None:
            torch.save(grads, self.path)
        self.saved = True


if __name__ == "__main__":
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.INFO)
    cfg_path, run_dir, grads_path = sys.argv[1:4]
    cfg = load_config(PretrainConfig, None, [], base=json.loads(open(cfg_path).read()))
    main(cfg, run_dir, callbacks=[SaveGrads(grads_path)])
