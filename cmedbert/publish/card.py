"""Publish, part 2: the model card, built with huggingface_hub's ``ModelCardData`` (YAML metadata
with the CBLUE ``model-index``) and ``ModelCard.from_template`` on :data:`TEMPLATE`; the sections
that depend on the run (results, training data, tokenizer, training config) are rendered here.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from cmedbert.errors import CmedbertError
from cmedbert.finetune import results
from cmedbert.finetune.tasks import TASKS
from cmedbert.publish.checks import REPO_ID_RE, _read_json, input_manifests
from cmedbert.publish.config import PublishConfig

# CBLUE task -> Hugging Face task type for the model-index
TASK_TYPES = {
    "KUAKE-QIC": "text-classification", "KUAKE-QQR": "text-classification",
    "KUAKE-QTR": "text-classification", "CHIP-CTC": "text-classification",
    "CHIP-STS": "text-classification", "CMeEE": "token-classification",
    "CMeEE-V2": "token-classification", "CMeIE": "token-classification",
    "CHIP-CDN": "text-classification", "CHIP-CDEE": "token-classification",
}




def _scrub(obj: Any) -> Any:
    """Local absolute paths reduced to their last part: a public card should not show a home folder."""
    if isinstance(obj, dict):
        return {k: _scrub(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_scrub(v) for v in obj]
    if isinstance(obj, str) and (obj.startswith(("/", "~")) or re.match(r"^[A-Za-z]:\\", obj)) and len(obj) > 1:
        return Path(obj).name or obj
    return obj


def _param_count(model_dir: Path, weights: list[str]) -> int | None:
    try:
        from safetensors import safe_open

        total = 0
        for w in weights:
            if not w.endswith(".safetensors"):
                continue
            with safe_open(str(model_dir / w), framework="pt") as fh:
                for k in fh.keys():
                    total += math.prod(fh.get_slice(k).get_shape())
        return total
    except Exception:  # a count is a nicety; verification below is what guards the weights
        return None


def _fmt_int(n: Any) -> str:
    return f"{n:,}" if isinstance(n, int) else str(n)


def card_metadata(cfg: PublishConfig, summary: list[dict[str, Any]], extension: dict[str, Any] | None,
                  manifest: dict[str, Any] | None, datasets: list[str]):
    from huggingface_hub import EvalResult, ModelCardData

    name = cfg.repo_id.split("/", 1)[1]
    from cmedbert.finetune.provenance import benchmark_label

    evals = [EvalResult(task_type=TASK_TYPES.get(s["task"], "other"),
                        dataset_type="cblue" if s.get("official") else "cblue-format",
                        dataset_name=benchmark_label(s["task"], bool(s.get("official"))),
                        dataset_config=s["task"], dataset_split=s["split"],
                        metric_type=s["metric"], metric_value=round(s["mean"], 4),
                        metric_name=f"{s['metric']} (mean of {s['n']} seeds)",
                        task_name=s["task"])
             for s in summary]
    tags = ["cmedbert", "bert", "chinese", "medical", "fill-mask", "domain-adaptive-pretraining"]
    pre = (manifest or {}).get("pretrain") or {}
    init = pre.get("init") or ((manifest or {}).get("config") or {}).get("init")
    if init:
        tags.append(f"init-{init}")
    if extension:
        tags.append("vocab-extension")
    base = None
    init_from = pre.get("init_from") or (extension or {}).get("base")
    if isinstance(init_from, str) and REPO_ID_RE.match(init_from) and not Path(init_from).exists():
        base = init_from  # a Hub id, not a local folder
    return ModelCardData(language="zh", license=cfg.license, library_name="transformers", pipeline_tag="fill-mask",
                         tags=tags, datasets=datasets or None, base_model=base,
                         metrics=sorted({s["metric"] for s in summary}) or None,
                         model_name=name, eval_results=evals or None)


def _training_data_section(manifest: dict[str, Any] | None, inputs: list[dict[str, Any]]) -> list[str]:
    lines = ["## Training data", ""]
    if not manifest:
        return lines + ["No cmedbert run manifest was found next to this model folder, so the training data "
                        "cannot be summarized here.", ""]
    counts = manifest.get("counts") or {}
    if counts:
        lines.append("Pretraining run: " + ", ".join(f"{k} = {_fmt_int(v)}" for k, v in counts.items()
                                                     if isinstance(v, (int, float, str))) + ".")
        lines.append("")
    for m in inputs:
        stage = m.get("stage", "?")
        c = m.get("counts") or {}
        head = f"- **{stage}** input `{_scrub(m['path'])}` (config hash `{m.get('config_hash', '?')}`)"
        details = []
        if stage == "corpus":
            for k in ("records_in", "records_out", "bytes_out"):
                if k in c:
                    details.append(f"{k} {_fmt_int(c[k])}")
            for k in ("dropped", "pii", "decontaminated"):
                if isinstance(c.get(k), dict) and c[k]:
                    details.append(f"{k}: " + ", ".join(f"{a} {_fmt_int(b)}" for a, b in c[k].items()))
            if isinstance(c.get("per_source"), dict):
                details.append("sources: " + ", ".join(f"{a}" for a in c["per_source"]))
        elif stage == "packed":
            pk = m.get("packed") or {}
            for k in ("seq_len", "vocab_size"):
                if k in pk:
                    details.append(f"{k} {pk[k]}")
            splits = pk.get("splits")
            if isinstance(splits, dict):
                details.append("splits: " + ", ".join(
                    f"{s} {_fmt_int(v.get('n_seq', v) if isinstance(v, dict) else v)} sequences" for s, v in splits.items()))
        else:
            details += [f"{k} {_fmt_int(v)}" for k, v in list(c.items())[:6] if isinstance(v, (int, float, str))]
        lines.append(head + (": " + "; ".join(details) if details else ""))
    lines.append("")
    return lines


def _tokenizer_section(model_dir: Path, hf_config: dict[str, Any], extension: dict[str, Any] | None) -> list[str]:
    lines = ["## Tokenizer and vocabulary", ""]
    tc = _read_json(model_dir / "tokenizer_config.json") if (model_dir / "tokenizer_config.json").is_file() else None
    lines.append(f"Vocabulary size {hf_config.get('vocab_size', '?')}; tokenizer class "
                 f"`{(tc or {}).get('tokenizer_class', '?')}`, lowercase={(tc or {}).get('do_lower_case', '?')}.")
    if extension:
        toks = extension.get("tokens") or []
        origins: dict[str, int] = {}
        for t in toks:
            if isinstance(t, dict):
                origins[str(t.get("origin", "?"))] = origins.get(str(t.get("origin", "?")), 0) + 1
        sample = "、".join(str(t.get("token")) for t in toks[:30] if isinstance(t, dict))
        lines += ["", f"The vocabulary was **extended** from base `{_scrub(extension.get('base', '?'))}` "
                      f"({_fmt_int(extension.get('base_vocab_size', '?'))} tokens, mode `{extension.get('mode', '?')}`) "
                      f"with {len(toks)} new tokens"
                      + (" (" + ", ".join(f"{k}: {v}" for k, v in sorted(origins.items())) + ")" if origins else "")
                      + ". New embeddings were initialized from the mean of the base pieces of each token "
                        "and then trained. The full list is in `extension.json`.",
                  "", f"First new tokens: {sample}" if sample else ""]
    else:
        lines += ["", "No vocabulary extension (no `extension.json` in the model folder)."]
    return lines + [""]


def _training_config_section(hf_config: dict[str, Any], manifest: dict[str, Any] | None, cfg_hash: str,
                             n_params: int | None) -> list[str]:
    lines = ["## Training configuration", ""]
    arch = ", ".join(f"{k} {hf_config[k]}" for k in ("model_type", "num_hidden_layers", "hidden_size",
                                                      "num_attention_heads", "intermediate_size",
                                                      "max_position_embeddings") if k in hf_config)
    lines.append(f"Architecture: {arch}" + (f"; {_fmt_int(n_params)} parameters." if n_params else "."))
    lines.append(f"Config hash: `{cfg_hash}`.")
    if manifest:
        pre = manifest.get("pretrain") or {}
        bits = []
        if pre.get("init"):
            bits.append(f"init `{pre['init']}`" + (f" from `{_scrub(pre.get('init_from'))}`" if pre.get("init_from") else ""))
        if pre.get("world_size"):
            bits.append(f"world size {pre['world_size']}")
        if isinstance(pre.get("engine"), (str, dict)):
            bits.append(f"engine `{json.dumps(pre['engine'], ensure_ascii=False) if isinstance(pre['engine'], dict) else pre['engine']}`")
        if bits:
            lines.append("Run: " + "; ".join(bits) + ".")
        fe = pre.get("final_eval")
        if isinstance(fe, dict) and fe:
            lines.append("Final validation: " + ", ".join(f"{k} {round(v, 4) if isinstance(v, float) else v}"
                                                          for k, v in fe.items() if isinstance(v, (int, float))) + ".")
        if manifest.get("git_commit"):
            lines.append(f"cmedbert {manifest.get('cmedbert_version', '?')}, commit `{manifest['git_commit']}`.")
        if manifest.get("config"):
            lines += ["", "<details><summary>Full pretraining config</summary>", "", "```json",
                      json.dumps(_scrub(manifest["config"]), indent=2, ensure_ascii=False), "```", "", "</details>"]
    return lines + [""]


def _results_section(summary: list[dict[str, Any]]) -> list[str]:
    official = bool(summary) and all(s.get("official") for s in summary)
    lines = ["## Evaluation (CBLUE)" if official else "## Evaluation", ""]
    if not summary:
        return lines + ["No fine-tuning results were given (`results=[...]`).", ""]
    single = all(s["n"] == 1 for s in summary)
    lines += [f"Fine-tuned with `cmedbert finetune`; "
              + ("one seed (n=1), so no spread over seeds is given." if single else
                 "mean ± standard deviation over seeds (n = number of seeds).")
              + " Data: \"official CBLUE\" only where the task files are byte-identical to the CBLUE 1.0 release; "
                "otherwise CBLUE-format task data.", "",
              "| task | data | split | metric | mean | std | n | finetune config |", "|---|---|---|---|---|---|---|---|"]
    for s in summary:
        std = "–" if s["n"] == 1 else f"{s['std']:.4f}"
        data = "official CBLUE" if s.get("official") else "CBLUE-format, not official"
        lines.append(f"| {s['task']} | {data} | {s['split']} | {s['metric']} | {s['mean']:.4f} | {std} | "
                     f"{s['n']} | {', '.join(s['config_hashes']) or '-'} |")
    per_task = {s["task"]: [s["mean"]] for s in summary if s["split"] == "dev" and s["task"] in TASKS
                and s["metric"] == TASKS[s["task"]].metric}
    if len(per_task) > 1:
        label = "CBLUE average" if all(s.get("official") for s in summary) else "Task average"
        lines += ["", f"{label} over {len(per_task)} tasks (primary metric of each, dev): "
                      f"{results.cblue_average(per_task):.4f}."]
    return lines + [""]


TEMPLATE = """---
{{ card_data }}
---

