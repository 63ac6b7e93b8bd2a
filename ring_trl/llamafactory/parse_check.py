"""Parse recipes with LLaMA-Factory's own argument parser, without loading any model.

`python -m ring_trl.llamafactory.parse_check recipes/*.yaml` prints one JSON line per recipe
(`{"recipe", "ok", "error"}`) and exits 1 if any failed. Catches unknown or misspelt keys (LLaMA-Factory's
HfArgumentParser refuses extra keys) and LLaMA-Factory's own consistency checks. Run it in a process of its own:
it fakes a one-process torch.distributed launch (DeepSpeed recipes refuse to parse otherwise) and, on a machine
without CUDA, adds `use_cpu: true` to bf16 recipes (transformers refuses bf16 on CPU otherwise).
"""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

from ring_trl.llamafactory.preflight import load_recipe


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fake_single_process_launch() -> None:
    """The environment torchrun would give a world of one process."""
    for key, value in {
        "FORCE_TORCHRUN": "1",
        "RANK": "0",
        "LOCAL_RANK": "0",
        "WORLD_SIZE": "1",
        "LOCAL_WORLD_SIZE": "1",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(_free_port()),
    }.items():
        os.environ.setdefault(key, value)


def parse_recipe(path: str | Path, overrides: list[str] | None = None) -> None:
    """Raise what LLaMA-Factory raises for this recipe (ValueError for unknown keys and bad combinations)."""
    import torch
    from llamafactory.hparams import get_infer_args, get_train_args

    args = load_recipe(path, overrides).args
    if not torch.cuda.is_available() and (args.get("bf16") or args.get("fp16")):
        args["use_cpu"] = True
    if "export_dir" in args:
        get_infer_args(args)
    else:
        get_train_args(args)


def main(argv: list[str] | None = None) -> int:
    paths = sys.argv[1:] if argv is None else argv
    if not paths:
        print(__doc__)
        return 2
    fake_single_process_launch()
    failed = 0
    for path in paths:
        try:
            parse_recipe(path)
            result = {"recipe": str(path), "ok": True, "error": None}
        except (ValueError, OSError, TypeError) as error:
            failed += 1
            result = {"recipe": str(path), "ok": False, "error": f"{type(error).__name__}: {error}"}
        print(json.dumps(result), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
