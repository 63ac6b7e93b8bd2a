"""`python -m ring_trl.chat MODEL [--prompt TEXT ...]`: talk to a Ring model folder (or a LoRA adapter folder).

Without --prompt it is interactive: type a message, the reply streams back with its reasoning shown apart from the
answer; /reset starts a new conversation, /exit or Ctrl-D quits, Ctrl-C stops a reply. Each --prompt is one turn
of a scripted conversation, printed the same way, then the command exits.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from ring_trl.runtime import UsageError, run_cli, use_offline_defaults

if TYPE_CHECKING:
    from ring_trl.chat.display import ReplyPrinter
    from ring_trl.chat.session import ChatSession

PROG = "python -m ring_trl.chat"
EXIT_COMMANDS = ("/exit", "/quit")
RESET_COMMAND = "/reset"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "model", help="model folder (e.g. models/ring-tiny, outputs/demo/sft_merged) or LoRA output"
    )
    parser.add_argument(
        "--prompt", action="append", default=[], help="one user turn (repeatable); no prompt: interactive"
    )
    parser.add_argument("--system", default=None, help="system prompt")
    parser.add_argument("--max-new-tokens", type=int, default=1024)
    parser.add_argument("--temperature", type=float, default=0.6)
    parser.add_argument("--top-p", type=float, default=0.95)
    parser.add_argument("--greedy", action="store_true", help="always take the most likely token")
    parser.add_argument("--seed", type=int, default=None, help="makes sampling repeatable")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    return parser


def _check(options: argparse.Namespace) -> None:
    if options.max_new_tokens < 1:
        raise UsageError(f"--max-new-tokens must be at least 1, got {options.max_new_tokens}")
    if not options.greedy and options.temperature <= 0:
        raise UsageError(f"--temperature must be > 0 (or pass --greedy), got {options.temperature}")
    if not 0 < options.top_p <= 1:
        raise UsageError(f"--top-p must be in (0, 1], got {options.top_p}")


def _device(choice: str) -> str:
    import torch

    if choice == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA GPU is visible on this machine")
    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return choice


def _turn(session: ChatSession, text: str, printer: ReplyPrinter) -> None:
    reply = session.reply(text, printer.piece)
    printer.end("(interrupted; this turn is not kept)" if reply.interrupted else "")


def _interactive(session: ChatSession, printer: ReplyPrinter, model_name: str, device: str) -> None:
    print(f"chatting with {model_name} on {device}; {RESET_COMMAND} starts over, /exit or Ctrl-D quits")
    while True:
        try:
            text = input("you> ").strip()
        except EOFError:
            print()
            return
        if not text:
            continue
        if text in EXIT_COMMANDS:
            return
        if text == RESET_COMMAND:
            session.reset()
            print("(new conversation)")
            continue
        _turn(session, text, printer)


def main(argv: list[str] | None = None) -> int:
    use_offline_defaults()
    options = _parser().parse_args(argv)
    _check(options)
    from ring_trl.chat.display import ReplyPrinter, use_color
    from ring_trl.chat.loading import load_model, load_tokenizer, resolve_source
    from ring_trl.chat.session import ChatSession, GenerationSettings

    source = resolve_source(options.model)
    device = _device(options.device)
    import torch

    if options.seed is not None:
        torch.manual_seed(options.seed)
    tokenizer = load_tokenizer(source)
    model = load_model(source, device)
    settings = GenerationSettings(options.max_new_tokens, options.temperature, options.top_p, options.greedy)
    session = ChatSession(model, tokenizer, settings, system=options.system)
    printer = ReplyPrinter(sys.stdout, color=use_color(sys.stdout))
    if options.prompt:
        for text in options.prompt:
            print(f"you> {text}")
            _turn(session, text, printer)
    else:
        _interactive(session, printer, options.model, device)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main, prog=PROG))
