"""On-policy preference pairs from the kit's own samples (`build-pref --from-samples`).

A samples file holds several completions per prompt, one JSON object per line: the evaluator's samples.jsonl
(`python -m ring_trl.eval`: `id`, `prompt`, `completion`, `verdict`, `reference`, `answer_type`, `truncated`)
or any file with `prompt` + `completion` and a score. Each sample gets a score, in this order:

1. `--reward FUNCTION`: the reward function's value (run isolated in a worker process, as in GRPO);
2. the row's `verdict` (correct 1, wrong 0; undecidable is left out) or `correct` (true 1, false 0);
3. the row's `reward` (a number, e.g. the weighted reward of a GRPO rollout: `save_samples: true`);
4. the answer checker (ring_trl.answers) on the row's `reference` (or `answer`), with its `answer_type`.

Samples are grouped by `id` (else by prompt) and, for GRPO rollouts, `step`; unscored ones (undecidable, a failed reward) are left out. A
sample that never closed its reasoning (no `</think>`) is unfinished: it has no answer, so it is never the
chosen side, but it is a fair rejected side (the model ran out of budget instead of answering); it is written
as the generation it was, `<think>\n` + its text, with `rejected_unfinished: true`. A sample cut off after
`</think>` (the evaluator's `truncated` with a closed block) keeps the answer it wrote: the evaluator already
judged it wrong, and a reward function judges the text as it is.
Within a group the best finished sample is paired with the worst sample, the second best with the second
worst, ... while the better one scores strictly higher and no sample is used twice, up to `pairs_per_prompt`
pairs. Each pair becomes a row of the generic `pairs` layout (with `score_chosen` / `score_rejected`), and then
goes through exactly the filters of any other preference row. A group that yields no pair is one `no_pair`
reject saying why. Samples are held in memory until every group is complete (a samples file is the kit's own
output, not a downloaded corpus).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data_prep import errors as E
from data_prep.errors import RowRejected, UsageError
from data_prep.reasoning import THINK_CLOSE, THINK_OPEN
from data_prep.sources import RawRow

_VERDICT_SCORES = {"correct": 1.0, "wrong": 0.0}
_REWARD_BATCH = 64


@dataclass
class _Sample:
    raw: RawRow
    prompt: list[dict[str, str]]
    completion: str
    score: float | None = None
    skipped: str | None = None  # why it cannot be paired (undecidable, unscored, reward failed)
    unfinished: bool = False  # never closed its reasoning: a rejected side only


@dataclass
class _Group:
    key: str
    samples: list[_Sample] = field(default_factory=list)


def _prompt_messages(value: Any) -> list[dict[str, str]] | None:
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if isinstance(value, list) and all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
        for m in value
    ):
        return [{"role": m["role"], "content": m["content"]} for m in value]
    return None


def _sample(raw: RawRow) -> _Sample:
    row = raw.data or {}
    prompt = _prompt_messages(row.get("prompt"))
    if prompt is None:
        raise RowRejected(
            E.MISSING_FIELD if row.get("prompt") is None else E.MALFORMED_ROW,
            "a sample needs 'prompt' (a string or a list of role/content messages)",
        )
    completion = row.get("completion")
    if not isinstance(completion, str):
        raise RowRejected(
            E.MISSING_FIELD if completion is None else E.MALFORMED_ROW,
            "a sample needs 'completion' (a string)",
        )
    return _Sample(raw, prompt, completion, unfinished=THINK_CLOSE not in completion)


def _own_score(row: dict[str, Any]) -> tuple[float | None, str | None]:
    """(score, why there is none) from the row itself: verdict, correct or reward."""
    verdict = row.get("verdict")
    if verdict is not None:
        if verdict in _VERDICT_SCORES:
            return _VERDICT_SCORES[verdict], None
        return None, str(verdict)
    if isinstance(row.get("correct"), bool):
        return float(row["correct"]), None
    reward = row.get("reward")
    if isinstance(reward, (int, float)) and not isinstance(reward, bool):
        return float(reward), None
    return None, "unscored"


def _reference(row: dict[str, Any]) -> str | None:
    for key in ("reference", "answer"):
        if isinstance(row.get(key), (str, int, float)) and not isinstance(row.get(key), bool):
            return str(row[key])
    return None


class SampleScorer:
    """Scores samples with a reward function (isolated, `failure_value` None: a failed sample is unscored),
    else with what the rows say, else with the answer checker."""

    def __init__(self, reward: str | None) -> None:
        self.reward_name = reward
        self._reward = None
        if reward:
            from ring_trl.grpo.rewards import GuardedReward, RewardSpec

            try:
                self._reward = GuardedReward(
                    RewardSpec(reward, str(Path.cwd())),
                    timeout_s=120.0,
                    failure_value=None,
                    isolation="process",
                )
                self._reward.start()
            except (ValueError, RuntimeError) as error:
                raise UsageError(f"--reward {reward}: {error}") from error

    def close(self) -> None:
        if self._reward is not None:
            self._reward.close()

    def score(self, samples: list[_Sample]) -> None:
        todo = [s for s in samples if s.skipped is None]
        if self._reward is not None:
            for start in range(0, len(todo), _REWARD_BATCH):
                self._score_with_reward(todo[start : start + _REWARD_BATCH])
            return
        checker_cases = []
        for sample in todo:
            row = sample.raw.data or {}
            sample.score, why = _own_score(row)
            if why == "unscored" and _reference(row) is not None:
                checker_cases.append(sample)
            elif why is not None:
                sample.skipped = why
        if checker_cases:
            self._score_with_checker(checker_cases)

    def _score_with_reward(self, batch: list[_Sample]) -> None:
        assert self._reward is not None
        rows = [s.raw.data or {} for s in batch]
        columns = set.intersection(*(set(r) for r in rows)) - {"prompt", "completion", "completion_ids"}
        values = self._reward(
            prompts=[s.prompt for s in batch],
            completions=[[{"role": "assistant", "content": s.completion}] for s in batch],
            completion_ids=[[] for _ in batch],
            **{column: [r[column] for r in rows] for column in sorted(columns)},
        )
        for sample, value in zip(batch, values, strict=True):
            sample.score = value
            if value is None:
                sample.skipped = "reward failed"

    def _score_with_checker(self, samples: list[_Sample]) -> None:
        from ring_trl.answers import AnswerCase, check_many

        cases = [
            AnswerCase(
                s.completion,
                _reference(s.raw.data or {}) or "",
                (s.raw.data or {}).get("answer_type"),
                (s.raw.data or {}).get("choices"),
            )
            for s in samples
        ]
        for sample, judgement in zip(samples, check_many(cases), strict=True):
            sample.score = _VERDICT_SCORES.get(judgement.verdict)
            if sample.score is None:
                sample.skipped = judgement.verdict


def _group_key(sample: _Sample) -> str:
    """The prompt's id (else the prompt itself), plus the GRPO step: samples of one policy are compared."""
    row = sample.raw.data or {}
    if isinstance(row.get("id"), (str, int)) and not isinstance(row.get("id"), bool):
        key = str(row["id"])
    else:
        key = json.dumps(sample.prompt, ensure_ascii=False, sort_keys=True)
    step = row.get("step")
    return f"{key}@{step}" if isinstance(step, int) and not isinstance(step, bool) else key


