"""Built-in RLVR rewards (TRL signature `f(prompts, completions, completion_ids, **columns)`) and loading."""

from ring_trl.grpo.rewards.answer_match import answer_match
from ring_trl.grpo.rewards.code_tests import code_tests
from ring_trl.grpo.rewards.format_reward import think_format
from ring_trl.grpo.rewards.guard import GuardedReward
from ring_trl.grpo.rewards.loading import (
    RewardLoadError,
    RewardSpec,
    bind_reward_options,
    load_reward_function,
)
from ring_trl.grpo.rewards.math_answer import math_answer
from ring_trl.grpo.rewards.numeric_closeness import numeric_closeness
from ring_trl.grpo.rewards.overlong import overlong_penalty

__all__ = [
    "GuardedReward",
    "RewardLoadError",
    "RewardSpec",
    "answer_match",
    "bind_reward_options",
    "code_tests",
    "load_reward_function",
    "math_answer",
    "numeric_closeness",
    "overlong_penalty",
    "think_format",
]
