"""Write my_task.jsonl (word reversal prompts in the RLVR contract). Deterministic: same words, same file."""

from __future__ import annotations

import json
from pathlib import Path

WORDS = "apple river stone cloud lemon tiger paper glass music orbit piano candle forest silver planet garden"


def main() -> None:
    rows = [
        {
            "id": f"reverse-{i:03d}",
            "source": "my_task",
            "prompt": [
                {"role": "system", "content": "Answer with the word only after your reasoning."},
                {"role": "user", "content": f"Reverse the letters of the word '{word}'."},
            ],
            "answer": word[::-1],
        }
        for i, word in enumerate(WORDS.split())
    ]
    out = Path(__file__).with_name("my_task.jsonl")
    tmp = out.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    tmp.replace(out)
    print(f"wrote {len(rows)} rows to {out}")


if __name__ == "__main__":
    main()
