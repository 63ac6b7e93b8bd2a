"""Preference-pair readers: each turns one raw row of a known preference layout into a `Pair`.

As with the SFT readers (data_prep/formats.py, whose helpers these share), a reader never judges quality: it
says which prompt the two responses answer and what each response says, or rejects a row whose structure is
broken (a missing side, two sides that continue different conversations, a prompt LLaMA-Factory would skip).
Layouts:

- `ultrafeedback`: UltraFeedback-binarized, `chosen`/`rejected` message lists that end with the response,
  `score_chosen`/`score_rejected`, `prompt`, `prompt_id`;
- `hh`: Anthropic HH-RLHF, `chosen`/`rejected` transcripts of "\\n\\nHuman: " / "\\n\\nAssistant: " turns; the
  turns both transcripts share are the prompt, their last assistant turns the responses;
- `pairs`: generic `prompt` (a string or messages) with `chosen`/`rejected` as strings, one message, or
  message lists (optional `system`, `score_chosen`, `score_rejected`, `id`, and `rejected_unfinished: true`
  for a rejected generation cut off inside its reasoning, as --from-samples writes);
- `llamafactory`: LLaMA-Factory's own ranking layouts, alpaca (`instruction`, `input`, `history`, `system`,
  `chosen`/`rejected` strings) and sharegpt (`conversations` or `messages`, `chosen`/`rejected` messages).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from data_prep.errors import MALFORMED_ROW, MISSING_FIELD, RowRejected, UsageError
from data_prep.formats import _field, _optional_str, _raw_id, _turns, _user
from data_prep.reasoning import drop_reasoning

Turns = list[dict[str, str]]


@dataclass
class Pair:
    """What a reader extracted from one row, before any filter."""

    prompt: Turns  # an optional system turn, then user/assistant turns ending with a user turn
    chosen: str
    rejected: str
    score_chosen: float | None = None
    score_rejected: float | None = None
    raw_id: str | None = None
    rejected_unfinished: bool = False  # the rejected side is a generation cut off inside its reasoning


PairReader = Callable[[dict[str, Any]], Pair]


# --- shared helpers -------------------------------------------------------------------------------------


def _messages(value: list[Any], where: str) -> Turns:
    """A message list with role/content keys (OpenAI) or from/value keys (ShareGPT)."""
    first = value[0] if value else None
    if isinstance(first, dict) and "from" in first and "role" not in first:
        return _turns(value, "from", "value", where)
    return _turns(value, "role", "content", where)


def _score(row: dict[str, Any], key: str) -> float | None:
    value = row.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise RowRejected(MALFORMED_ROW, f"field {key!r} should be a finite number, got {value!r}")
    return float(value)


def _side(row: dict[str, Any], key: str) -> tuple[Turns, str]:
    """(conversation before the response, response text) of a `chosen`/`rejected` value: a string is the
    response alone; a message is one assistant turn; a message list ends with the response."""
    if key not in row or row[key] is None:
        raise RowRejected(MISSING_FIELD, f"required field {key!r} is missing")
    value = row[key]
    if isinstance(value, str):
        return [], value
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list) or not value:
        raise RowRejected(
            MALFORMED_ROW, f"field {key!r} should be a string, a message or a non-empty message list"
        )
    turns = _messages(value, key)
    if turns[-1]["role"] != "assistant":
        raise RowRejected(MALFORMED_ROW, f"{key} does not end with an assistant turn")
    return turns[:-1], turns[-1]["content"]


def _checked_prompt(turns: Turns, where: str) -> Turns:
    """The prompt as LLaMA-Factory's ranking converter needs it (otherwise it drops the row with a warning):
    an optional system turn first, then user/assistant alternating, ending with a user turn. Earlier assistant
    turns lose their reasoning, as in build-sft: Ring's format keeps reasoning on the last turn only."""
    body = turns[1:] if turns and turns[0]["role"] == "system" else turns
    if not body:
        raise RowRejected(MISSING_FIELD, f"{where}: no user turn before the responses")
    for index, turn in enumerate(body):
        expected = "user" if index % 2 == 0 else "assistant"
        if turn["role"] != expected:
            raise RowRejected(
                MALFORMED_ROW,
                f"{where}: turn {index + 1} is {turn['role']!r} where {expected!r} belongs "
                "(the prompt must alternate user/assistant after an optional system turn)",
            )
    if body[-1]["role"] != "user":
        raise RowRejected(MALFORMED_ROW, f"{where}: the prompt must end with a user turn")
    checked = turns[: len(turns) - len(body)]
    for turn in body:
        content = drop_reasoning(turn["content"]) if turn["role"] == "assistant" else turn["content"]
        checked.append({"role": turn["role"], "content": content})
    return checked


