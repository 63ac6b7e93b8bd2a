"""`python -m data_prep` entry point (also the `ring-data` command)."""

from __future__ import annotations

import sys

from data_prep.cli import main as cli_main
from ring_trl.runtime import use_offline_defaults


def main(argv: list[str] | None = None) -> int:
    use_offline_defaults()  # tokenizers and datasets are read from local folders only
    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
