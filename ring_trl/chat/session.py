"""A multi-turn conversation with a Ring model: the folder's chat template in, streamed and split text out."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ring_trl.chat.thinking import (
    THINK_CLOSE,
    THINK_OPEN,
    Kind,
    ThinkingSplitter,
    assistant_content,
    prompt_opens_thinking,
)

# Ring ends an assistant turn with eos (hub format) or <|role_end|> (V2 format); stop at whichever comes first.
TURN_END_TOKENS = ("<|role_end|>",)


def stream_pieces(
    chunks: Iterable[str],
    splitter: ThinkingSplitter,
    hidden: list[str],
    on_piece: Callable[[Kind, str], None],
) -> None:
    """Pass streamed text through the splitter to on_piece, without the hidden special-token strings."""
    for text in chunks:
        for token in hidden:
            text = text.replace(token, "")
        for kind, piece in splitter.feed(text):
            on_piece(kind, piece)
    for kind, piece in splitter.finish():
        on_piece(kind, piece)


@dataclass
class GenerationSettings:
    """Sampling as the Ring model cards suggest for reasoning (temperature 0.6, top_p 0.95); greedy on request."""

    max_new_tokens: int = 1024
    temperature: float = 0.6
    top_p: float = 0.95
    greedy: bool = False


@dataclass
class Reply:
    reasoning: str
    answer: str
    new_tokens: int
    interrupted: bool = False


@dataclass
class ChatSession:
    model: Any
    tokenizer: Any
    settings: GenerationSettings = field(default_factory=GenerationSettings)
    system: str | None = None
    messages: list[dict[str, str]] = field(default_factory=list)

    def reset(self) -> None:
        self.messages = []

    def _history(self) -> list[dict[str, str]]:
        return ([{"role": "system", "content": self.system}] if self.system else []) + self.messages

    def stop_token_ids(self) -> list[int]:
        ids = self.model.generation_config.eos_token_id
        ids = list(ids) if isinstance(ids, (list, tuple)) else ([ids] if ids is not None else [])
        vocab = self.tokenizer.get_vocab()
        for token in (self.tokenizer.eos_token, *TURN_END_TOKENS):
            if token in vocab and vocab[token] not in ids:
                ids.append(vocab[token])
        return ids

    def _pad_token_id(self) -> int | None:
        pad = self.tokenizer.pad_token_id
        return pad if pad is not None else self.tokenizer.eos_token_id

    def _hidden_text(self) -> list[str]:
        """Special tokens (eos, role markers) are not shown; the reasoning tags are handled by the splitter."""
        return [t for t in self.tokenizer.all_special_tokens if t not in (THINK_OPEN, THINK_CLOSE)]

    def reply(self, user_text: str, on_piece: Callable[[Kind, str], None]) -> Reply:
        """Generate the next assistant turn, calling on_piece as text streams in; keeps the turn in the history.

        Ctrl-C stops the generation; the partial turn is returned (interrupted=True) and not kept.
        """
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        messages = [*self._history(), {"role": "user", "content": user_text}]
        prompt = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        inputs = self.tokenizer(prompt, add_special_tokens=False, return_tensors="pt").to(self.model.device)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=False)
        stop = threading.Event()

        class _StopOnRequest(StoppingCriteria):
            def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
                return torch.full((input_ids.shape[0],), stop.is_set(), dtype=torch.bool)

        sampling = (
            {"do_sample": False}
            if self.settings.greedy
            else {"do_sample": True, "temperature": self.settings.temperature, "top_p": self.settings.top_p}
        )
        generated: dict[str, Any] = {}

        def generate() -> None:
            try:
                with torch.no_grad():
                    generated["ids"] = self.model.generate(
                        **inputs,
                        streamer=streamer,
                        max_new_tokens=self.settings.max_new_tokens,
                        eos_token_id=self.stop_token_ids(),
                        pad_token_id=self._pad_token_id(),
                        stopping_criteria=StoppingCriteriaList([_StopOnRequest()]),
                        **sampling,
                    )
            except BaseException as error:  # re-raised in the caller's thread below
                generated["error"] = error
                streamer.end()

        worker = threading.Thread(target=generate, name="ring-chat-generate", daemon=True)
        splitter = ThinkingSplitter(thinking=prompt_opens_thinking(prompt))
        hidden = self._hidden_text()
        interrupted = False
        worker.start()
        try:
            stream_pieces(streamer, splitter, hidden, on_piece)
        except KeyboardInterrupt:
            interrupted = True
            stop.set()
            for _ in streamer:  # drain until generate() returns
                pass
        worker.join()
        if "error" in generated:
            raise generated["error"]
        new_tokens = (
            int(generated["ids"].shape[1] - inputs["input_ids"].shape[1]) if "ids" in generated else 0
        )
        result = Reply(splitter.reasoning, splitter.answer, new_tokens, interrupted)
        if not interrupted:
            self.messages += [
                {"role": "user", "content": user_text},
                {"role": "assistant", "content": assistant_content(result.reasoning, result.answer)},
            ]
        return result
