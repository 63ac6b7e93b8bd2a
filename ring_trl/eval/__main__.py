"""`python -m ring_trl.eval`: see ring_trl/eval/cli.py and docs/eval.md."""

import sys

from ring_trl.eval.cli import cli

sys.exit(cli())
