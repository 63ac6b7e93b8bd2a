"""Find and load what `ring_trl.chat` talks to: a model folder, or a LoRA adapter folder on top of its base model.

Every problem with the folder is a one-line UsageError (ring_trl.model_paths wording) raised before any weights
are read: a missing folder, no config.json, no tokenizer files, no chat template.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ring_trl.model_paths import missing_tokenizer_message, require_model_folder
from ring_trl.runtime import UsageError

ADAPTER_CONFIG = "adapter_config.json"
CHAT_TEMPLATE_HINT = (
    "prepare the folder with a chat template: "
    '`make prepare-model MODEL=<checkpoint> ARGS="--chat-format ring_mini_2_0"` (or ring_v2_sft)'
)


@dataclass(frozen=True)
class ModelSource:
    """The full model folder, and the adapter to put on top of it (a LoRA output folder), if any."""

    model_dir: Path
    adapter_dir: Path | None = None


def _adapter_base(adapter_dir: Path) -> str:
    path = adapter_dir / ADAPTER_CONFIG
    try:
        base = json.loads(path.read_text(encoding="utf-8")).get("base_model_name_or_path")
    except (OSError, ValueError) as error:
        raise UsageError(f"{path}: unreadable ({error})") from error
    if not base:
        raise UsageError(f"{path}: no base_model_name_or_path, so the base model is unknown")
    return str(base)


def resolve_source(value: str) -> ModelSource:
    """`value` as a model folder, or as an adapter folder whose base model folder exists."""
    path = Path(value).expanduser()
    if (path / ADAPTER_CONFIG).is_file() and not (path / "config.json").is_file():
        base = _adapter_base(path)
        source = ModelSource(require_model_folder(base), adapter_dir=path)
        label = base
    else:
        source = ModelSource(require_model_folder(value))
        label = value
    problem = missing_tokenizer_message(label, source.model_dir)
    if problem:
        raise UsageError(problem)
    return source


def load_tokenizer(source: ModelSource) -> Any:
    """The base folder's tokenizer and chat template: the format the model was trained on."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(source.model_dir), trust_remote_code=True)
    if not tokenizer.chat_template:
        raise UsageError(f"{source.model_dir} has no chat template; {CHAT_TEMPLATE_HINT}")
    return tokenizer


def load_model(source: ModelSource, device: str) -> Any:
    """Ring in bf16 on a GPU (spread over all visible GPUs), fp32 on a CPU; eval mode."""
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # "Loading weights: 100%|...", one bar per shard
    on_gpu = device == "cuda"
    model = AutoModelForCausalLM.from_pretrained(
        str(source.model_dir),
        trust_remote_code=True,
        dtype=torch.bfloat16 if on_gpu else torch.float32,
        device_map="auto" if on_gpu else None,
    )
    if source.adapter_dir is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(source.adapter_dir))
    return model.eval()