def _same_conversation(chosen: Turns, rejected: Turns) -> Turns:
    """The conversation both sides continue; one side may leave it out (then the other's counts)."""
    if chosen and rejected and chosen != rejected:
        turn = next(
            (i for i, (a, b) in enumerate(zip(chosen, rejected, strict=False)) if a != b),
            min(len(chosen), len(rejected)),
        )
        raise RowRejected(
            MALFORMED_ROW, f"chosen and rejected continue different conversations (from turn {turn + 1})"
        )
    return chosen or rejected


def _with_system(row: dict[str, Any], turns: Turns) -> Turns:
    system = _optional_str(row, "system")
    if system and not (turns and turns[0]["role"] == "system"):
        return [{"role": "system", "content": system}, *turns]
    return turns


# --- generic prompt / chosen / rejected -----------------------------------------------------------------


def read_pairs(row: dict[str, Any]) -> Pair:
    """`prompt` + `chosen`/`rejected`. When the sides are message lists that carry the conversation, it must
    be the same on both sides, and a `prompt` given as well must be that conversation (or its last user turn)."""
    chosen_before, chosen = _side(row, "chosen")
    rejected_before, rejected = _side(row, "rejected")
    conversation = _same_conversation(chosen_before, rejected_before)
    prompt = row.get("prompt")
    if isinstance(prompt, list):
        prompt_turns = _messages(prompt, "prompt")
        if conversation and prompt_turns != conversation:
            raise RowRejected(MALFORMED_ROW, "prompt differs from the conversation in chosen/rejected")
        conversation = conversation or prompt_turns
    elif prompt is not None and not isinstance(prompt, str):
        raise RowRejected(
            MALFORMED_ROW, f"field 'prompt' should be a string or messages, got {type(prompt).__name__}"
        )
    elif conversation:
        last_user = next((t["content"] for t in reversed(conversation) if t["role"] == "user"), None)
        if prompt is not None and prompt.strip() and prompt.strip() != (last_user or "").strip():
            raise RowRejected(MALFORMED_ROW, "prompt differs from the last user turn of chosen/rejected")
    elif prompt is None:
        raise RowRejected(MISSING_FIELD, "required field 'prompt' is missing")
    else:
        conversation = [_user(prompt)]
    return Pair(
        _checked_prompt(_with_system(row, conversation), "prompt"),
        chosen,
        rejected,
        _score(row, "score_chosen"),
        _score(row, "score_rejected"),
        _raw_id(row),
        row.get("rejected_unfinished") is True,
    )


# --- UltraFeedback-binarized ----------------------------------------------------------------------------


def read_ultrafeedback(row: dict[str, Any]) -> Pair:
    """UltraFeedback-binarized: both sides are full conversations (user prompt, then the response)."""
    for key in ("chosen", "rejected"):
        value = _field(row, key, list)
        if len(value) < 2:
            raise RowRejected(MALFORMED_ROW, f"{key} should hold the prompt and the response")
    pair = read_pairs(row)
    pair.raw_id = _optional_str(row, "prompt_id") or pair.raw_id
    return pair


# --- Anthropic HH-RLHF ----------------------------------------------------------------------------------

_HH_TURN = re.compile(r"(?:^|\n\n)(Human|Assistant):[ \t]?")
_HH_ROLES = {"Human": "user", "Assistant": "assistant"}


def _hh_turns(text: str, key: str) -> Turns:
    parts = _HH_TURN.split(text)
    if parts[0].strip():
        raise RowRejected(MALFORMED_ROW, f"{key}: text before the first 'Human:' turn")
    turns = [
        {"role": _HH_ROLES[role], "content": content.strip()}
        for role, content in zip(parts[1::2], parts[2::2], strict=True)
    ]
    if not turns:
        raise RowRejected(MALFORMED_ROW, f"{key}: no 'Human:' / 'Assistant:' turns")
    if turns[-1]["role"] != "assistant":
        raise RowRejected(MALFORMED_ROW, f"{key} does not end with an 'Assistant:' turn")
    return turns


