"""Text normalisation and the hashes dedup is built on (stable across processes)."""

from __future__ import annotations

import hashlib
import re
import unicodedata
import zlib

import numpy as np

_MATH_SYMBOL = re.compile(r"([+\-*/=^<>%()\[\]{}|\\])")
_OTHER_PUNCTUATION = re.compile(r"[^\w\s+\-*/=^<>%()\[\]{}|\\]+|_+", re.UNICODE)


def is_blank(text: str) -> bool:
    """True when the text shows nothing: only whitespace and invisible format characters (zero-width
    space/joiners, word joiner, BOM, soft hyphen...), which `str.strip` keeps."""
    return all(char.isspace() or unicodedata.category(char) == "Cf" for char in text)


def normalize_words(text: str) -> list[str]:
    """NFKC, case-folded, prose punctuation dropped, math symbols kept as their own tokens:
    "What is 2+3?" and "what is 2 + 3" are the same text, "3 - 3" and "3 * 3" are not."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = _OTHER_PUNCTUATION.sub(" ", text)
    return _MATH_SYMBOL.sub(r" \1 ", text).split()


def exact_key(words: list[str]) -> bytes:
    """128-bit digest of the normalised text (stable across processes and runs)."""
    return hashlib.blake2b(" ".join(words).encode("utf-8"), digest_size=16).digest()


def shingle_hashes(words: list[str], n: int) -> list[int]:
    """32-bit hashes of word n-grams (the whole text when shorter than n), for MinHash."""
    if len(words) <= n:
        return [zlib.crc32(" ".join(words).encode("utf-8"))]
    return list({zlib.crc32(" ".join(words[i : i + n]).encode("utf-8")) for i in range(len(words) - n + 1)})


def _identity(value: int) -> int:
    return value


class MinHasher:
    """Bulk MinHash signatures with datasketch, on pre-hashed 32-bit shingles (no per-shingle SHA1)."""

    def __init__(self, num_perm: int, ngram: int, seed: int = 1) -> None:
        from datasketch import MinHash

        self.num_perm = num_perm
        self.ngram = ngram
        self.seed = seed
        self._template = MinHash(num_perm=num_perm, seed=seed, hashfunc=_identity)

    def signatures(self, word_lists: list[list[str]]) -> list[np.ndarray]:
        from datasketch import MinHash

        shingles = [shingle_hashes(words, self.ngram) for words in word_lists]
        return [
            m.hashvalues
            for m in MinHash.bulk(shingles, num_perm=self.num_perm, seed=self.seed, hashfunc=_identity)
        ]

    def from_signature(self, hashvalues: np.ndarray):  # type: ignore[no-untyped-def]
        from datasketch import MinHash

        return MinHash(
            seed=self.seed,
            hashfunc=_identity,
            hashvalues=hashvalues,
            permutations=self._template.permutations,
            scheme=self._template.scheme,
        )
