"""Small offline evaluation sets, one per answer kind, generated from a seed (shipped under data/eval/).

    python -m ring_trl.eval.sets --output data/eval --seed 0

Rows use the kit's RLVR layout ({"id", "prompt", "answer", "answer_type"[, "choices"]}), so the same files
work for `python -m ring_trl.eval`, for GRPO (`answer_match` reward) and as examples of each kind.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

BOX = "Put the final answer within \\boxed{}."
LETTER_BOX = "Answer with the letter of the correct option within \\boxed{}."
WORD_BOX = "Answer with one word within \\boxed{}."
YESNO_BOX = "Answer yes or no within \\boxed{}."

DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
OPPOSITES = {"hot": "cold", "up": "down", "early": "late", "full": "empty", "light": "dark", "fast": "slow"}
PLURALS = {"mouse": "mice", "child": "children", "foot": "feet", "tooth": "teeth", "goose": "geese"}
WORDS = ["stone", "river", "planet", "garden", "window", "silver", "candle", "forest"]
COLORS = {("blue", "yellow"): "green", ("red", "yellow"): "orange", ("red", "blue"): "purple"}
Row = dict[str, Any]


def _arithmetic(rng: random.Random, i: int) -> Row:
    a, b = rng.randint(2, 60), rng.randint(2, 60)
    op = rng.choice(["+", "-", "*"])
    value = {"+": a + b, "-": a - b, "*": a * b}[op]
    shown = {"*": "\\times"}.get(op, op)
    return {
        "id": f"arith-{i}",
        "prompt": f"What is ${a} {shown} {b}$? {BOX}",
        "answer": str(value),
        "answer_type": "number",
    }


def _choice(rng: random.Random, i: int) -> Row:
    if i % 2 == 0:
        numbers = rng.sample(range(10, 100), 4)
        question, right = "Which of these numbers is the largest?", str(max(numbers))
        options = [str(n) for n in numbers]
    else:
        a, b = rng.randint(3, 12), rng.randint(3, 12)
        right = str(a * b)
        wrong = {str(a * b + d) for d in (-a, a, b - 1 if b > 1 else 2)} - {right}
        options = [right, *sorted(wrong)[:3]]
        rng.shuffle(options)
        question = f"What is {a} times {b}?"
    letters = "ABCD"
    block = "\n".join(f"{letters[k]}) {text}" for k, text in enumerate(options))
    return {
        "id": f"choice-{i}",
        "prompt": f"{question}\n\n{block}\n\n{LETTER_BOX}",
        "answer": letters[options.index(right)],
        "answer_type": "choice",
        "choices": options,
    }


def _is_prime(n: int) -> bool:
    return n > 1 and all(n % d for d in range(2, int(n**0.5) + 1))


def _yesno(rng: random.Random, i: int) -> Row:
    kind = i % 3
    n = rng.randint(2, 99)
    if kind == 0:
        question, yes = f"Is {n} a prime number?", _is_prime(n)
    elif kind == 1:
        question, yes = f"Is {n} an even number?", n % 2 == 0
    else:
        m = rng.randint(2, 99)
        question, yes = f"Is {n} greater than {m}?", n > m
    return {
        "id": f"yesno-{i}",
        "prompt": f"{question} {YESNO_BOX}",
        "answer": "yes" if yes else "no",
        "answer_type": "yesno",
    }


def _short_text(rng: random.Random, i: int) -> Row:
    kind = i % 5
    if kind == 0:
        day = rng.randrange(7)
        question, answer = f"Which day of the week comes after {DAYS[day]}?", DAYS[(day + 1) % 7]
    elif kind == 1:
        word = rng.choice(WORDS)
        question, answer = f"Write the word '{word}' backwards.", word[::-1]
    elif kind == 2:
        word, answer = rng.choice(sorted(OPPOSITES.items()))
        question = f"What is the opposite of '{word}'?"
    elif kind == 3:
        word, answer = rng.choice(sorted(PLURALS.items()))
        question = f"What is the plural of '{word}'?"
    else:
        (first, second), answer = rng.choice(sorted(COLORS.items()))
        question = f"Which colour do you get by mixing {first} and {second} paint?"
    return {"id": f"text-{i}", "prompt": f"{question} {WORD_BOX}", "answer": answer, "answer_type": "text"}


SETS: dict[str, tuple[Callable[[random.Random, int], Row], int]] = {
    "arithmetic": (_arithmetic, 40),
    "choice": (_choice, 20),
    "yesno": (_yesno, 20),
    "short_text": (_short_text, 20),
}
MIXED_PER_KIND = 5


def generate(seed: int = 0) -> dict[str, list[Row]]:
    """{file stem: rows}; every set has its own generator stream, so adding a set changes no other."""
    sets = {}
    for offset, (name, (make, count)) in enumerate(SETS.items()):
        rng = random.Random(seed * 1000 + offset)
        sets[name] = [make(rng, i) for i in range(count)]
    sets["mixed"] = [row for name in SETS for row in sets[name][:MIXED_PER_KIND]]
    return sets


def _write_jsonl(path: Path, rows: list[Row]) -> None:
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        os.chmod(temp, 0o644)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ring_trl.eval.sets", description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="data/eval", help="folder for <set>.jsonl (default data/eval)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    for name, rows in generate(args.seed).items():
        _write_jsonl(out / f"{name}.jsonl", rows)
        print(f"{out / name}.jsonl: {len(rows)} rows")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
