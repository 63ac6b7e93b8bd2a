"""One preference row -> one LLaMA-Factory ranking record, with the pair filters (build-pref).

The record is LLaMA-Factory's sharegpt ranking layout: `prompt` (the messages before the responses, read
through the `messages` column), `chosen` and `rejected` (one assistant message each). Thinking policy for the
responses (`--thinking`):

- `keep` (default): a response keeps its `<think>` block, rewritten to Ring's layout
  `<think>\\n{reasoning}\\n</think>\\n\\n{answer}`; a response without one stays an answer alone;
- `strip`: only the answers are kept (the reasoning of both sides is dropped);
- `require`: both sides must have a non-empty reasoning block, or the pair is rejected (missing_reasoning).

A block must be well formed in every mode (one block, closed, nothing before it), with the same reasons as
build-sft; the one exception is a rejected side marked `rejected_unfinished` (an on-policy generation that ran
out of tokens inside its reasoning, data_prep/onpolicy.py), kept as `<think>\n{text}` under keep / require. Pair filters: empty sides, identical sides (same normalised words), a score margin below
`min_score_margin` (pairs that carry scores); length, duplicates and decontamination are the shared filters of data_prep/rows.py.
"""

from __future__ import annotations

from typing import Any

from data_prep import errors as E
from data_prep.errors import RowRejected
from data_prep.outputs import sharegpt_info_entry
from data_prep.pref_formats import PREF_READERS, Pair
from data_prep.reasoning import THINK_CLOSE, THINK_OPEN, canonical_content, split_optional_think
from data_prep.textkeys import is_blank, normalize_words
from data_prep.tokens import render_for_length

THINKING_MODES = ("keep", "strip", "require")
DEDUP_KEYS = ("pair", "prompt")


def shape_response(text: str, side: str, thinking: str, unfinished: bool = False) -> str:
    """The response as it will be trained, under the thinking policy (see the module docstring)."""
    if is_blank(text):
        raise RowRejected(E.EMPTY_RESPONSE, f"{side} is empty")
    if unfinished:
        return _unfinished_response(text, side, thinking)
    try:
        reasoning, answer = split_optional_think(text)
    except RowRejected as rejection:
        raise RowRejected(rejection.reason, f"{side}: {rejection.detail}") from None
    has_reasoning = reasoning is not None and not is_blank(reasoning)
    if thinking == "require" and not has_reasoning:
        raise RowRejected(E.MISSING_REASONING, f"{side} has no reasoning block (--thinking require)")
    if is_blank(answer):
        reason = E.EMPTY_ANSWER if has_reasoning else E.EMPTY_RESPONSE
        raise RowRejected(
            reason, f"{side} has nothing after its reasoning block" if has_reasoning else f"{side} is empty"
        )
    if thinking == "strip" or not has_reasoning:
        return answer
    return canonical_content(reasoning, answer)


def _unfinished_response(text: str, side: str, thinking: str) -> str:
    """A generation cut off inside its reasoning (on-policy rejected sides): `<think>\n` + what was written."""
    body = text.lstrip()
    if not body.startswith(THINK_OPEN) or THINK_OPEN in body[len(THINK_OPEN) :] or THINK_CLOSE in body:
        raise RowRejected(
            E.MALFORMED_ROW, f"{side} is marked unfinished but is not one open {THINK_OPEN} block"
        )
    reasoning = body[len(THINK_OPEN) :].strip()
    if is_blank(reasoning):
        raise RowRejected(E.EMPTY_RESPONSE, f"{side} is an unfinished generation with no text")
    if thinking == "strip":
        raise RowRejected(E.EMPTY_ANSWER, f"{side} is unfinished: no answer to keep (--thinking strip)")
    return f"{THINK_OPEN}\n{reasoning}"


def check_margin(pair: Pair, min_score_margin: float | None) -> None:
    """Pairs that carry both scores need a margin of at least `min_score_margin` (a pair without scores, such
    as HH-RLHF's, has no margin to check and passes: keep such sources out of a margin-filtered build if
    that matters)."""
    if min_score_margin is None or pair.score_chosen is None or pair.score_rejected is None:
        return
    margin = pair.score_chosen - pair.score_rejected
    if margin < min_score_margin:
        raise RowRejected(
            E.LOW_SCORE_MARGIN,
            f"score_chosen {pair.score_chosen:g} - score_rejected {pair.score_rejected:g} = {margin:g} "
            f"< min_score_margin {min_score_margin:g}",
        )


def pair_record(
    fmt: str, row: dict[str, Any], thinking: str, min_score_margin: float | None, dedup_on: str
) -> tuple[dict[str, Any], tuple[str, str], str, str, str | None]:
    """(record without id/source, the two conversations to measure, dedup key text, chosen answer, raw id)."""
    pair = PREF_READERS[fmt](row)
    chosen = shape_response(pair.chosen, "chosen", thinking)
    rejected = shape_response(pair.rejected, "rejected", thinking, unfinished=pair.rejected_unfinished)
    if normalize_words(chosen) == normalize_words(rejected):
        raise RowRejected(E.IDENTICAL_PAIR, "chosen and rejected have the same text")
    check_margin(pair, min_score_margin)
    record: dict[str, Any] = {
        "prompt": pair.prompt,
        "chosen": {"role": "assistant", "content": chosen},
        "rejected": {"role": "assistant", "content": rejected},
    }
    if pair.score_chosen is not None:
        record["score_chosen"] = pair.score_chosen
    if pair.score_rejected is not None:
        record["score_rejected"] = pair.score_rejected
    measure = tuple(
        render_for_length([*pair.prompt, {"role": "assistant", "content": side}])
        for side in (chosen, rejected)
    )
    prompt_text = "\n".join(m["content"] for m in pair.prompt if m["role"] == "user")
    key_text = prompt_text if dedup_on == "prompt" else f"{prompt_text}\n{chosen}\n{rejected}"
    return record, measure, key_text, chosen.rsplit("</think>", 1)[-1], pair.raw_id


def ranking_info_entry(filename: str) -> dict[str, Any]:
    """The dataset_info.json entry that makes LLaMA-Factory read the file as pairs (`ranking: true`)."""
    columns = {"messages": "prompt", "chosen": "chosen", "rejected": "rejected"}
    return sharegpt_info_entry(filename, columns, ranking=True)
