"""LLaMA-Factory templates that reproduce the Ring chat templates token for token.

`ring_mini_2_0` (the hub format) needs no code: LLaMA-Factory's built-in `bailing` template renders the same text
(`<role>SYSTEM</role>`, `<role>HUMAN</role>…<role>ASSISTANT</role>`, content verbatim, no end-of-turn marker) and its
`efficient_eos` trains the eos token after every answer without putting it into the history, which is exactly how
the hub format ends a turn. `ring_v2_sft` (the Ling/Ring 2.0 SFT format) has no built-in equivalent: `bailing_v2`
drops the thinking switch when a row has its own system prompt, keeps reasoning in earlier turns, misses the newline
before `<think>` and appends an extra eos. `RingV2SftTemplate` below follows ring_trl/chat_templates/ring_v2_sft.jinja.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

# Our chat-format names (ring_trl/chat_templates/<name>.jinja) -> the `template:` value a recipe must use.
CHAT_FORMAT_TO_LF_TEMPLATE: dict[str, str] = {"ring_mini_2_0": "bailing", "ring_v2_sft": "ring_v2_sft"}

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
ROLE_END = "<|role_end|>"


def split_reasoning(content: str) -> tuple[str, str]:
    """Split assistant content into (reasoning, answer) the way the Ring V2 jinja template does."""
    if THINK_CLOSE not in content:
        return "", content
    reasoning = content.split(THINK_CLOSE)[0].rstrip("\n").split(THINK_OPEN)[-1].lstrip("\n")
    answer = content.split(THINK_CLOSE)[-1].lstrip("\n")
    return reasoning, answer


def render_v2_assistant(content: str, keep_reasoning: bool) -> str:
    """The assistant turn body after `<role>ASSISTANT</role>`, without the closing `<|role_end|>`."""
    reasoning, answer = split_reasoning(content)
    if keep_reasoning and reasoning:
        return f"\n{THINK_OPEN}\n{reasoning.strip(chr(10))}\n{THINK_CLOSE}\n\n{answer.lstrip(chr(10))}"
    return answer


def v2_system_turn(system: str, thinking: bool = True) -> str:
    """The system turn every V2 conversation starts with; the thinking switch is always its last line."""
    prefix = f"{system}\n" if system else ""
    return f"<role>SYSTEM</role>{prefix}detailed thinking {'on' if thinking else 'off'}{ROLE_END}"


def _build_v2_template_class() -> type:
    """Create the Template subclass lazily so importing this module never imports LLaMA-Factory."""
    from llamafactory.data.data_utils import Role
    from llamafactory.data.template import Template

    @dataclass
    class RingV2SftTemplate(Template):
        """Ling/Ring 2.0 SFT format with Long-CoT: thinking switch on, reasoning kept only after the last query.

        Training target of each assistant turn: its rendered body plus `<|role_end|>` (the generation stop token);
        nothing else is appended (no eos: efficient_eos is off and the assistant slots carry no eos).
        """

        def _encode(
            self,
            tokenizer: PreTrainedTokenizerBase,
            messages: list[dict[str, str]],
            system: str | None,
            tools: str | None,
        ) -> list[list[int]]:
            if tools:
                raise ValueError(
                    "ring_v2_sft template: tool definitions are not supported by this kit's LLaMA-Factory template; "
                    "drop the `tools` column or train tool use with the chat template directly."
                )
            last_query = max((i for i, m in enumerate(messages) if m["role"] == Role.USER.value), default=-1)
            encoded: list[list[int]] = []
            for index, message in enumerate(messages):
                text = v2_system_turn(system or self.default_system) if index == 0 else ""
                role, content = message["role"], message["content"]
                if role == Role.USER.value:
                    text += f"<role>HUMAN</role>{content}{ROLE_END}<role>ASSISTANT</role>"
                elif role == Role.ASSISTANT.value:
                    text += render_v2_assistant(content, keep_reasoning=index > last_query) + ROLE_END
                elif role == Role.OBSERVATION.value:
                    text += (
                        f"<role>OBSERVATION</role>\n<tool_response>\n{content}\n</tool_response>{ROLE_END}"
                        "<role>ASSISTANT</role>"
                    )
                else:
                    raise ValueError(f"ring_v2_sft template: unsupported role {role!r} in message {index}")
                encoded.append(tokenizer.encode(text, add_special_tokens=False) if text else [])
            return encoded

    return RingV2SftTemplate


def register_ring_templates() -> None:
    """Add `ring_v2_sft` to LLaMA-Factory's template registry (idempotent; safe to call from every rank)."""
    from llamafactory.data import template as lf_template
    from llamafactory.data.formatter import EmptyFormatter, StringFormatter

    if "ring_v2_sft" in lf_template.TEMPLATES:
        return
    lf_template.register_template(
        name="ring_v2_sft",
        # Slots only matter for LLaMA-Factory's chat/export paths (they build a jinja template from them);
        # training goes through RingV2SftTemplate._encode above.
        format_user=StringFormatter(
            slots=[f"<role>HUMAN</role>{{{{content}}}}{ROLE_END}<role>ASSISTANT</role>"]
        ),
        format_assistant=StringFormatter(slots=[f"{{{{content}}}}{ROLE_END}"]),
        format_system=StringFormatter(slots=[f"<role>SYSTEM</role>{{{{content}}}}{ROLE_END}"]),
        format_prefix=EmptyFormatter(),
        stop_words=[ROLE_END],
        efficient_eos=False,
        replace_eos=False,
        template_class=_build_v2_template_class(),
    )
