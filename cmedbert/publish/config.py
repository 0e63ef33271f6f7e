"""The publish config: every option of ``cmedbert publish`` is a field here, set from a config
file and/or ``key=value`` overrides like every other subcommand."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from cmedbert.errors import CmedbertError
from cmedbert.publish.checks import check_repo_id

DEFAULT_SENTENCES = (
    "患者确诊2型糖尿病后需要长期服用二甲双[MASK]控制血糖。",
    "冠状动脉粥样硬化的典型症状是活动后胸[MASK]。",
    "孩子发烧超过38.5℃可以按10mg/kg服用布洛[MASK]。",
    "复查糖化血红蛋白HbA1c 6.5%，提示血[MASK]控制不理想。",
)


@dataclass
class PublishConfig:
    model_dir: str = field(metadata={"help": "Hugging Face model folder to publish (a pretrain run's RUN/model)"})
    repo_id: str = field(metadata={"help": "Hub repository, ORG/NAME"})
    private: bool = field(default=False, metadata={"help": "create the repository as private"})
    revision: str | None = field(default=None, metadata={"help": "branch to push to (created if missing); default main"})
    dry_run: bool = field(default=False, metadata={"help": "build and verify the upload folder, list it, no network"})
    results: list[str] = field(default_factory=list, metadata={
        "help": "finetune results.jsonl files; rows of this checkpoint go into the model card (mean over seeds)"})
    checkpoint_name: str | None = field(default=None, metadata={
        "help": "the checkpoint name used in results.jsonl (default: found via the finetune manifest, "
                "else the run folder's name)"})
    license: str = field(default="apache-2.0", metadata={"help": "license tag of the model card"})
    datasets: list[str] = field(default_factory=list, metadata={"help": "dataset ids for the card's `datasets` metadata"})
    sentences: list[str] = field(default_factory=lambda: list(DEFAULT_SENTENCES), metadata={
        "help": "sentences with [MASK] for the fill-mask check (source vs upload folder)"})
    top_k: int = field(default=5, metadata={"help": "fill-mask predictions compared per sentence"})

    def validate(self) -> None:
        check_repo_id(self.repo_id)
        if self.revision is not None and (not self.revision.strip() or re.search(r"\s|\.\.|^/|/$", self.revision)):
            raise CmedbertError(f"config key 'revision': {self.revision!r} is not a valid branch name")
        if self.top_k < 1:
            raise CmedbertError("config key 'top_k' must be at least 1")
