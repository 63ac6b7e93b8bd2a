"""What every ring-recipes command-line tool shares: offline defaults and one-line usage errors.

No tool in this kit downloads anything: weights and data are local folders (or the local Hugging Face cache).
Setting the offline switches before transformers/datasets are imported turns a missing model into an
immediate error instead of a long network wait. A user who wants the hub can still set them to 0.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable

OFFLINE_DEFAULTS = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


# Third-party messages that say nothing true about a run of this kit, by logger and start of the message. Each is
# explained in README.md ("Messages the kit hides").
# - bitsandbytes on a CPU with AVX512-BF16 tries to fetch an optional NF4 kernel from the Hugging Face hub (package
#   `kernels`) at import and falls back to its built-in CPU kernel; the suggested `pip install kernels` would make it
#   download, which this offline kit never does.
KNOWN_NOISE = {"bitsandbytes.backends.cpu.ops": ("Failed to load CPU gemm_4bit_forward",)}


class _DropKnownNoise(logging.Filter):
    def __init__(self, prefixes: tuple[str, ...]) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefixes)


def hide_known_noise() -> None:
    """Drop exactly the KNOWN_NOISE messages (idempotent; works before or after the library is imported)."""
    for name, prefixes in KNOWN_NOISE.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropKnownNoise) for f in logger.filters):
            logger.addFilter(_DropKnownNoise(prefixes))


class UsageError(Exception):
    """Bad input from the user (a path, a key, a value): printed as one line, exit status 2."""


def use_offline_defaults() -> None:
    """Offline unless the caller's environment already says otherwise (and the known third-party noise hidden).

    Importing `ring_trl` already imports transformers and huggingface_hub (the TRL shims in ring_trl.compat), and
    huggingface_hub reads HF_HUB_OFFLINE once, at import. So besides the environment (which child processes and
    a later `datasets` import read), the flag of an already imported huggingface_hub is switched too.
    """
    for key, value in OFFLINE_DEFAULTS.items():
        os.environ.setdefault(key, value)
    hide_known_noise()
    hub_constants = sys.modules.get("huggingface_hub.constants")
    if hub_constants is not None and _is_true(os.environ["HF_HUB_OFFLINE"]):
        hub_constants.HF_HUB_OFFLINE = True
    datasets_config = sys.modules.get("datasets.config")
    if datasets_config is not None and _is_true(os.environ["HF_DATASETS_OFFLINE"]):
        datasets_config.HF_HUB_OFFLINE = True
        datasets_config.HF_DATASETS_OFFLINE = True


def _is_true(value: str) -> bool:
    return value.strip().upper() in {"1", "ON", "YES", "TRUE"}


def run_cli(main: Callable[[list[str] | None], int], argv: list[str] | None = None, prog: str = "") -> int:
    """Run a CLI entry point: a UsageError becomes `<prog>: error: <message>` and exit 2, Ctrl-C exit 130."""
    try:
        return main(argv)
    except UsageError as error:
        print(f"{prog or 'error'}: error: {error}" if prog else f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog or 'ring-recipes'}: interrupted", file=sys.stderr)
        return 130