def read_hh(row: dict[str, Any]) -> Pair:
    """HH-RLHF: two transcripts that share every turn but the last assistant one."""
    chosen = _hh_turns(_field(row, "chosen"), "chosen")
    rejected = _hh_turns(_field(row, "rejected"), "rejected")
    prompt = _same_conversation(chosen[:-1], rejected[:-1])
    return Pair(
        _checked_prompt(prompt, "transcript"),
        chosen[-1]["content"],
        rejected[-1]["content"],
        raw_id=_raw_id(row),
    )


# --- LLaMA-Factory ranking ------------------------------------------------------------------------------


def _alpaca_prompt(row: dict[str, Any]) -> Turns:
    instruction = _field(row, "instruction")
    extra = row.get("input")
    query = "\n".join(p for p in (instruction, extra if isinstance(extra, str) else "") if p)
    turns: Turns = []
    history = row.get("history") or []
    if not isinstance(history, list):
        raise RowRejected(MALFORMED_ROW, "field 'history' should be a list of [query, response]")
    for i, item in enumerate(history):
        if not (isinstance(item, list) and len(item) == 2 and all(isinstance(x, str) for x in item)):
            raise RowRejected(MALFORMED_ROW, f"history[{i}] should be [query, response]")
        turns += [_user(item[0]), {"role": "assistant", "content": item[1]}]
    return [*turns, _user(query)]


def read_llamafactory(row: dict[str, Any]) -> Pair:
    """LLaMA-Factory ranking data: alpaca (`instruction`) or sharegpt (`conversations` / `messages`)."""
    if "instruction" in row:
        prompt = _alpaca_prompt(row)
    else:
        key = "conversations" if "conversations" in row else "messages"
        prompt = _messages(_field(row, key, list), key)
    _, chosen = _side(row, "chosen")
    _, rejected = _side(row, "rejected")
    return Pair(
        _checked_prompt(_with_system(row, prompt), "prompt"),
        chosen,
        rejected,
        _score(row, "score_chosen"),
        _score(row, "score_rejected"),
        _raw_id(row),
    )


PREF_READERS: dict[str, PairReader] = {
    "ultrafeedback": read_ultrafeedback,
    "hh": read_hh,
    "pairs": read_pairs,
    "llamafactory": read_llamafactory,
}

PREF_ALIASES = {
    "ultrafeedback-binarized": "ultrafeedback",
    "uf": "ultrafeedback",
    "hh-rlhf": "hh",
    "anthropic-hh": "hh",
    "generic": "pairs",
    "prompt-chosen-rejected": "pairs",
    "lf": "llamafactory",
    "llama-factory": "llamafactory",
}

# Not a row layout: eval / GRPO samples that build-pref pairs up itself (data_prep/onpolicy.py).
SAMPLES_FORMAT = "samples"


def resolve_pref_format(name: str) -> str:
    """Canonical reader name for a user-facing name ('auto' and 'samples' stay as they are)."""
    key = name.strip().lower()
    if key in ("auto", SAMPLES_FORMAT) or key in PREF_READERS:
        return key
    if key in PREF_ALIASES:
        return PREF_ALIASES[key]
    known = ", ".join(sorted([*PREF_READERS, *PREF_ALIASES, SAMPLES_FORMAT, "auto"]))
    raise UsageError(f"unknown preference format {name!r}; known formats: {known}")


def detect_pref_format(row: dict[str, Any]) -> str | None:
    """Guess the layout from one row (None when nothing fits)."""
    keys = set(row)
    if not {"chosen", "rejected"} <= keys:
        return "samples" if {"completion", "prompt"} <= keys else None
    chosen = row["chosen"]
    if "instruction" in keys or "conversations" in keys or ("messages" in keys and isinstance(chosen, dict)):
        return "llamafactory"
    if isinstance(chosen, str) and "prompt" not in keys and _HH_TURN.match(chosen):
        return "hh"
    if isinstance(chosen, list) and ({"score_chosen", "prompt_id"} & keys):
        return "ultrafeedback"
    if "prompt" in keys or isinstance(chosen, list):
        return "pairs"
    return None
