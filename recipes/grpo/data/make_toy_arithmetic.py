"""Regenerate toy_arithmetic.jsonl: small addition/subtraction/multiplication problems in the RLVR contract.

    python recipes/grpo/data/make_toy_arithmetic.py [--rows 64] [--seed 0]

Deterministic for a given seed, so the shipped file can always be rebuilt byte for byte.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
from pathlib import Path

OPERATIONS = (("+", lambda a, b: a + b), ("-", lambda a, b: a - b), ("*", lambda a, b: a * b))


def make_rows(count: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for index in range(count):
        symbol, apply = OPERATIONS[rng.randrange(len(OPERATIONS))]
        a, b = rng.randint(0, 20), rng.randint(0, 20)
        question = f"What is {a} {symbol} {b}? Put the final answer after </think>."
        rows.append(
            {
                "id": f"toy-arith-{index:04d}",
                "source": "toy_arithmetic",
                "prompt": [{"role": "user", "content": question}],
                "answer": str(apply(a, b)),
                "task": "math",
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=Path(__file__).with_name("toy_arithmetic.jsonl"))
    args = parser.parse_args()
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in make_rows(args.rows, args.seed))
    handle, temp_name = tempfile.mkstemp(dir=args.output.parent, suffix=".tmp")
    with os.fdopen(handle, "w", encoding="utf-8") as out:
        out.write(text)
    os.replace(temp_name, args.output)
    print(f"wrote {args.rows} rows to {args.output}")


if __name__ == "__main__":
    main()
