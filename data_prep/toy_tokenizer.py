"""A small throwaway BPE tokenizer for tests and benchmarks when no model tokenizer is at hand."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path


def build_toy_tokenizer(out_dir: str | Path, texts: Iterable[str], vocab_size: int = 2000) -> Path:
    """Train a byte-level BPE on `texts` and save `tokenizer.json` in `out_dir` (returned)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = Tokenizer(models.BPE(unk_token=None))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    special = ["<|endoftext|>", "<role>", "</role>", "<|role_end|>", "<think>", "</think>"]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    tokenizer.save(str(out / "tokenizer.json"))
    return out