def _pairs_of(group: _Group, pairs_per_prompt: int) -> list[tuple[_Sample, _Sample]] | str:
    """The pairs of one prompt, or why there are none."""
    scored = [s for s in group.samples if s.skipped is None and s.score is not None]
    best_first = sorted((s for s in scored if not s.unfinished), key=lambda s: -s.score)  # stable order
    worst_first = sorted(scored, key=lambda s: (s.score, not s.unfinished))  # unfinished first among equals
    pairs: list[tuple[_Sample, _Sample]] = []
    used: set[int] = set()
    for better in best_first:
        worse = next((w for w in worst_first if id(w) not in used and w is not better), None)
        if (
            len(pairs) == pairs_per_prompt
            or id(better) in used
            or worse is None
            or better.score <= worse.score
        ):
            break
        used.update((id(better), id(worse)))
        pairs.append((better, worse))
    if pairs:
        return pairs
    skipped: dict[str, int] = {}
    for sample in group.samples:
        if sample.skipped is not None:
            skipped[sample.skipped] = skipped.get(sample.skipped, 0) + 1
    scores = sorted({s.score for s in scored}, reverse=True)
    unfinished = sum(s.unfinished for s in scored)
    why = f"{len(group.samples)} samples, {len(scored)} scored"
    if unfinished:
        why += f" ({unfinished} unfinished)"
    if scored:
        why += f", {'all' if len(scores) == 1 else 'scores'} {', '.join(f'{v:g}' for v in scores[:4])}"
    if skipped:
        why += "; left out: " + ", ".join(f"{reason} {count}" for reason, count in sorted(skipped.items()))
    return why + "; no better and worse sample to pair"


def _pair_row(key: str, number: int, better: _Sample, worse: _Sample) -> RawRow:
    rejected = worse.completion
    if worse.unfinished and not rejected.lstrip().startswith(THINK_OPEN):
        rejected = f"{THINK_OPEN}\n{rejected}"  # the generation prompt opened the block
    data = {
        "id": f"{key}#{number}" if number else key,
        "prompt": better.prompt,
        "chosen": better.completion,
        "rejected": rejected,
        "score_chosen": better.score,
        "score_rejected": worse.score,
    }
    if worse.unfinished:
        data["rejected_unfinished"] = True
    return RawRow(better.raw.file, better.raw.position, better.raw.unit, data)


def pair_samples(rows: Iterator[RawRow], pairs_per_prompt: int, reward: str | None) -> Iterator[RawRow]:
    """Raw sample rows in, raw `pairs` rows (or rejects) out; see the module docstring."""
    groups: dict[str, _Group] = {}
    samples: list[_Sample] = []
    for raw in rows:
        if raw.error is not None:  # unreadable line or file: reported by the pipeline as usual
            yield raw
            continue
        try:
            sample = _sample(raw)
        except RowRejected as rejection:
            yield RawRow(raw.file, raw.position, raw.unit, raw.data, rejection)
            continue
        samples.append(sample)
        key = _group_key(sample)
        groups.setdefault(key, _Group(key)).samples.append(sample)
    scorer = SampleScorer(reward)
    try:
        scorer.score(samples)
    finally:
        scorer.close()
    for group in groups.values():
        pairs = _pairs_of(group, pairs_per_prompt)
        if isinstance(pairs, str):
            first = group.samples[0].raw
            yield RawRow(first.file, first.position, first.unit, first.data, RowRejected(E.NO_PAIR, pairs))
            continue
        for number, (better, worse) in enumerate(pairs):
            yield _pair_row(group.key, number, better, worse)
