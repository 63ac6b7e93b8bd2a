"""Show a streamed reply: the reasoning labelled and dimmed, the answer labelled and plain.

Colour only on a terminal (and never with NO_COLOR set); piped output keeps the labels, so the two parts stay
apart in logs and tests too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TextIO

from ring_trl.chat.thinking import Kind

DIM = "\x1b[2m"
BOLD = "\x1b[1m"
RESET = "\x1b[0m"
LABELS: dict[str, str] = {"thinking": "[thinking]", "answer": "[answer]"}


def use_color(stream: TextIO) -> bool:
    return stream.isatty() and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"


@dataclass
class ReplyPrinter:
    stream: TextIO
    color: bool = False
    _kind: Kind | None = None

    def piece(self, kind: Kind, text: str) -> None:
        if kind != self._kind:
            if self._kind is not None:
                self.stream.write("\n")
            self._kind = kind
            label = LABELS[kind]
            self.stream.write(
                f"{DIM if kind == 'thinking' else BOLD}{label}{RESET} " if self.color else f"{label} "
            )
        self.stream.write(f"{DIM}{text}{RESET}" if self.color and kind == "thinking" else text)
        self.stream.flush()

    def end(self, note: str = "") -> None:
        """Close the reply (a note such as "(interrupted)" on its own line)."""
        if self._kind is None:
            self.stream.write(f"{LABELS['answer']} (empty reply)")
        self.stream.write(f"\n{note}\n" if note else "\n")
        self.stream.flush()
        self._kind = None