# {{ model_name }}

A Chinese medical BERT (masked language model) built with the cmedbert domain-adaptive pretraining pipeline. \
It is a base encoder: fine-tune it for classification, NER or matching; on its own it only fills in masked characters.

> **Not for clinical decisions.** This model must not be used to diagnose, treat or give medical advice to anyone. \
Its outputs can be wrong, outdated or biased. **本模型不能用于临床诊断、治疗或任何医疗决策。**

## How to use

```python
from transformers import pipeline

fill = pipeline("fill-mask", model="{{ repo_id }}")
fill("患者确诊2型糖尿病后需要长期服用二甲双[MASK]控制血糖。")
```

{{ results_section }}
{{ training_data_section }}
{{ tokenizer_section }}
{{ training_config_section }}
## Intended use

- Research on Chinese biomedical NLP; a starting point for fine-tuning on tasks such as CBLUE \
(query intent, entity recognition, relation extraction, text matching).
- Comparing pretraining recipes (from scratch vs continual, with or without vocabulary extension).

## Limitations and risks

- Trained on a limited corpus of online consultations, QA and textbook-style text; it reflects their \
errors, biases and the time they were written. It has not been validated clinically.
- Masked-LM predictions are not facts: it can complete a sentence with a wrong drug, dose or diagnosis.
- Personal identifiers were scrubbed from the corpus with patterns; scrubbing is not perfect.
- The training texts come from sources with their own licenses (see the training data section); \
check them before commercial use.
- Evaluation covers the tasks listed above only, on their dev sets{{ evaluation_note }}

