"""cmedbert: domain-adaptive pretraining for Chinese medical BERT models.

Stage packages live at the top level (``corpus``, ``tokenizer``, ``pretrain``, ``launch``,
``finetune``); this package holds what they share (config loading, artifacts and manifests,
the CLI) and the cross-stage commands (``demo``, ``compare``, ``publish``).
"""

__version__ = "0.1.0"
