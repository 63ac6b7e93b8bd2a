"""Split streamed model text into reasoning and answer at the `<think>` / `</think>` tags.

Tags can arrive cut across two streamed pieces, so the end of the buffer that could still become a tag is held
back until the next piece decides it. Ring's hub format opens the reasoning block in the generation prompt
(`<role>ASSISTANT</role><think>\n`); the Ring V2 format lets the model write `\n<think>\n` itself: both work.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
Kind = Literal["thinking", "answer"]


def prompt_opens_thinking(prompt: str) -> bool:
    """True when the rendered prompt ends inside an unclosed reasoning block (the model continues thinking)."""
    return prompt.rfind(THINK_OPEN) > prompt.rfind(THINK_CLOSE)


def _held_back(text: str, tag: str) -> int:
    """Length of the longest end of `text` that is the start of `tag` (it may complete in the next piece)."""
    for length in range(min(len(tag) - 1, len(text)), 0, -1):
        if tag.startswith(text[-length:]):
            return length
    return 0


@dataclass
class ThinkingSplitter:
    """Feed streamed text; get (kind, text) pieces to show, and the whole reasoning / answer at the end."""

    thinking: bool
    _pending: str = ""
    _segment_start: bool = True
    _parts: dict[str, list[str]] = field(default_factory=lambda: {"thinking": [], "answer": []})

    @property
    def kind(self) -> Kind:
        return "thinking" if self.thinking else "answer"

    def feed(self, text: str) -> list[tuple[Kind, str]]:
        pieces: list[tuple[Kind, str]] = []
        self._pending += text
        while True:
            tag = THINK_CLOSE if self.thinking else THINK_OPEN
            index = self._pending.find(tag)
            if index < 0:
                keep = _held_back(self._pending, tag)
                self._emit(pieces, self._pending[: len(self._pending) - keep])
                self._pending = self._pending[len(self._pending) - keep :]
                return pieces
            self._emit(pieces, self._pending[:index])
            self._pending = self._pending[index + len(tag) :]
            self.thinking = not self.thinking
            self._segment_start = True

    def finish(self) -> list[tuple[Kind, str]]:
        """Whatever was held back: the stream ended without completing a tag."""
        pieces: list[tuple[Kind, str]] = []
        self._emit(pieces, self._pending)
        self._pending = ""
        return pieces

    def _emit(self, pieces: list[tuple[Kind, str]], text: str) -> None:
        if self._segment_start:
            text = text.lstrip("\n")  # the newlines the formats put right after a tag
        if not text:
            return
        self._segment_start = False
        self._parts[self.kind].append(text)
        pieces.append((self.kind, text))

    @property
    def reasoning(self) -> str:
        return "".join(self._parts["thinking"]).strip("\n")

    @property
    def answer(self) -> str:
        return "".join(self._parts["answer"]).strip()


def assistant_content(reasoning: str, answer: str) -> str:
    """The assistant turn as Ring templates expect it in the history (they decide whether to keep the reasoning)."""
    if not reasoning:
        return answer
    return f"{THINK_OPEN}\n{reasoning}\n{THINK_CLOSE}\n\n{answer}"