## Not for clinical decisions

Do not use this model, or anything fine-tuned from it, to make or support decisions about the \
diagnosis, treatment or care of patients. 本模型仅供研究使用，不能替代医生，不能用于临床决策。
"""


def build_card(cfg: PublishConfig, model_dir: Path, parts: dict[str, list[str]], summary: list[dict[str, Any]],
               manifest: dict[str, Any] | None, cfg_hash: str) -> str:
    """README.md text: ModelCardData metadata + :data:`TEMPLATE`; checked to parse back."""
    from huggingface_hub import ModelCard

    hf_config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    extension = _read_json(model_dir / "extension.json") if (model_dir / "extension.json").is_file() else None
    inputs = input_manifests(manifest)
    # default datasets: the corpus sources the run was trained on, when its manifests say so
    datasets = list(cfg.datasets) or sorted({str(k) for m in inputs if m.get("stage") == "corpus"
                                             for k in ((m.get("counts") or {}).get("per_source") or {})})
    data = card_metadata(cfg, summary, extension, manifest, datasets)
    n_params = _param_count(model_dir, parts["weights"])
    try:
        card = ModelCard.from_template(
            data, template_str=TEMPLATE, model_name=cfg.repo_id.split("/", 1)[1], repo_id=cfg.repo_id,
            results_section="\n".join(_results_section(summary)),
            training_data_section="\n".join(_training_data_section(manifest, inputs)),
            tokenizer_section="\n".join(_tokenizer_section(model_dir, hf_config, extension)),
            training_config_section="\n".join(_training_config_section(hf_config, manifest, cfg_hash, n_params)),
            evaluation_note="." if all(s.get("official") for s in summary) else
            "; tasks marked 'not official' were scored on CBLUE-format data, not on the official CBLUE files.")
    except ValueError as exc:  # our own metadata failed to parse: a bug, but say what
        raise CmedbertError(f"the generated model card does not parse: {exc}") from None
    if summary and not card.data.eval_results:
        raise CmedbertError("the generated model card lost its model-index")
    return str(card)
