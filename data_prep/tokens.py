"""Token lengths with the target model's fast tokenizer, measured on the text LLaMA-Factory will train on."""

from __future__ import annotations

from pathlib import Path

from data_prep.errors import UsageError

DEFAULT_TOKENIZER = Path("models/ring-tiny")

_ROLE_TAGS = {"system": "SYSTEM", "user": "HUMAN", "assistant": "ASSISTANT"}


def render_for_length(messages: list[dict[str, str]]) -> str:
    """The conversation in Ring's SFT layout (bailing_v2): close enough to count tokens the way training will."""
    parts = []
    if not messages or messages[0]["role"] != "system":
        parts.append("<role>SYSTEM</role>detailed thinking on<|role_end|>")
    for message in messages:
        parts.append(
            f"<role>{_ROLE_TAGS.get(message['role'], 'HUMAN')}</role>{message['content']}<|role_end|>"
        )
    return "".join(parts)


def resolve_tokenizer_path(path: str | None) -> Path:
    """The explicit path, else models/ring-tiny; a clear error when neither exists."""
    candidate = Path(path) if path else DEFAULT_TOKENIZER
    if not candidate.exists():
        hint = "" if path else " (the default; build it with `make tiny-model`, or pass --tokenizer PATH)"
        raise UsageError(f"tokenizer folder {candidate} does not exist{hint}")
    return candidate


# Pre-tokenizers that drop text (whitespace splitters): with them a long text can be few tokens.
_DROPPING_PRE_TOKENIZERS = {"Whitespace", "WhitespaceSplit", "BertPreTokenizer", "CharDelimiterSplit"}
_NORMALIZE_CHUNK_CHARS = 1 << 16
_CHUNK_SLACK_BYTES = 16  # a composition cut by a chunk boundary can shrink the normalised text this much


def _components(node: object) -> list[dict]:
    """Every component dict of a tokenizer.json pre_tokenizer tree (Sequence nodes included)."""
    if not isinstance(node, dict):
        return []
    found = [node]
    for child in node.get("pretokenizers") or []:
        found += _components(child)
    return found


def _max_token_bytes(tokenizer) -> int | None:  # type: ignore[no-untyped-def]
    """Most bytes of (normalised) text one token can stand for, or None when no such bound holds.

    It holds for byte-level BPE (Ring's kind: every byte of the text is part of some token, none dropped, no
    unknown token that swallows a span): the UTF-8 length of the longest vocabulary entry bounds it (an
    over-estimate for byte-level and byte-fallback entries, which is safe)."""
    import json

    spec = json.loads(tokenizer.to_str())
    model = spec.get("model") or {}
    parts = _components(spec.get("pre_tokenizer"))
    byte_level = any(p.get("type") == "ByteLevel" for p in parts) or bool(model.get("byte_fallback"))
    drops = any(
        p.get("type") in _DROPPING_PRE_TOKENIZERS
        or (p.get("type") == "Split" and str(p.get("behavior")).lower() == "removed")
        for p in parts
    )
    if model.get("type") != "BPE" or not byte_level or drops:
        return None
    vocab = tokenizer.get_vocab(with_added_tokens=True)
    return max((len(token.encode("utf-8")) for token in vocab), default=0) or None


class TokenCounter:
    """Batch token counting with the Rust `tokenizers` backend (no Python per-token work)."""

    def __init__(self, path: str | Path) -> None:
        from tokenizers import Tokenizer

        path = Path(path)
        file = path / "tokenizer.json" if path.is_dir() else path
        if file.is_file():
            self._tokenizer = Tokenizer.from_file(str(file))
        else:  # a slow-only tokenizer folder: let transformers convert it to a fast one
            from transformers import AutoTokenizer

            fast = AutoTokenizer.from_pretrained(str(path), use_fast=True)
            if not getattr(fast, "is_fast", False):
                raise UsageError(f"{path}: no fast tokenizer available (tokenizer.json missing)")
            self._tokenizer = fast.backend_tokenizer
        self._tokenizer.no_truncation()
        self._tokenizer.no_padding()
        self.max_token_bytes = _max_token_bytes(self._tokenizer)
        self._normalizer = self._tokenizer.normalizer

    def count(self, texts: list[str]) -> list[int]:
        if not texts:
            return []
        # encode_batch_fast (tokenizers >= 0.20) skips offset tracking, ~1.5x faster; counts are identical
        encode = getattr(self._tokenizer, "encode_batch_fast", self._tokenizer.encode_batch)
        return [len(e) for e in encode(texts, add_special_tokens=False)]

    def min_tokens_if_over(self, text: str, limit: int) -> int | None:
        """A lower bound on the token count when it alone proves the text longer than `limit` tokens, else
        None. Costs O(limit) at most, never tokenizes: a 50 MB row is dropped without its GBs of encoding."""
        per_token = self.max_token_bytes
        if per_token is None or limit <= 0:
            return None
        budget = limit * per_token  # bytes the text may have and still fit
        if 4 * len(text) <= budget:  # cannot prove anything (UTF-8 is at most 4 bytes per character)
            return None
        if self._normalizer is None:
            size = len(text) if len(text) > budget else len(text.encode("utf-8"))
        else:  # normalising can shrink the text: measure its normalised form, chunk by chunk, up to the budget
            size = 0
            for start in range(0, len(text), _NORMALIZE_CHUNK_CHARS):
                chunk = self._normalizer.normalize_str(text[start : start + _NORMALIZE_CHUNK_CHARS])
                size += max(0, len(chunk.encode("utf-8")) - _CHUNK_SLACK_BYTES)
                if size > budget:
                    break
        bound = -(-size // per_token)
        return bound if bound > limit else None
