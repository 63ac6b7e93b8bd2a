"""A trained reward model as a GRPO reward: `rewards: [{model: <folder>, weight: 1.0}, ...]` in a recipe.

Two kinds of folders are read:

- LLaMA-Factory's `rm` stage output (recipes/ring-mini-rm.yaml, tiny-rm.yaml): a LoRA adapter (its base model
  named in adapter_config.json) or a full / merged model, plus `value_head.safetensors`. The score is the value
  head (one Linear) on the last hidden state at the sequence's last token, exactly as LLaMA-Factory trained it;
- a Hugging Face sequence-classification reward model (num_labels 1): the score is its logit.

Each completion is scored on its answer only, the text after `</think>`: the reasoning is not judged. A
completion that never closed its reasoning has no answer; `no_answer` says what it gets: "empty" (default: the
reward model scores an empty answer, which is what a reader of that completion sees), "skip" (None, "does not
apply": only the other rewards count for it), or a fixed number. The conversation is rendered with the reward model's own chat template, the prompt turns plus one assistant turn
holding the answer; when that template ends a turn with nothing (Ring's hub format), the eos LLaMA-Factory
appended in training is appended here too, so the score is read at the same token it was trained at.

The model is loaded when the recipe is built (a bad folder fails before training) and moved to the trainer's
device on the first call; scoring runs under no_grad in batches of `batch_size`, right-padded.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ring_trl.grpo.rewards.text import completion_text, final_answer
from ring_trl.model_paths import require_model_folder
from ring_trl.runtime import UsageError

VALUE_HEAD_FILE = "value_head.safetensors"
VALUE_HEAD_KEYS = ("v_head.summary.weight", "v_head.summary.bias")
Messages = list[dict[str, str]]


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UsageError(f"{path}: unreadable ({error})") from error
    if not isinstance(data, dict):
        raise UsageError(f"{path}: expected a JSON object")
    return data


def _load_value_head(folder: Path) -> Any:
    import torch
    from safetensors.torch import load_file

    tensors = load_file(str(folder / VALUE_HEAD_FILE))
    missing = [key for key in VALUE_HEAD_KEYS if key not in tensors]
    if missing:
        raise UsageError(
            f"{folder / VALUE_HEAD_FILE}: no {', '.join(missing)} (not a LLaMA-Factory value head)"
        )
    weight, bias = tensors[VALUE_HEAD_KEYS[0]], tensors[VALUE_HEAD_KEYS[1]]
    head = torch.nn.Linear(weight.shape[1], weight.shape[0], dtype=weight.dtype)
    head.load_state_dict({"weight": weight, "bias": bias})
    return head.eval()


class RewardModelScorer:
    """Loads a reward-model folder and scores conversations (each ending with the assistant turn to judge)."""

    def __init__(
        self, folder: str | Path, batch_size: int = 8, dtype: str = "auto", trust_remote_code: bool = True
    ) -> None:
        import torch
        from transformers import AutoTokenizer

        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise UsageError(
                f"reward model folder {folder} does not exist (train one: recipes/ring-mini-rm.yaml)"
            )
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise UsageError(f"reward model {folder}: batch_size must be an integer >= 1, got {batch_size!r}")
        self.batch_size = batch_size
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.folder), trust_remote_code=trust_remote_code)
        if not self.tokenizer.chat_template:
            raise UsageError(
                f"reward model {folder}: its tokenizer has no chat template to render prompts with"
            )
        torch_dtype = None if dtype == "auto" else getattr(torch, dtype, None)
        if dtype != "auto" and not isinstance(torch_dtype, torch.dtype):
            raise UsageError(f"reward model {folder}: unknown dtype {dtype!r} (auto, float32, bfloat16, ...)")
        self.value_head = None
        if (self.folder / VALUE_HEAD_FILE).is_file():
            self.model = self._load_causal_lm(torch_dtype, trust_remote_code)
            self.value_head = _load_value_head(self.folder)
        else:
            self.model = self._load_sequence_classifier(torch_dtype, trust_remote_code)
        self.model.eval().requires_grad_(False)
        self.pad_id = self.tokenizer.pad_token_id
        if self.pad_id is None:
            self.pad_id = self.tokenizer.eos_token_id
        self.append_eos = self.value_head is not None and self._template_leaves_turn_open()
        self.device: Any = None

    # -- loading --------------------------------------------------------------------------------------

    def _load_causal_lm(self, dtype: Any, trust_remote_code: bool) -> Any:
        from transformers import AutoModelForCausalLM

        adapter_config = self.folder / "adapter_config.json"
        if not adapter_config.is_file():
            require_model_folder(self.folder)
            return AutoModelForCausalLM.from_pretrained(
                str(self.folder), dtype=dtype or "auto", trust_remote_code=trust_remote_code
            )
        from peft import PeftModel

        base = _read_json(adapter_config).get("base_model_name_or_path")
        if not isinstance(base, str) or not base:
            raise UsageError(f"{adapter_config}: no base_model_name_or_path")
        base_dir = require_model_folder(base)
        model = AutoModelForCausalLM.from_pretrained(
            str(base_dir), dtype=dtype or "auto", trust_remote_code=trust_remote_code
        )
        return PeftModel.from_pretrained(model, str(self.folder)).merge_and_unload()

    def _load_sequence_classifier(self, dtype: Any, trust_remote_code: bool) -> Any:
        from transformers import AutoModelForSequenceClassification

        config = _read_json(require_model_folder(self.folder) / "config.json")
        architectures = config.get("architectures") or []
        if not any(str(a).endswith("ForSequenceClassification") for a in architectures):
            raise UsageError(
                f"reward model {self.folder}: neither a LLaMA-Factory reward model ({VALUE_HEAD_FILE} missing) "
                f"nor a sequence-classification model (architectures {architectures})"
            )
        model = AutoModelForSequenceClassification.from_pretrained(
            str(self.folder), dtype=dtype or "auto", trust_remote_code=trust_remote_code
        )
        if model.config.num_labels != 1:
            raise UsageError(
                f"reward model {self.folder}: num_labels is {model.config.num_labels}, expected 1"
            )
        return model

    def _template_leaves_turn_open(self) -> bool:
        """True when the chat template writes nothing after an assistant turn's content (Ring's hub format):
        LLaMA-Factory then trained the reward at an appended eos."""
        probe = "reward-probe-answer"
        text = self.tokenizer.apply_chat_template(
            [{"role": "user", "content": "q"}, {"role": "assistant", "content": probe}], tokenize=False
        )
        return text.endswith(probe)

    # -- scoring --------------------------------------------------------------------------------------

    def token_ids(self, conversation: Messages) -> list[int]:
        """What the reward model reads for one conversation (ending with the assistant turn to judge)."""
        encoded = self.tokenizer.apply_chat_template(conversation, tokenize=True, return_dict=True)
        ids = list(encoded["input_ids"])
        if self.append_eos:
            ids.append(self.tokenizer.eos_token_id)
        return ids

    def _to_device(self) -> None:
        import torch

        if self.device is not None:
            return
        self.device = (
            torch.device(f"cuda:{torch.cuda.current_device()}") if torch.cuda.is_available() else None
        )
        if self.device is not None:
            self.model.to(self.device)
            if self.value_head is not None:
                self.value_head.to(self.device)

    def score(self, conversations: Sequence[Messages]) -> list[float]:
        import torch

        self._to_device()
        scores: list[float] = []
        for start in range(0, len(conversations), self.batch_size):
            rows = [self.token_ids(c) for c in conversations[start : start + self.batch_size]]
            width = max(len(r) for r in rows)
            input_ids = torch.tensor([r + [self.pad_id] * (width - len(r)) for r in rows])
            mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
            last = torch.tensor([len(r) - 1 for r in rows])
            if self.device is not None:
                input_ids, mask, last = input_ids.to(self.device), mask.to(self.device), last.to(self.device)
            with torch.no_grad():
                scores += self._batch_scores(input_ids, mask, last).float().cpu().tolist()
        return scores

    def _batch_scores(self, input_ids: Any, mask: Any, last: Any) -> Any:
        import torch

        rows = torch.arange(input_ids.size(0), device=input_ids.device)
        if self.value_head is None:  # sequence classifier: it picks the last non-pad token itself
            return self.model(input_ids=input_ids, attention_mask=mask).logits[:, 0]
        output = self.model(
            input_ids=input_ids, attention_mask=mask, output_hidden_states=True, logits_to_keep=1
        )
        hidden = output.hidden_states[-1][rows, last]
        return self.value_head(hidden.to(self.value_head.weight.dtype)).squeeze(-1)


NO_ANSWER_MODES = ("empty", "skip")


def _check_no_answer(folder: str | Path, value: Any) -> None:
    if isinstance(value, bool) or not (value in NO_ANSWER_MODES or isinstance(value, (int, float))):
        raise UsageError(f"reward model {folder}: no_answer must be empty, skip or a number, got {value!r}")


class RewardModelReward:
    """The TRL reward function around a RewardModelScorer: scores the answer after `</think>`."""

    def __init__(self, scorer: RewardModelScorer, no_answer: str | float = "empty") -> None:
        _check_no_answer(scorer.folder, no_answer)
        self.scorer = scorer
        self.no_answer = no_answer
        self.__name__ = f"rm_{scorer.folder.name}"

    def __call__(self, prompts: list, completions: list, **_: Any) -> list[float | None]:
        conversations, positions = [], []
        fixed = None if self.no_answer in NO_ANSWER_MODES else float(self.no_answer)
        values: list[float | None] = [fixed] * len(completions)
        for index, (prompt, completion) in enumerate(zip(prompts, completions, strict=True)):
            answer = final_answer(completion_text(completion))
            if answer is None:
                if self.no_answer != "empty":
                    continue
                answer = ""
            turns = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
            conversations.append([*turns, {"role": "assistant", "content": answer}])
            positions.append(index)
        for index, value in zip(positions, self.scorer.score(conversations), strict=True):
            values[index] = value
        return values


def load_reward_model(folder: str | Path, **options: Any) -> RewardModelReward:
    """The reward for a recipe entry `{model: folder, kwargs: {...}}`; options: batch_size, dtype,
    trust_remote_code, no_answer. A UsageError names the folder and what is wrong with it."""
    known = {"batch_size", "dtype", "trust_remote_code", "no_answer"}
    unknown = set(options) - known
    if unknown:
        raise UsageError(f"reward model {folder}: unknown kwargs {sorted(unknown)}; allowed {sorted(known)}")
    no_answer = options.pop("no_answer", "empty")
    _check_no_answer(folder, no_answer)  # before minutes of loading
    return RewardModelReward(RewardModelScorer(folder, **options), no_answer=no_answer)
