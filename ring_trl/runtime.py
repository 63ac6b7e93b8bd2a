"""What every ring-recipes command-line tool shares: offline defaults and one-line usage errors.

No tool in this kit downloads anything: weights and data are local folders (or the local Hugging Face cache).
Setting the offline switches before transformers/datasets are imported turns a missing model into an
immediate error instead of a long network wait. A user who wants the hub can still set them to 0.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

OFFLINE_DEFAULTS = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


class UsageError(Exception):
    """Bad input from the user (a path, a key, a value): printed as one line, exit status 2."""


def use_offline_defaults() -> None:
    """Offline unless the caller's environment already says otherwise; call before importing transformers.

    `import ring_trl` already imports huggingface_hub (the TRL shims), whose offline switch is read once at
    import: an already-imported hub or datasets config is updated too, or `python -m ring_trl.<tool>` would
    still try the network."""
    for key, value in OFFLINE_DEFAULTS.items():
        os.environ.setdefault(key, value)
    offline = os.environ["HF_HUB_OFFLINE"].upper() in ("1", "ON", "YES", "TRUE")
    hub_constants = sys.modules.get("huggingface_hub.constants")
    if hub_constants is not None:
        hub_constants.HF_HUB_OFFLINE = offline
    datasets_config = sys.modules.get("datasets.config")
    if datasets_config is not None:
        datasets_offline = os.environ["HF_DATASETS_OFFLINE"].upper() in ("1", "ON", "YES", "TRUE")
        datasets_config.HF_HUB_OFFLINE = datasets_config.HF_DATASETS_OFFLINE = datasets_offline


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
